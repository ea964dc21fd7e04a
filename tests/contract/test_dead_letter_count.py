"""``DeadLetters.dead_letter_count`` (djtasks/brokers/base.py), on every broker."""

from __future__ import annotations

from tests.contract.test_broker import msg


def test_dead_letter_count_counts_every_letter_and_follows_requeue_and_delete(broker, clock):
    assert broker.dead_letter_count() == 0
    broker.publish([msg(0), msg(1)])
    consumer = broker.consumer("c/0.1", ["default"])
    first, second = consumer.fetch(2, 0)
    consumer.dead_letter(first, "could not decode")
    consumer.dead_letter(second, "unknown task")
    assert broker.dead_letter_count() == len(broker.dead_letters()) == 2
    assert broker.requeue_dead_letter("m0")
    assert broker.delete_dead_letter("m1")
    assert broker.dead_letter_count() == 0
