"""The broker contract (djtasks/brokers/base.py), run against every broker.

Tests that move time set ``broker.clock`` through the ``clock`` fixture.
"""

from __future__ import annotations

import threading
import time

from django.db import connections

from djtasks.brokers import Broker, Delivery, Fate, Reaped, Started, WakeStart
from djtasks.message import Message

DAY = 86400.0


def msg(i: int, queue: str = "default", priority: int = 0,
        eta: float | None = None) -> tuple[Message, bytes]:
    m = Message(id=f"m{i}", task="t", args=[i], kwargs={}, queue=queue, priority=priority,
                eta=eta)
    return m, m.encode()


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.id for d in deliveries]


def started_acks_late(broker: Broker, consumer: str, task_id: str = "m0") -> None:
    """``consumer`` fetches ``task_id`` and starts it with acks_late."""
    c = broker.consumer(consumer, ["default"])
    assert task_id in ids(c.fetch(1, 0))
    assert c.start(task_id, ack=False) is Started.RUN


# -- publish and fetch -------------------------------------------------------

def test_publish_then_fetch_in_fifo_order(broker):
    broker.publish([msg(i) for i in range(5)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(10, 0)) == ["m0", "m1", "m2", "m3", "m4"]


def test_fetch_takes_at_most_count(broker):
    broker.publish([msg(i) for i in range(5)])
    assert len(broker.consumer("c/0.1", ["default"]).fetch(2, 0)) == 2
    assert broker.queue_depths(["default"]) == {"default": 3}


def test_a_delivery_names_its_queue_and_keeps_its_body(broker):
    m, body = msg(0, queue="reports")
    broker.publish([(m, body)])
    [d] = broker.consumer("c/0.1", ["reports"]).fetch(1, 0)
    assert (d.id, d.queue, d.body, d.revoked) == ("m0", "reports", body, False)


def test_higher_priority_first_then_fifo_within_a_priority(broker):
    broker.publish([msg(0, priority=0), msg(1, priority=9), msg(2, priority=5),
                    msg(3, priority=9)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(10, 0)) == ["m1", "m3", "m2", "m0"]


def test_no_queue_starves_another(broker):
    broker.publish([msg(i, queue="a") for i in range(10)])
    broker.publish([msg(100 + i, queue="b") for i in range(10)])
    consumer = broker.consumer("c/0.1", ["a", "b"])
    first_rounds = [consumer.fetch(1, 0)[0].queue for _ in range(4)]
    assert set(first_rounds) == {"a", "b"}


def test_two_frames_with_one_id_never_share_an_in_flight_slot(broker):
    broker.publish([msg(0), msg(0)])
    got = broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    assert ids(got) == ["m0"]
    assert broker.queue_depths(["default"]) == {"default": 1}  # the twin waits its turn


def test_queue_depths_count_only_waiting_messages_and_scheduled_count_the_eta_ones(broker):
    broker.publish([msg(0, queue="a"), msg(1, queue="a"), msg(2, queue="b", priority=5),
                    msg(3, queue="a", eta=time.time() + 60)])
    broker.consumer("c/0.1", ["a"]).fetch(1, 0)
    assert broker.queue_depths(["a", "b", "c"]) == {"a": 1, "b": 1, "c": 0}
    assert broker.scheduled_count() == 1


# -- ack, requeue, defer -----------------------------------------------------

def test_an_acked_message_is_never_delivered_again(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    broker.consumer("c/0.1", ["default"]).ack(["m0"])
    assert broker.consumer("c/0.1", ["default"]).release().requeued == ["m1"]
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(10, 0)) == ["m1"]


def test_requeue_gives_messages_back_to_the_front_in_order(broker):
    broker.publish([msg(i) for i in range(5)])
    broker.consumer("c/0.1", ["default"]).fetch(3, 0)
    broker.consumer("c/0.1", ["default"]).requeue(["m1", "m2"])
    broker.consumer("c/0.1", ["default"]).ack(["m0"])
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(10, 0)) == ["m1", "m2", "m3", "m4"]
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_a_deferred_message_is_delivered_again_at_its_eta(broker, clock):
    broker.publish([msg(0)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).defer("m0", clock.t + 10)
    assert broker.scheduled_count() == 1
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []  # no longer held
    assert broker.consumer("c/0.2", ["default"]).fetch(1, 0) == []
    clock.t += 10
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(1, 0)) == ["m0"]


# -- eta ---------------------------------------------------------------------

def test_an_eta_message_waits_until_due(broker, clock):
    broker.publish([msg(0, eta=clock.t + 30)])
    assert broker.scheduled_count() == 1
    assert broker.queue_depths(["default"]) == {"default": 0}
    assert broker.consumer("c/0.1", ["default"]).fetch(1, 0) == []
    clock.t += 30
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(1, 0)) == ["m0"]
    assert broker.scheduled_count() == 0


