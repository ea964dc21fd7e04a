"""What ``manage.py djtasks`` and the metrics read and do: queues, workers,
result counts, one task's story, and purging a queue (Celery's ``control``).

Everything here reads the broker and indexed ``TaskResult`` queries only, so
it stays cheap on a large results table. docs/monitoring.md shows the
commands that use it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError
from django.db.models import Count

from . import states
from .brokers import Broker, DeadLetter
from .brokers.base import Held
from .conf import get_settings
from .exceptions import TaskRevokedError
from .models import TaskResult
from .outbox import message_from_row
from .registry import registry
from .workflow import after_revoked, run_all

BATCH = 500  # task ids per UPDATE ... WHERE task_id IN (...)


@dataclass
class QueueInfo:
    """A queue, its ready messages, and what names it: ``DEFAULT_QUEUE``,
    ``task <name>``, ``route <pattern>`` or ``worker <hostname>``."""

    name: str
    depth: int = 0
    named_by: list[str] = field(default_factory=list)


@dataclass
class Status:
    """One look at the whole system (``manage.py djtasks status``)."""

    queues: list[QueueInfo]
    scheduled: int  # messages waiting for their eta, every queue
    dead_letters: int
    workers: dict[str, dict[str, Any]]  # hostname -> heartbeat info, live ones only
    lost_workers: list[str]  # registered, but silent for longer than their lease
    results: dict[str, int]  # TaskResult rows per state, every state present


@dataclass
class PurgeResult:
    """What ``purge`` did: the ids of the messages deleted, rows revoked."""

    queue: str
    ids: list[str]
    revoked: int


def is_alive(info: dict[str, Any], now: float | None = None) -> bool:
    """Whether a worker's heartbeat info (``Broker.workers()``) is younger than its lease."""
    now = time.time() if now is None else now
    return bool(now - float(info.get("last_seen", 0)) <= float(info.get("lease", 30)))


def live_workers(broker: Broker) -> dict[str, dict[str, Any]]:
    """The registered workers whose last heartbeat is within their lease."""
    now = time.time()
    return {name: info for name, info in broker.workers().items() if is_alive(info, now)}


def task_queue(task_name: str) -> str:
    """The queue a task's messages go to unless a call names another:
    its ``queue`` option, else its route, else ``DEFAULT_QUEUE``."""
    s = get_settings()
    task = registry.get(task_name)
    return task.queue or task._routed(s)[0]


def known_queues(broker: Broker, workers: dict[str, dict[str, Any]] | None = None,
                 extra: Sequence[str] = ()) -> list[QueueInfo]:
    """Every queue that ``DEFAULT_QUEUE``, a registered task, a route
    (``DJTASKS['ROUTES']``) or a live worker names, plus ``extra``, sorted by
    name, with their depths (ready messages) in one broker round trip.
    Raises ``BrokerError``."""
    s = get_settings()
    named: dict[str, list[str]] = {s.DEFAULT_QUEUE: ["DEFAULT_QUEUE"]}
    for task in registry:
        named.setdefault(task_queue(task.name), []).append(f"task {task.name}")
    for pattern, route in s.ROUTES.items():
        if route.get("queue"):
            named.setdefault(route["queue"], []).append(f"route {pattern}")
    for hostname, info in sorted((live_workers(broker) if workers is None else workers).items()):
        for queue in info.get("queues", ()):
            named.setdefault(queue, []).append(f"worker {hostname}")
    for queue in extra:
        named.setdefault(queue, [])
    depths = broker.queue_depths(sorted(named))
    return [QueueInfo(q, depths[q], named[q]) for q in sorted(named)]


def result_counts() -> dict[str, int]:
    """``TaskResult`` rows per state (every state, 0 when none): one GROUP BY
    on the indexed ``status`` column."""
    counts = dict(TaskResult.objects.order_by().values_list("status")
                  .annotate(n=Count("id")).values_list("status", "n"))
    return {state: counts.get(state, 0) for state in states.ALL_STATES}


def status(broker: Broker) -> Status:
    """Queues, scheduled messages, dead letters, workers and result counts.
    Raises ``BrokerError``."""
    now = time.time()
    workers = broker.workers()
    live = {n: i for n, i in workers.items() if is_alive(i, now)}
    return Status(
        queues=known_queues(broker, live),
        scheduled=broker.scheduled_count(),
        dead_letters=broker.dead_letter_count(),
        workers=live,
        lost_workers=sorted(set(workers) - set(live)),
        results=result_counts(),
    )


@dataclass
class TaskStory:
    """What is known of one task id: its row (None if it has none) and what
    the broker holds of it."""

    task_id: str
    row: TaskResult | None
    held: list[Held]  # its messages: scheduled, fetched, ready (Broker.locate)
    revoked: bool
    dead_letters: list[DeadLetter]
    worker: dict[str, Any] | None  # heartbeat info of the worker its row names, if live


def inspect_task(broker: Broker, task_id: str) -> TaskStory:
    """The row of ``task_id`` and what the broker holds of it: its messages
    (ready ones looked for in the row's queue, or in every known queue when
    it has no row), whether it is revoked, its dead letters, and the worker
    its row names if that one is alive. Raises ``BrokerError``."""
    row = TaskResult.objects.filter(task_id=task_id).first()
    queues = [row.queue] if row is not None else [q.name for q in known_queues(broker)]
    held = broker.locate(task_id, queues)
    letters = [d for d in broker.dead_letters()
               if d.id == task_id or d.id.startswith(task_id + ":")]
    worker = None
    if row is not None and row.worker:
        # The row names the executor (host.pid/slot.generation); the registry the host.
        live = live_workers(broker)
        worker = next((info for name, info in live.items()
                       if row.worker == name or row.worker.startswith(name + "/")), None)
    return TaskStory(task_id, row, held, broker.is_revoked(task_id), letters, worker)


def purge(broker: Broker, queue: str) -> PurgeResult:
    """Delete the ready messages of ``queue`` (``Broker.purge``: scheduled
    and fetched messages stay) and move their waiting rows (PENDING or
    RETRY) to REVOKED with ``TaskRevokedError("purged ...")``, waking any
    ``get()`` that waits on them. Follows Celery's ``purge``, which also
    cannot be undone. Raises ``BrokerError``, or ``DatabaseError`` if the
    rows cannot be written after the broker's purge (the messages are gone
    then; ``revoke`` the ids it names to settle their rows). A purged chord
    member ends its chord FAILURE, as a revoked one does when a worker
    drops it (else the callback would wait for ever)."""
    ids = broker.purge(queue)
    unique = list(dict.fromkeys(ids))
    exc = TaskRevokedError(f"purged from queue {queue!r}")
    revoked = 0
    members = []  # the chord members among them: their rows carry the chord
    try:
        for i in range(0, len(unique), BATCH):
            rows = TaskResult.objects.filter(task_id__in=unique[i:i + BATCH])
            # Revoked and not yet dropped by a worker counts too: none will now.
            members += rows.filter(status__in=[states.PENDING, states.RETRY, states.REVOKED],
                                   options__has_key="chord")
            revoked += rows.waiting().move_to(states.REVOKED, exc=exc)
    except DatabaseError as error:
        raise DatabaseError(f"purged {len(ids)} message(s) from {queue!r} but could not "
                            f"revoke their rows ({error}); revoke them by id: "
                            f"{' '.join(unique)}") from error
    if unique:
        broker.notify_done(unique)
    run_all([f for f in (after_revoked(message_from_row(row), exc) for row in members)
             if f is not None])
    return PurgeResult(queue, ids, revoked)
