"""The broker contract's ``in_flight`` (the admin dashboard's column), on every broker."""

from __future__ import annotations

import time

from djtasks.message import Message


def msg(i: int, queue: str, priority: int = 0, eta: float | None = None) -> tuple[Message, bytes]:
    m = Message(id=f"f{i}", task="t", args=[i], kwargs={}, queue=queue, priority=priority,
                eta=eta)
    return m, m.encode()


def test_in_flight_counts_what_consumers_hold_per_queue(broker):
    broker.publish([msg(0, "a"), msg(1, "a", priority=9), msg(2, "a"), msg(3, "b"),
                    msg(4, "b", eta=time.time() + 60)])
    for name, queue, count in (("c/1.1", "a", 2), ("c/2.1", "b", 5)):
        consumer = broker.consumer(name, [queue])
        consumer.renew(30)  # as a worker's executor does before it fetches
        consumer.fetch(count, 0)
    assert broker.in_flight(["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
    assert broker.queue_depths(["a", "b"]) == {"a": 1, "b": 0}


def test_an_acked_or_given_back_message_is_no_longer_in_flight(broker):
    broker.publish([msg(0, "a"), msg(1, "a"), msg(2, "a")])
    consumer = broker.consumer("c/1.1", ["a"])
    consumer.renew(30)
    consumer.fetch(3, 0)
    consumer.ack(["f0"])
    assert broker.in_flight(["a"]) == {"a": 2}
    consumer.requeue(["f1"])
    assert broker.in_flight(["a"]) == {"a": 1}
    consumer.release()
    assert broker.in_flight(["a"]) == {"a": 0}