def test_a_due_eta_message_is_delivered_once_among_racing_consumers(broker, same_store):
    n = 200
    broker.publish([msg(i, eta=time.time() + 0.2) for i in range(n)])
    time.sleep(0.25)
    seen: list[str] = []
    lock = threading.Lock()

    def consume(name: str) -> None:
        own = same_store().consumer(name, ["default"])
        try:
            while got := own.fetch(7, 0):
                with lock:
                    seen.extend(ids(got))
        finally:
            connections.close_all()  # this thread's own, for a database broker

    threads = [threading.Thread(target=consume, args=(f"c/{i}.1",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(seen) == sorted(f"m{i}" for i in range(n))  # each exactly once


# -- blocking fetch ----------------------------------------------------------

def woken(consumer, same_store, items, plan) -> list[Delivery]:
    """What a waiting fetch of ``consumer`` given ``plan`` returns once
    ``items`` are published from another handle on the same store."""
    other = same_store()
    threading.Timer(0.2, lambda: other.publish(items)).start()
    deadline = time.monotonic() + 6
    got = consumer.fetch(5, 5.0, start=plan)
    while not got and time.monotonic() < deadline:  # a wake may land between fetches
        got = consumer.fetch(5, 5.0, start=plan)
    return got


def test_a_waiting_fetch_starts_its_first_delivery_as_start_would(broker, same_store):
    got = woken(broker.consumer("c/0.1", ["default"]), same_store, [msg(0), msg(1)],
                WakeStart({"t": (True, True, True)}))
    if not broker.consumer("c/0.1", ["default"]).starts_on_wake:
        assert not any(d.started for d in got)  # the plan is a hint the others ignore
        return
    assert ids(got) == ["m0", "m1"] and [d.started for d in got] == [True, False]
    again = broker.consumer("c/0.1", ["default"])
    # As start(ack=True) would: acked, and its running marker names this very message.
    assert again.start("m0", ack=True, token=got[0].token) is Started.RUN
    released = again.release()
    assert (released.running, released.fate, released.requeued) == ("m0", Fate.ACKED, ["m1"])


def test_an_acks_late_start_on_wake_keeps_its_message_in_flight(broker, same_store):
    got = woken(broker.consumer("c/0.1", ["default"]), same_store, [msg(0)],
                WakeStart({"t": (False, True, False)}))
    if not broker.consumer("c/0.1", ["default"]).starts_on_wake:
        return
    assert [d.started for d in got] == [True]
    released = broker.consumer("c/0.1", ["default"]).release()
    assert (released.running, released.fate, released.unsettled) == ("m0", Fate.REQUEUED, [])
    assert broker.queue_depths(["default"]) == {"default": 1}  # it runs again elsewhere


def test_a_waiting_fetch_starts_no_task_its_plan_leaves_out(broker, same_store):
    expiring = Message(id="m1", task="t", args=[], kwargs={}, queue="default",
                       expires=time.time() + 60)
    per_call = Message(id="m2", task="t", args=[], kwargs={}, queue="default",
                       options={"ignore_result": True})
    for i, item in enumerate([msg(0), (expiring, expiring.encode()),
                              (per_call, per_call.encode())]):
        plan = WakeStart({"other": (True, True, True)} if i == 0 else {"t": (True, True, True)})
        consumer = broker.consumer("c/0.1", ["default"])
        got = woken(consumer, same_store, [item], plan)
        assert ids(got) == [item[0].id] and not got[0].started  # the worker checks and starts it
        assert consumer.hold(got[0])
        consumer.ack([item[0].id])


def test_a_blocking_fetch_wakes_when_a_message_arrives(broker, same_store):
    other = same_store()
    timer = threading.Timer(0.2, lambda: other.publish([msg(0)]))
    timer.start()
    started = time.monotonic()
    got = broker.consumer("c/0.1", ["default"]).fetch(1, 5.0)
    waited = time.monotonic() - started
    while not got and time.monotonic() - started < 6:  # a wake may land between fetches
        got = broker.consumer("c/0.1", ["default"]).fetch(1, 5.0)
    assert ids(got) == ["m0"]
    assert waited < 4  # woken by the publish, not by its 5 s timeout


def test_a_blocking_fetch_returns_a_scheduled_message_when_it_comes_due(broker):
    # Timed from before the publish, which a loaded machine may make slow:
    # the message is due 0.3 s after this, however long publishing takes.
    started = time.monotonic()
    broker.publish([msg(0, eta=time.time() + 0.3)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(1, 5.0)) == ["m0"]
    assert 0.25 <= time.monotonic() - started < 4  # when due, not at its 5 s timeout


def test_a_blocking_fetch_returns_empty_after_its_timeout(broker):
    started = time.monotonic()
    assert broker.consumer("c/0.1", ["default"]).fetch(1, 0.3) == []
    assert 0.25 <= time.monotonic() - started < 3.0


# -- start, release and reap -------------------------------------------------

def test_release_gives_back_what_was_fetched_and_reports_the_running_task(broker):
    broker.publish([msg(i) for i in range(3)])
    broker.consumer("c/0.1", ["default"]).fetch(3, 0)
    assert broker.consumer("c/0.1", ["default"]).start("m0", ack=True) is Started.RUN
    released = broker.consumer("c/0.1", ["default"]).release()
    assert (released.running, released.fate) == ("m0", Fate.ACKED)  # at most once
    assert sorted(released.requeued) == ["m1", "m2"]
    assert broker.queue_depths(["default"]) == {"default": 2}


def test_releasing_a_consumer_that_holds_nothing_reports_nothing(broker):
    assert broker.consumer("idle/0.1", ["default"]).release() == Reaped(
        "idle/0.1", None, Fate.NONE, [], [])


def test_start_acks_the_other_ids_it_is_given(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    assert broker.consumer("c/0.1", ["default"]).start("m1", ack=True, acks=["m0"]) is Started.RUN
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_start_and_fetch_starts_one_and_holds_the_next_ones(broker):
    broker.publish([msg(i) for i in range(4)])
    consumer = broker.consumer("c/0.1", ["default"])
    assert ids(consumer.fetch(1, 0)) == ["m0"]
    started, more = consumer.start_and_fetch("m0", 2, ack=True)
    held = ["m1", "m2"] if consumer.fetches_with_start else []
    assert (started, ids(more)) == (Started.RUN, held)
    released = broker.consumer("c/0.1", ["default"]).release()
    assert (released.running, released.fate) == ("m0", Fate.ACKED)
    assert sorted(released.requeued) == held  # held, never lost
    assert broker.queue_depths(["default"]) == {"default": 3}


def test_start_and_fetch_reports_a_lost_start_and_still_fetches_where_it_fetches(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).release()  # its lease ran out: m0 is back
    consumer = broker.consumer("c/0.1", ["default"])
    started, more = consumer.start_and_fetch("m0", 5, ack=True)
    assert started is Started.LOST
    assert sorted(ids(more)) == (["m0", "m1"] if consumer.fetches_with_start else [])


def test_reap_takes_back_only_consumers_whose_lease_ran_out(broker, clock):
    broker.publish([msg(i) for i in range(2)])
    broker.consumer("dead/0.1", ["default"]).renew(1)
    broker.consumer("alive/0.1", ["default"]).renew(30)
    broker.consumer("dead/0.1", ["default"]).fetch(1, 0)
    broker.consumer("alive/0.1", ["default"]).fetch(1, 0)
    clock.t += 2
    reaped = broker.reap()
    assert [(r.consumer, r.requeued) for r in reaped] == [("dead/0.1", ["m0"])]
    assert broker.reap() == []  # forgotten once reaped
    assert broker.queue_depths(["default"]) == {"default": 1}


def test_heartbeat_keeps_a_long_running_consumer_alive(broker, clock):
    broker.publish([msg(0)])
    broker.consumer("slow/0.1", ["default"]).fetch(1, 0)
    for _ in range(4):
        broker.consumer("slow/0.1", ["default"]).renew(2)
        clock.t += 1
        assert broker.reap() == []


def test_start_refuses_a_message_the_consumer_no_longer_holds(broker):
    broker.publish([msg(0)])
    broker.consumer("stalled/0.1", ["default"]).fetch(1, 0)
    broker.consumer("stalled/0.1", ["default"]).release()  # its lease ran out
    assert broker.consumer("stalled/0.1", ["default"]).start("m0", ack=True) is Started.LOST
    assert broker.queue_depths(["default"]) == {"default": 1}  # still there, once


def test_an_acks_late_task_whose_consumer_dies_is_requeued(broker):
    broker.publish([msg(0)])
    started_acks_late(broker, "c/0.1")
    released = broker.consumer("c/0.1", ["default"]).release()
    assert (released.running, released.fate, released.requeued) == ("m0", Fate.REQUEUED, [])
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(1, 0)) == ["m0"]


def test_a_task_that_keeps_killing_its_executor_is_dead_lettered_at_max_deaths(broker):
    broker.max_deaths = 3
    broker.publish([msg(0)])
    fates = []
    for i in range(3):
        started_acks_late(broker, f"c/{i}.1")
        fates.append(broker.consumer(f"c/{i}.1", ["default"]).release().fate)
    assert fates == [Fate.REQUEUED, Fate.REQUEUED, Fate.DEAD]
    [dead] = broker.dead_letters()
    assert (dead.id, dead.queue) == ("m0", "default")
    assert "died" in dead.reason and "3 times" in dead.reason
    assert broker.queue_depths(["default"]) == {"default": 0}


def test_acking_a_task_forgets_its_death_count(broker):
    broker.max_deaths = 2
    broker.publish([msg(0)])
    started_acks_late(broker, "c/0.1")
    assert broker.consumer("c/0.1", ["default"]).release().fate is Fate.REQUEUED  # one death
    started_acks_late(broker, "c/1.1")
    broker.publish([msg(1)])
    broker.consumer("c/1.1", ["default"]).fetch(1, 0)
    # m0 ran to its end: acked in the round trip that starts the next task.
    broker.consumer("c/1.1", ["default"]).start("m1", ack=True, acks=["m0"])
    broker.consumer("c/1.1", ["default"]).release()
    broker.publish([msg(0)])  # a new run with the same id starts from no deaths
    started_acks_late(broker, "c/2.1")
    assert broker.consumer("c/2.1", ["default"]).release().fate is Fate.REQUEUED


def test_shutdown_requeues_the_running_task_without_counting_a_death(broker):
    broker.max_deaths = 1
    broker.publish([msg(0)])
    started_acks_late(broker, "c/0.1")
    assert broker.consumer("c/0.1", ["default"]).release(shutdown=True).fate is Fate.REQUEUED
    started_acks_late(broker, "c/1.1")
    assert broker.consumer("c/1.1", ["default"]).release().fate is Fate.DEAD  # its first death


def test_drop_running_drops_the_task_killed_for_its_time_limit(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=False)
    released = broker.consumer("c/0.1", ["default"]).release(drop_running="m0")
    assert (released.running, released.fate, released.requeued) == ("m0", Fate.DROPPED, ["m1"])
    assert ids(broker.consumer("c/0.2", ["default"]).fetch(10, 0)) == ["m1"]


def test_drop_running_of_another_task_leaves_the_running_one_to_its_acks_late(broker):
    broker.publish([msg(0)])
    started_acks_late(broker, "c/0.1")
    released = broker.consumer("c/0.1", ["default"]).release(drop_running="m9")
    assert (released.running, released.fate) == ("m0", Fate.REQUEUED)


def test_a_task_started_with_redeliver_false_is_dropped_when_its_consumer_dies(broker):
    broker.publish([msg(0)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=False, redeliver=False)
    assert broker.consumer("c/0.1", ["default"]).release().fate is Fate.DROPPED
    assert broker.queue_depths(["default"]) == {"default": 0}
    assert broker.dead_letters() == []


def test_a_retry_with_the_same_id_is_not_mistaken_for_the_running_task(broker):
    m, body = msg(0)
    broker.publish([(m, body)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=False, redeliver=False)  # acks_late
    broker.consumer("c/0.1", ["default"]).ack(["m0"])  # it ended
    m = m.next_attempt(args=None, kwargs=None, eta=None, now=time.time())
    broker.publish([(m, m.encode())])  # its retry, same id
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    released = broker.consumer("c/0.1", ["default"]).release()  # dies before starting the retry
    assert released.fate is Fate.ACKED and released.requeued == ["m0"]
    assert broker.queue_depths(["default"]) == {"default": 1}


# -- unsettled tasks ---------------------------------------------------------

def test_release_reports_started_tasks_whose_rows_were_never_written(broker):
    broker.publish([msg(i) for i in range(3)])
    c = broker.consumer("c/0.1", ["default"])
    c.fetch(3, 0)
    c.start("m0", ack=True)
    c.start("m1", ack=True, track=False)  # ignore_result: nothing to write
    c.start("m2", ack=True)
    released = c.release()
    assert (released.running, released.unsettled) == ("m2", ["m0"])  # not the running one


def test_ack_settled_removes_a_task_from_the_unsettled_ones(broker):
    broker.publish([msg(i) for i in range(2)])
    c = broker.consumer("c/0.1", ["default"])
    c.fetch(2, 0)
    c.start("m0", ack=False)
    c.ack(["m0"], settled=["m0"])
    c.start("m1", ack=True)
    assert c.release().unsettled == []


def test_reap_reports_the_unsettled_tasks_of_a_dead_consumer(broker, clock):
    broker.publish([msg(i) for i in range(2)])
    c = broker.consumer("c/0.1", ["default"])
    c.renew(1)
    c.fetch(2, 0)
    c.start("m0", ack=True)
    c.start("m1", ack=True)
    clock.t += 2
    assert broker.reap() == [Reaped("c/0.1", "m1", Fate.ACKED, [], ["m0"])]


# -- revocations -------------------------------------------------------------

def test_fetch_drops_a_revoked_message_and_hands_it_over_marked_revoked(broker):
    broker.publish([msg(0), msg(1)])
    broker.revoke(["m0"])
    got = broker.consumer("c/0.1", ["default"]).fetch(10, 0)
    assert [(d.id, d.revoked) for d in got] == [("m1", False), ("m0", True)]
    assert broker.consumer("c/0.1", ["default"]).release().requeued == ["m1"]  # m0 forgotten
    assert broker.queue_depths(["default"]) == {"default": 1}


def test_start_refuses_and_acks_a_revoked_message(broker):
    broker.publish([msg(0)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.revoke(["m0"])
    assert broker.consumer("c/0.1", ["default"]).start("m0", ack=False) is Started.REVOKED
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_revoke_reports_which_tasks_are_not_running(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=True)
    assert broker.revoke(["m0", "m1"]) == ["m1"]


def test_a_revocation_is_forgotten_a_day_after_it_was_made(broker, clock):
    broker.revoke(["m0"])
    clock.t += DAY + 1
    broker.reap()
    broker.publish([msg(0)])
    assert [(d.id, d.revoked) for d in broker.consumer("c/0.1", ["default"]).fetch(1, 0)] == [
        ("m0", False)]


def test_a_revocation_of_a_scheduled_task_holds_until_a_day_past_its_eta(broker, clock):
    broker.publish([msg(0, eta=clock.t + 2 * DAY)])
    broker.revoke(["m0"])
    clock.t += 1.5 * DAY
    broker.reap()  # a day past the revocation, not past the eta
    clock.t += 0.5 * DAY
    assert [(d.id, d.revoked) for d in broker.consumer("c/0.1", ["default"]).fetch(1, 0)] == [
        ("m0", True)]


def test_to_terminate_names_consumers_running_a_task_revoked_with_terminate(broker):
    broker.publish([msg(0), msg(1)])
    for n, task_id in ((1, "m0"), (2, "m1")):
        c = broker.consumer(f"c/{n}.1", ["default"])
        c.fetch(1, 0)
        c.start(task_id, ack=True)
    assert broker.revoke(["m0"], terminate=True) == []  # it is running
    broker.revoke(["m1"])
    assert broker.to_terminate(["c/1.1", "c/2.1", "c/3.1"]) == {"c/1.1": "m0"}
    assert broker.to_terminate([]) == {}


# -- dead letters ------------------------------------------------------------

def test_dead_letter_keeps_the_body_and_reason(broker):
    broker.publish([msg(0)])
    [d] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).dead_letter(d, "could not decode")
    [dead] = broker.dead_letters()
    assert (dead.id, dead.queue, dead.reason, dead.body) == ("m0", "default",
                                                            "could not decode", d.body)
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_two_dead_letters_with_one_id_are_both_kept(broker, clock):
    for reason in ("first", "second"):
        broker.publish([msg(0)])
        [d] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
        broker.consumer("c/0.1", ["default"]).dead_letter(d, reason)
        clock.t += 1
    letters = broker.dead_letters()
    assert [d.reason for d in letters] == ["second", "first"]  # newest first
    assert len({d.id for d in letters}) == 2


def test_a_requeued_dead_letter_goes_back_to_its_queue_at_its_priority(broker):
    broker.publish([msg(0, queue="a", priority=7)])
    [d] = broker.consumer("c/0.1", ["a"]).fetch(1, 0)
    broker.consumer("c/0.1", ["a"]).dead_letter(d, "unknown task")
    broker.publish([msg(1, queue="a", priority=0)])
    [letter] = broker.dead_letters()
    assert broker.requeue_dead_letter(letter.id) is True
    assert broker.dead_letters() == []
    assert ids(broker.consumer("c/0.2", ["a"]).fetch(10, 0)) == ["m0", "m1"]


def test_a_deleted_dead_letter_is_gone(broker):
    broker.publish([msg(0)])
    [d] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).dead_letter(d, "unknown task")
    assert broker.delete_dead_letter("m0") is True
    assert broker.dead_letters() == []
    assert broker.delete_dead_letter("m0") is False
    assert broker.requeue_dead_letter("m0") is False


# -- rate limits -------------------------------------------------------------

def test_rate_limit_tokens_are_shared_by_every_broker_object_of_one_store(broker, same_store,
                                                                         clock):
    other = same_store()
    other.clock = clock
    assert broker.take_token("t", 1) == 0
    assert abs(other.take_token("t", 1) - 1.0) < 1e-6
    clock.t += 1
    assert other.take_token("t", 1) == 0


def test_a_rate_limit_bucket_holds_one_seconds_worth_of_tokens(broker, clock):
    assert [broker.take_token("t", 3) for _ in range(3)] == [0, 0, 0]
    assert abs(broker.take_token("t", 3) - 1 / 3) < 1e-6
    clock.t += 60  # idle: the bucket fills up to 3, no more
    assert [broker.take_token("t", 3) for _ in range(3)] == [0, 0, 0]
    assert broker.take_token("t", 3) > 0


def test_a_rate_below_one_per_second_waits_its_interval(broker, clock):
    assert broker.take_token("slow", 0.5) == 0
    assert abs(broker.take_token("slow", 0.5) - 2.0) < 1e-6
    clock.t += 2
    assert broker.take_token("slow", 0.5) == 0


# -- workers and notices -----------------------------------------------------

def test_worker_registry_round_trip(broker):
    broker.register_worker("w1", {"pid": 1, "queues": ["default"]})
    broker.register_worker("w2", {"pid": 2})
    broker.register_worker("w1", {"pid": 1, "queues": ["a"]})  # its next heartbeat
    assert broker.workers() == {"w1": {"pid": 1, "queues": ["a"]}, "w2": {"pid": 2}}
    broker.unregister_worker("w2")
    assert broker.workers() == {"w1": {"pid": 1, "queues": ["a"]}}


def test_a_done_notice_wakes_a_listener(broker):
    with broker.listen_done("task-1") as listener:
        threading.Timer(0.1, lambda: broker.notify_done(["task-1"])).start()
        started = time.monotonic()
        woke = listener.wait(2)
    if broker.exact_notices:
        assert woke is True
    else:  # no notices: the listener pauses for the poll interval, then get() looks
        assert woke is False and time.monotonic() - started < 1.0


def test_a_listener_hears_only_its_own_task(broker):
    with broker.listen_done("task-2") as listener:
        broker.notify_done(["task-3"])
        assert listener.wait(0.1) is False


# -- idempotent publishing and duties ----------------------------------------

def test_publishing_a_message_twice_makes_one_copy(broker):
    m, body = msg(0)
    broker.publish([(m, body)])
    assert broker.published([m]) == {"m0"}
    # A broker whose publish joins the caller's transaction is never asked
    # twice: there is no publish to retry and no outbox.
    if broker.atomic_with is None:
        broker.publish([(m, body)])  # a retried publish, or the outbox
    assert broker.queue_depths(["default"]) == {"default": 1}


def test_a_publish_begun_is_published_once_its_reply_is_read(broker):
    items = [msg(0), msg(1, eta=time.time() + 60)]
    finish = broker.publish_begin(items)
    finish()
    assert broker.queue_depths(["default"]) == {"default": 1}
    assert broker.scheduled_count() == 1
    assert broker.published([m for m, _ in items]) == {"m0", "m1"}
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0"]


def test_a_new_message_with_a_used_id_is_published(broker):
    m, body = msg(0)
    broker.publish([(m, body)])
    again = Message(id="m0", task="t", args=[], kwargs={}, queue="default",
                    created=m.created + 1)
    assert broker.published([again]) == ({"m0"} if broker.atomic_with else set())
    broker.publish([(again, again.encode())])
    assert broker.queue_depths(["default"]) == {"default": 2}


def test_one_holder_at_a_time_leads_a_duty(broker, clock):
    assert broker.lead("outbox", "w1", ttl=0.3)
    assert not broker.lead("outbox", "w2", ttl=0.3)
    assert broker.lead("outbox", "w1", ttl=0.3)  # the holder keeps it
    time.sleep(0.35)  # Redis times it with a key TTL, the others by their clock
    clock.t += 0.35
    assert broker.lead("outbox", "w2", ttl=0.3)  # the first holder's ttl ran out


def test_what_was_published_is_remembered_a_day_past_a_scheduled_tasks_eta(broker, clock):
    m = Message(id="far", task="t", args=[], kwargs={}, queue="default",
                eta=clock.t + 2 * DAY, created=clock.t)
    broker.publish([(m, m.encode())])
    clock.t += 1.5 * DAY  # past a day after it was created, before its eta
    broker.reap()
    assert broker.published([m]) == {"far"}  # the outbox will not publish it again


def test_a_start_asked_again_by_the_consumer_that_started_it_runs_it(broker):
    """A start whose reply was lost is asked again by the executor: the task
    it acked then is still this consumer's to run, not LOST."""
    broker.publish([msg(0)])
    consumer = broker.consumer("c/0.1", ["default"])
    [delivery] = consumer.fetch(1, 0)
    assert delivery.token
    assert consumer.start("m0", ack=True, token=delivery.token) is Started.RUN
    again = broker.consumer("c/0.1", ["default"])
    assert again.start("m0", ack=True, token=delivery.token) is Started.RUN
    assert again.start("m0", ack=True) is Started.LOST  # without its token: not known as its own
    released = broker.consumer("c/0.1", ["default"]).release()
    assert (released.running, released.fate, released.requeued) == ("m0", Fate.ACKED, [])
    assert broker.queue_depths(["default"]) == {"default": 0}  # run once, here


def test_another_consumers_start_is_not_taken_for_ones_own(broker):
    broker.publish([msg(0)])
    first = broker.consumer("c/0.1", ["default"])
    [delivery] = first.fetch(1, 0)
    assert first.start("m0", ack=True, token=delivery.token) is Started.RUN
    other = broker.consumer("c/1.1", ["default"])
    assert other.start("m0", ack=True, token=delivery.token) is Started.LOST


def _ran_then_fetched_its_retry(broker: Broker) -> Delivery:
    """c/0.1 runs m0, then fetches its next attempt (the same id): its
    running marker still names m0, an earlier frame."""
    m, body = msg(0)
    broker.publish([(m, body)])
    consumer = broker.consumer("c/0.1", ["default"])
    [first] = consumer.fetch(1, 0)
    assert consumer.start("m0", ack=True, token=first.token) is Started.RUN
    retry = m.next_attempt(args=None, kwargs=None, eta=None, now=time.time() + 1)
    broker.publish([(retry, retry.encode())])
    [second] = consumer.fetch(1, 0)
    assert second.token != first.token
    return second


def test_a_retry_revoked_whose_refusal_was_lost_is_not_run_when_asked_again(broker):
    second = _ran_then_fetched_its_retry(broker)
    broker.revoke(["m0"])
    consumer = broker.consumer("c/0.1", ["default"])
    assert consumer.start("m0", ack=True, token=second.token) is Started.REVOKED
    # Its reply lost, the start is asked again: the marker is the attempt before's.
    assert consumer.start("m0", ack=True, token=second.token) is Started.LOST


def test_a_retry_deferred_is_not_started_by_a_start_asked_again(broker):
    second = _ran_then_fetched_its_retry(broker)
    consumer = broker.consumer("c/0.1", ["default"])
    consumer.defer("m0", broker.clock() + 60)  # a rate limit; its reply lost, say
    assert consumer.start("m0", ack=True, token=second.token) is Started.LOST
    assert broker.scheduled_count() == 1  # it runs at its eta, once
