"""The ``Purging`` role (djtasks/brokers/base.py), run against every broker."""

from __future__ import annotations

from tests.contract.test_broker import ids, msg


def test_purge_deletes_the_ready_messages_of_one_queue_and_names_them_in_fetch_order(broker):
    broker.publish([msg(0), msg(1, priority=9), msg(2), msg(3, queue="other")])
    assert broker.purge("default") == ["m1", "m0", "m2"]
    assert broker.queue_depths(["default", "other"]) == {"default": 0, "other": 1}
    assert broker.consumer("c/0.1", ["default"]).fetch(10, 0) == []


def test_purge_of_an_empty_or_unknown_queue_gives_nothing(broker):
    broker.publish([msg(0)])
    assert broker.purge("nobody-publishes-here") == []
    assert broker.queue_depths(["default"]) == {"default": 1}


def test_purge_keeps_scheduled_messages_until_their_eta(broker, clock):
    broker.publish([msg(0, eta=clock.t + 60), msg(1)])
    assert broker.purge("default") == ["m1"]
    assert broker.scheduled_count() == 1
    clock.t += 60
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(10, 0)) == ["m0"]


def test_purge_takes_a_scheduled_message_that_has_come_due(broker, clock):
    broker.publish([msg(0, eta=clock.t + 60), msg(1, queue="other", eta=clock.t + 60)])
    clock.t += 61
    assert broker.purge("default") == ["m0"]
    assert broker.consumer("c/0.1", ["default"]).fetch(10, 0) == []
    assert ids(broker.consumer("c/0.2", ["other"]).fetch(10, 0)) == ["m1"]


def test_purge_leaves_fetched_messages_with_their_consumer(broker):
    broker.publish([msg(0), msg(1)])
    consumer = broker.consumer("c/0.1", ["default"])
    assert ids(consumer.fetch(1, 0)) == ["m0"]
    assert broker.purge("default") == ["m1"]
    assert consumer.release().requeued == ["m0"]
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(10, 0)) == ["m0"]
