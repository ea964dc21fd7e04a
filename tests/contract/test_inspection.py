"""The ``Inspection`` role (djtasks/brokers/base.py), run against every broker."""

from __future__ import annotations

from djtasks.brokers.base import Held, Place
from tests.contract.test_broker import msg


def test_locate_finds_a_ready_message_in_the_queues_it_is_given(broker):
    broker.publish([msg(0, queue="a", priority=3), msg(1, queue="a")])
    assert broker.locate("m0", ["a", "b"]) == [Held(Place.READY, "a")]
    assert broker.locate("m0", ["b"]) == []


def test_locate_finds_a_scheduled_message_with_its_eta_on_any_queue(broker, clock):
    broker.publish([msg(0, queue="later", eta=clock.t + 60)])
    assert broker.locate("m0", []) == [Held(Place.SCHEDULED, "later", eta=clock.t + 60)]


def test_a_scheduled_message_that_came_due_is_ready(broker, clock):
    broker.publish([msg(0, eta=clock.t + 60)])
    clock.t += 61
    assert broker.locate("m0", ["default"]) == [Held(Place.READY, "default")]


def test_locate_names_the_consumer_that_fetched_a_message(broker):
    broker.publish([msg(0), msg(1)])
    consumer = broker.consumer("c/0.1", ["default"])
    consumer.renew(30)  # as every executor does before it fetches
    consumer.fetch(1, 0)
    assert broker.locate("m0", ["default"]) == [Held(Place.FETCHED, "default",
                                                     consumer="c/0.1")]
    assert broker.locate("m1", ["default"]) == [Held(Place.READY, "default")]


def test_locate_finds_nothing_of_an_acked_or_unknown_message(broker):
    broker.publish([msg(0)])
    consumer = broker.consumer("c/0.1", ["default"])
    consumer.fetch(1, 0)
    consumer.ack(["m0"])
    assert broker.locate("m0", ["default"]) == []
    assert broker.locate("never-published", ["default"]) == []


def test_locate_lists_both_messages_of_one_id(broker, clock):
    broker.publish([msg(0), msg(0, eta=clock.t + 60)])
    assert broker.locate("m0", ["default"]) == [
        Held(Place.SCHEDULED, "default", eta=clock.t + 60), Held(Place.READY, "default")]


def test_is_revoked_says_whether_a_task_was_revoked(broker):
    broker.revoke(["m0"])
    assert broker.is_revoked("m0")
    assert not broker.is_revoked("m1")
