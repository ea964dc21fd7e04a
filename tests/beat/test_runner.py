"""The beat runner in this process: each tick claimed once, the missed-run
policies, request.scheduled_for, and the database's schedules read live.
On both the Redis and the database broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from djtasks import outbox, states
from djtasks.beat.entries import Entry
from djtasks.beat.models import PeriodicTask, ScheduleState
from djtasks.beat.runner import MISSED_CAP, Runner, tick_task_id
from djtasks.brokers import get_broker
from djtasks.models import TaskResult
from djtasks.schedules import schedule
from tests.app.tasks import _redis
from tests.conftest import run_burst, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture(params=["redis", "db"])
def beat_broker(request, settings, redis_client, key_prefix):
    if request.param == "db":
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    return get_broker()


def every_minute(counter: str, missed: str = "once") -> Entry:
    return Entry(name=f"tick-{counter}", task="tests.app.tasks.record_tick",
                 schedule=schedule(run_every=MINUTE), args=[counter], missed=missed)


def ticks_run(counter: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in _redis().hgetall(counter).items()}


def test_a_due_tick_is_published_once_with_its_scheduled_for(beat_broker, counter):
    entry, key = every_minute(counter("a")), counter("a")
    runner = Runner()
    assert runner.run_once(T0 - timedelta(seconds=5), [entry]) == []  # first sight
    (fired,) = runner.run_once(T0 + timedelta(seconds=1), [entry])
    assert fired.tick == T0 and fired.task_id == tick_task_id(entry.name, T0)
    run_burst()
    assert ticks_run(key) == {T0.isoformat(): 1}


def test_a_second_runner_finds_the_tick_claimed(beat_broker, counter):
    entry = every_minute(counter("b"))
    first, second = Runner(hostname="one"), Runner(hostname="two")
    first.run_once(T0 - timedelta(seconds=5), [entry])
    assert len(first.run_once(T0 + timedelta(seconds=2), [entry])) == 1
    # A clock two seconds behind, after the other runner published.
    assert second.run_once(T0, [entry]) == []
    assert second.run_once(T0 + timedelta(seconds=30), [entry]) == []
    state = ScheduleState.objects.get(name=entry.name)
    assert (state.last_tick, state.total_runs) == (T0, 1)


def test_a_schedule_seen_for_the_first_time_has_no_missed_ticks(beat_broker, counter):
    entry = every_minute(counter("c"), missed="all")
    assert Runner().run_once(T0 + timedelta(seconds=30), [entry]) == []
    assert ScheduleState.objects.get(name=entry.name).last_tick == T0 + timedelta(seconds=30)


def outage(entry: Entry, minutes: int) -> Runner:
    """A runner whose schedule last ran ``minutes`` before T0."""
    runner = Runner()
    runner.run_once(T0 - MINUTE * minutes - timedelta(seconds=1), [entry])
    runner.run_once(T0 - MINUTE * minutes, [entry])
    return runner


def test_missed_once_publishes_one_run_for_the_latest_tick(beat_broker, counter):
    entry = every_minute(counter("once"), missed="once")
    runner = outage(entry, 10)
    fired = runner.run_once(T0 + timedelta(seconds=90), [entry])
    assert [f.tick for f in fired] == [T0 + MINUTE]
    run_burst()
    assert ticks_run(counter("once")) == {(T0 - MINUTE * 10).isoformat(): 1,
                                          (T0 + MINUTE).isoformat(): 1}


def test_missed_skip_publishes_nothing_and_moves_past_the_missed_ticks(beat_broker, counter):
    hourly = Entry(name="hourly-skip", task="tests.app.tasks.record_tick", args=[counter("s")],
                   schedule=schedule(run_every=timedelta(hours=1)), missed="skip")
    runner = Runner()
    runner.run_once(T0 - timedelta(hours=10, seconds=1), [hourly])
    assert runner.run_once(T0 + timedelta(minutes=30), [hourly]) == []  # 12:00 is 30 min late
    assert ScheduleState.objects.get(name=hourly.name).last_tick == T0
    # The next tick, on time, runs.
    assert [f.tick for f in runner.run_once(T0 + timedelta(hours=1, seconds=3), [hourly])] \
        == [T0 + timedelta(hours=1)]


def test_missed_skip_still_runs_the_tick_that_is_on_time(beat_broker, counter):
    entry = every_minute(counter("skip"), missed="skip")
    runner = outage(entry, 10)
    assert [f.tick for f in runner.run_once(T0 + timedelta(seconds=5), [entry])] == [T0]


def test_missed_all_publishes_each_missed_tick_once(beat_broker, counter):
    entry = every_minute(counter("all"), missed="all")
    runner = outage(entry, 5)
    fired = runner.run_once(T0 + timedelta(seconds=10), [entry])
    assert [f.tick for f in fired] == [T0 - MINUTE * i for i in range(4, -1, -1)]
    run_burst()
    assert ticks_run(counter("all")) == {(T0 - MINUTE * i).isoformat(): 1 for i in range(6)}


def test_missed_all_is_capped_to_the_latest_ticks(beat_broker, counter):
    entry = every_minute(counter("cap"), missed="all")
    runner = outage(entry, MISSED_CAP + 50)
    fired = runner.run_once(T0, [entry])
    assert len(fired) == MISSED_CAP and fired[-1].tick == T0
    assert fired[0].tick == T0 - MINUTE * (MISSED_CAP - 1)


def test_expires_counts_from_the_tick(beat_broker, counter):
    entry = Entry(name="exp", task="tests.app.tasks.record_tick", args=[counter("e")],
                  schedule=schedule(run_every=MINUTE), options={"expires": 30, "queue": "beatq"})
    runner = Runner()
    runner.run_once(T0 - timedelta(seconds=1), [entry])
    runner.run_once(T0, [entry])
    row = TaskResult.objects.get(task_id=tick_task_id("exp", T0))
    assert (row.expires, row.queue) == (T0 + timedelta(seconds=30), "beatq")


def test_a_run_committed_but_never_published_is_published_by_the_outbox(
        settings, redis_client, key_prefix, counter, monkeypatch):
    """A Redis runner killed between its commit and its publish: the PENDING row
    (with scheduled_for) is the record, and the outbox publishes it once."""
    entry = every_minute(counter("box"))
    runner = Runner()
    runner.run_once(T0 - timedelta(seconds=1), [entry])
    broker = get_broker()
    monkeypatch.setattr(type(broker), "publish", lambda self, messages: None)  # lost
    runner.run_once(T0, [entry])
    monkeypatch.undo()
    assert outbox.sweep(get_broker(), grace=0) == [tick_task_id(entry.name, T0)]
    assert outbox.sweep(get_broker(), grace=0) == []
    run_burst()
    assert ticks_run(counter("box")) == {T0.isoformat(): 1}
    assert TaskResult.objects.get(task_id=tick_task_id(entry.name, T0)).status == states.SUCCESS


def test_a_database_schedule_disabled_then_enabled_follows_its_missed_policy(
        beat_broker, counter):
    row = PeriodicTask.objects.create(name="db-all", task="tests.app.tasks.record_tick",
                                      kind="interval", every=MINUTE, args=[counter("d")],
                                      missed="all")
    runner = Runner()
    runner.run_once(T0 - timedelta(seconds=1))
    PeriodicTask.objects.filter(pk=row.pk).update(enabled=False)
    assert [f for f in runner.run_once(T0 + MINUTE * 3) if f.name == "db-all"] == []
    PeriodicTask.objects.filter(pk=row.pk).update(enabled=True)
    fired = [f.tick for f in runner.run_once(T0 + MINUTE * 3) if f.name == "db-all"]
    assert fired == [T0, T0 + MINUTE, T0 + MINUTE * 2, T0 + MINUTE * 3]


def test_admin_edits_are_picked_up_by_a_running_runner(beat_broker, counter, settings):
    """A runner started before the schedule exists runs it, and runs its new
    arguments after an edit, without a restart."""
    settings.DJTASKS = {**settings.DJTASKS, "BEAT_SCHEDULE": {
        name: None for name in ("djtasks.cleanup_results", "djtasks.trim_dead_letters",
                                "djtasks.trim_workers")}}
    runner = Runner(sync_interval=0.2)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        row = PeriodicTask.objects.create(
            name="live", task="tests.app.tasks.record_tick", kind="interval",
            every=timedelta(seconds=0.5), args=[counter("before")])
        wait_until(lambda: TaskResult.objects.filter(task_name="tests.app.tasks.record_tick")
                   .exists(), timeout=10, what="the new schedule's first run")
        row.args = [counter("after")]
        row.save()
        edited = row.changed

        def ran_after_edit() -> bool:
            return TaskResult.objects.filter(kwargs={}, args=[counter("after")],
                                             created__gt=edited).exists()
        wait_until(ran_after_edit, timeout=10, what="a run with the edited arguments")
    finally:
        runner.stop()
        thread.join(10)
    assert not thread.is_alive()
