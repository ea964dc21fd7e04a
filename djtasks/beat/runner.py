"""The beat runner: publishes each tick of each schedule once, whatever the
number of runners (``manage.py runbeat``, ``runworker --beat``).

There is no leader. Every runner wakes at each tick and tries to claim it:
one conditional UPDATE moves the schedule's ``ScheduleState.last_tick``
from before the tick to the tick, in the same transaction that enqueues
the tick's task through the enqueue door, under an id derived from
(schedule, tick). The runner whose UPDATE changed the row publishes; the
others see nothing left to do. A runner killed inside that transaction
claimed nothing (the rollback), so the next runner's claim succeeds; one
killed after the commit left a committed task that the database broker
holds already, or, on Redis, a PENDING row the outbox publishes
(docs/periodic.md has the bounds).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections, connections, router, transaction
from django.db.models import F
from django.utils import timezone

from ..conf import get_settings
from ..exceptions import NotRegistered
from ..message import Message
from ..models import TaskResult
from ..registry import registry
from ..task import Task
from .entries import Entry, code_entries
from .models import PeriodicTask, ScheduleState

logger = logging.getLogger("djtasks.beat")

ON_TIME = timedelta(seconds=60)  # a tick later than this is a missed one
MISSED_CAP = 100  # runs "all" publishes at most per catch-up
_NAMESPACE = uuid.UUID("3f0c1a4e-8d3b-5a7e-9c21-6b0d2f7e4a15")


def tick_task_id(name: str, tick: datetime) -> str:
    """The task id of ``name``'s run for ``tick``: the same on every runner."""
    return str(uuid.uuid5(_NAMESPACE, f"{name}\n{tick.astimezone(UTC).isoformat()}"))


def choose(due: Sequence[datetime], missed: str, now: datetime) -> list[datetime]:
    """The ticks to run of ``due`` (oldest first, ending at or before ``now``).

    The latest due tick is on time if it is at most ``ON_TIME`` old; every
    other due tick was missed (no runner was up, or the schedule was off).
    ``once``: one run, for the latest tick. ``skip``: the on-time tick only.
    ``all``: every due tick, the latest ``MISSED_CAP`` of them.
    """
    if not due:
        return []
    if missed == "all":
        return list(due[-MISSED_CAP:])
    if missed == "skip":
        return [due[-1]] if now - due[-1] <= ON_TIME else []
    return [due[-1]]


def message_for(entry: Entry, task: Task, task_id: str, tick: datetime) -> Message:
    """The message of ``entry``'s run for ``tick``: its arguments and
    options, ``expires`` counted from the tick (the run stands for it), and
    ``scheduled_for`` carried as a message option. Raises what
    ``Task.build_message`` raises (``TypeError``)."""
    options = dict(entry.options)
    expires = options.pop("expires", None)
    if isinstance(expires, int | float):
        expires = tick + timedelta(seconds=expires)
    message = task.build_message(entry.args, entry.kwargs, task_id=task_id, expires=expires,
                                 **options)
    message.options["scheduled_for"] = tick.timestamp()
    return message


@dataclass
class Fired:
    """One run a runner published: the schedule, its tick and task id."""

    name: str
    tick: datetime
    task_id: str


