"""A woken Redis executor's first task is started by the fetch that woke it
(``Consumer.fetch(..., start=WakeStart)``, wakefetch.lua): how the executor
runs, refuses and settles such a delivery. The broker's side is the contract
(tests/contract/test_broker.py)."""

import threading

import pytest

from djtasks import AsyncResult, enqueue, signals, states
from djtasks.brokers import Delivery, Fate, WakeStart
from djtasks.models import TaskResult
from djtasks.worker.executor import Executor
from djtasks.worker.results import InlineResultWriter
from tests.app import tasks
from tests.app.tasks import count

pytestmark = pytest.mark.django_db(transaction=True)


def executor(broker, name: str = "wake/0.1") -> Executor:
    ex = Executor(broker, consumer=name, hostname="h", queues=["default"], prefetch=4,
                  inline=True)
    ex.results = InlineResultWriter(broker, ex.consumer)
    return ex


def woken(ex: Executor, broker, items: list[tuple],
          plan: WakeStart | None = None) -> list[Delivery]:
    """The executor's waiting fetch, woken by ``items`` published meanwhile,
    with ``plan`` (else the executor's own)."""
    threading.Timer(0.2, lambda: broker.publish(items)).start()
    ex._woken = plan or ex._wake_start()
    got = ex.consumer.fetch(ex.prefetch, 5.0, start=ex._woken)
    assert got, "the publish did not wake the fetch"
    return got


def prepared(task, *args, **options):
    message = task.build_message(list(args), {}, **options)
    return message, enqueue.prepare(task, message).body


def test_a_task_the_fetch_started_runs_once_without_a_start_of_its_own(
        broker, counter, monkeypatch):
    ex = executor(broker)
    key = counter("woken")
    message, body = prepared(tasks.record, key)
    [delivery] = woken(ex, broker, [(message, body)])
    assert delivery.started
    asked = []
    monkeypatch.setattr(type(ex.consumer), "start", lambda self, *a, **k: asked.append(a))
    ex.handle(delivery)
    assert asked == [] and count(key) == 1
    assert AsyncResult(message.id).status == states.SUCCESS
    released = ex.consumer.release()
    assert (released.running, released.fate, released.requeued, released.unsettled) == (
        message.id, Fate.ACKED, [], [])


def test_only_the_first_delivery_is_started_and_the_others_start_as_ever(broker, counter):
    ex = executor(broker)
    key = counter("woken-two")
    first, second = prepared(tasks.record, key), prepared(tasks.record, key)
    got = woken(ex, broker, [first, second])
    assert [d.started for d in got] == [True, False]
    ex._backlog = got
    ex.process()
    assert count(key) == 2
    assert {r.status for r in TaskResult.objects.all()} == {states.SUCCESS}


def test_a_message_the_fetch_started_that_fails_its_checks_is_dead_lettered_and_settled(
        broker):
    ex = executor(broker)
    message, body = prepared(tasks.add, 1, 2)
    forged = body.rsplit(b":", 1)[0] + b":not-the-signature"
    [delivery] = woken(ex, broker, [(message, forged)])
    assert delivery.started  # its task is named: the fetch cannot check a signature
    ex.handle(delivery)
    [letter] = broker.dead_letters()
    assert letter.id == message.id and "signature" in letter.reason
    # It ran nothing: neither its consumer's running task nor unsettled, so a
    # release does not mark its PENDING row lost.
    TaskResult.objects.enqueued(message)
    released = ex.consumer.release(shutdown=True)
    assert (released.running, released.unsettled) == (None, [])
    assert TaskResult.objects.get(task_id=message.id).status == states.PENDING


def test_a_warm_stop_runs_the_task_the_fetch_started_and_gives_the_rest_back(
        broker, counter):
    ex = executor(broker)
    key = counter("woken-stop")
    first, second = prepared(tasks.record, key), prepared(tasks.record, key)
    got = woken(ex, broker, [first, second])
    ex._backlog = got
    ex.stop()
    ex.process()
    assert count(key) == 1  # the started one ran, as a running task does
    assert broker.queue_depths(["default"]) == {"default": 1}


# A plan that says acks_late (not acked by the start), where the task now says otherwise.
STALE = WakeStart({tasks.record.name: (False, True, True)})


def test_a_task_started_with_flags_it_no_longer_has_is_squared_after_its_run(broker, counter):
    ex = executor(broker)
    key = counter("woken-flags")
    [delivery] = woken(ex, broker, [prepared(tasks.record, key)], STALE)
    assert delivery.started
    ex.handle(delivery)
    ex._flush_acks()
    assert count(key) == 1
    released = ex.consumer.release()
    assert (released.fate, released.requeued) == (Fate.ACKED, [])  # acked: it never runs again


def test_a_task_started_with_flags_it_no_longer_has_is_not_run_once_revoked(broker, counter):
    ex = executor(broker)
    key = counter("woken-revoked")
    message, body = prepared(tasks.record, key)
    [delivery] = woken(ex, broker, [(message, body)], STALE)
    assert delivery.started
    broker.revoke([message.id])  # before the start asked again with the task's own flags
    ex.handle(delivery)
    assert count(key) == 0
    assert AsyncResult(message.id).status == states.REVOKED


def test_the_plan_leaves_out_rate_limited_tasks_and_is_off_while_task_received_is_heard(
        broker):
    ex = executor(broker)
    plan = ex._wake_start()
    assert plan is not None
    assert tasks.add.name in plan.flags
    assert plan.flags[tasks.add.name] == (True, True, True)
    limited = [t.name for t in tasks.__dict__.values()
               if getattr(t, "rate_per_second", None) is not None]
    assert limited and not set(limited) & set(plan.flags)

    def heard(sender, **kwargs):
        pass

    signals.task_received.connect(heard)
    try:
        assert ex._wake_start() is None  # its receivers hear of a task before it starts
    finally:
        signals.task_received.disconnect(heard)