class Runner:
    """Runs schedules until ``stop()``; ``run_once(now)`` is one pass (tests).

    ``sync_interval`` (seconds, default ``BEAT_SYNC_INTERVAL``) bounds how
    long a change in the database's schedules takes to be seen, and how long
    the runner sleeps between passes.
    """

    def __init__(self, *, hostname: str = "beat", sync_interval: float | None = None,
                 clock: Callable[[], datetime] = timezone.now) -> None:
        self.hostname = hostname
        self.sync_interval = sync_interval or get_settings().BEAT_SYNC_INTERVAL
        self.clock = clock
        self.using = router.db_for_write(TaskResult)
        self._stop = threading.Event()
        self._reported: set[str] = set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- schedules -----------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Code's schedules, then the database's enabled ones (a row that
        cannot make an entry is logged once and left out)."""
        entries = code_entries(get_settings().BEAT_SCHEDULE)
        rows = PeriodicTask.objects.using(self.using).filter(source="admin", enabled=True)
        for row in rows:
            try:
                entries.append(row.entry())
            except Exception as exc:
                self._report(row.name, f"periodic task {row.name!r} is not runnable: {exc}")
        return entries

    def _report(self, key: str, text: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            logger.error(text)

    # -- one pass --------------------------------------------------------------

    def run_once(self, now: datetime | None = None,
                 entries: list[Entry] | None = None) -> list[Fired]:
        """Claim and publish every due tick of ``entries`` (default: all);
        return what this runner published. A schedule seen for the first time
        starts at ``now``: its earlier ticks are not missed ones."""
        now = now or self.clock()
        entries = self.entries() if entries is None else entries
        states = dict(ScheduleState.objects.using(self.using)
                      .filter(name__in=[e.name for e in entries])
                      .values_list("name", "last_tick"))
        new = [ScheduleState(name=e.name, last_tick=now) for e in entries if e.name not in states]
        if new:
            ScheduleState.objects.using(self.using).bulk_create(new, ignore_conflicts=True)
        fired: list[Fired] = []
        for entry in entries:
            last = states.get(entry.name)
            if last is None:
                continue
            try:
                due = entry.schedule.ticks(last, now, MISSED_CAP)
            except ValueError as exc:
                self._report(entry.name, f"schedule {entry.name!r} is invalid: {exc}")
                continue
            chosen = choose(due, entry.missed, now)
            for tick in chosen:
                run = self._claim_and_publish(entry, tick, now)
                if run is not None:
                    fired.append(run)
            if due and (not chosen or chosen[-1] < due[-1]):
                self._pass_over(entry.name, due[-1])
        return fired

    def _claim_and_publish(self, entry: Entry, tick: datetime, now: datetime) -> Fired | None:
        """Claim ``tick`` of ``entry`` and enqueue its task in one transaction;
        None if another runner (or an earlier pass) has it."""
        try:
            task = registry.get(entry.task)
        except NotRegistered as exc:
            self._report(entry.name, f"schedule {entry.name!r}: {exc}")
            return None
        task_id = tick_task_id(entry.name, tick)
        with transaction.atomic(using=self.using):
            claimed = ScheduleState.objects.using(self.using).filter(
                name=entry.name, last_tick__lt=tick,
            ).update(last_tick=tick, last_run_at=now, last_task_id=task_id,
                     total_runs=F("total_runs") + 1)
            if not claimed:
                return None
            message = message_for(entry, task, task_id, tick)
            from ..enqueue import enqueue

            enqueue(task, message, on_commit=True, using=self.using)
        logger.info("beat: %s for %s published as %s[%s]", entry.name,
                    tick.isoformat(), entry.task, task_id)
        return Fired(entry.name, tick, task_id)

    def _pass_over(self, name: str, tick: datetime) -> None:
        """Move ``name`` past ticks its missed policy does not run."""
        ScheduleState.objects.using(self.using).filter(
            name=name, last_tick__lt=tick).update(last_tick=tick)

    # -- the loop ----------------------------------------------------------------

    def next_wake(self, entries: list[Entry], now: datetime) -> float:
        """Seconds until the next tick of any entry, at most ``sync_interval``."""
        wake = self.sync_interval
        for entry in entries:
            try:
                upcoming = entry.schedule.next_runs(now, 1)
            except ValueError:
                continue
            if upcoming:
                wake = min(wake, (upcoming[0] - now).total_seconds())
        return max(wake, 0.01)

    def run(self) -> None:
        """Run passes until ``stop()``; a pass that fails (the database is
        down) is logged and tried again after ``sync_interval``."""
        logger.info("beat runner %s started (schedules read every %gs)", self.hostname,
                    self.sync_interval)
        while not self.stopping:
            wait = self.sync_interval
            try:
                close_old_connections()
                entries = self.entries()
                self.run_once(entries=entries)
                wait = self.next_wake(entries, self.clock())
            except Exception as exc:
                logger.error("beat pass failed (trying again in %gs): %s", wait, exc)
            finally:
                # No connection stays open while it sleeps: a prefork worker
                # that forks an executor meanwhile would hand the child a
                # socket whose clean-up could close this one.
                connections.close_all()
            self._stop.wait(wait)
        logger.info("beat runner %s stopped", self.hostname)


def start_thread(hostname: str) -> tuple[Runner, threading.Thread]:
    """A runner in a daemon thread (``runworker --beat``); ``runner.stop()`` ends it."""
    runner = Runner(hostname=hostname)
    thread = threading.Thread(target=runner.run, name="djtasks-beat", daemon=True)
    thread.start()
    return runner, thread
