"""The database broker (``db://<alias>``): the contract on Django's own
database, the default broker. docs/brokers.md says how it claims, wakes and
what it costs.

Messages are rows of ``djtasks_queue`` (``tables.QueuedMessage``), written
by ``publish`` on the caller's connection, so inside ``transaction.atomic()``
a message exists only if the transaction commits. Workers claim rows with
``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it (PostgreSQL,
MariaDB 10.6+, MySQL 8), in ``BEGIN IMMEDIATE`` transactions on SQLite, and
mark them theirs with a conditional UPDATE, so a row is never claimed twice
whatever the isolation level. PostgreSQL wakes idle workers and waiting
``get()`` calls with LISTEN/NOTIFY; other databases poll every
``DATABASE_POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.db import connections, transaction
from django.db.models import Count, Q

from ..message import Message
from .base import REVOKE_MEMORY, Fate, Reaped
from .database_consumer import MAX_OFFER, DatabaseConsumer, offer_payload
from .database_roles import DatabaseRoles
from .tables import (
    QUEUE,
    BrokerConsumer,
    QueuedMessage,
    Revocation,
    StartedTask,
    StoredDeadLetter,
)


class DatabaseBroker(DatabaseRoles):
    """A broker on the Django database ``alias`` (``db://default``).

    ``publish`` joins the caller's transaction (``atomic_with`` is the
    alias): the enqueue door writes the PENDING row and the message together.
    """

    def __init__(self, url: str, *, key_prefix: str, max_deaths: int = 3,
                 poll_interval: float = 0.1) -> None:
        parts = urlsplit(url)
        self.url = url
        self.alias = parts.netloc or parts.path.lstrip("/") or "default"
        self.atomic_with = self.alias
        self.prefix = key_prefix
        self.max_deaths = max_deaths
        self.poll_interval = poll_interval
        digest = hashlib.sha1(key_prefix.encode()).hexdigest()[:16]
        self.channel = f"djtasks_{digest}"  # NOTIFY: a message may be ready
        self.done_channel = f"djtasks_done_{digest}"  # NOTIFY: a task has a new state

    # -- transport -----------------------------------------------------------

    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        if not items:
            return
        insert, params = self._insert(items)
        # One statement, in the caller's transaction when there is one (then
        # the row is there exactly if it commits), else a transaction of its
        # own: no BEGIN and COMMIT round trips. On PostgreSQL the NOTIFY
        # rides in it, and is delivered when it commits.
        with self._errors():
            if self.vendor == "postgresql":
                notice, notice_params = self._notice(items)
                self._sql(f"WITH m AS ({insert} RETURNING id) {notice}", [*params, *notice_params])
            else:
                self._sql(insert, params)

    def _notice(self, items: Sequence[tuple[Message, bytes]]) -> tuple[str, list[Any]]:
        """The NOTIFY that follows the INSERT ``m`` (PostgreSQL), and its
        parameters. Its payload is the message itself, as an offer
        (``offer_payload``), when it is one message, ready now, published
        outside a transaction, and small enough to be a payload, ASCII with
        no NUL; else empty. A transaction's empty notices are collapsed into one."""
        if len(items) == 1 and not connections[self.alias].in_atomic_block:
            message, body = items[0]
            if ((message.eta is None or message.eta <= self.clock())
                    and len(body) <= MAX_OFFER and body.isascii() and b"\0" not in body):
                return ("SELECT pg_notify(%s, (SELECT id FROM m)::text || %s)",
                        [self.channel, offer_payload(message.id, message.queue, body)])
        return "SELECT pg_notify(%s, '')", [self.channel]

    def publish_with_rows(self, items: Sequence[tuple[Message, bytes]],
                          pending: Sequence[Message]) -> None:
        if not pending:
            self.publish(items)
            return
        from ..models import TaskResult  # the models import this package's tables

        results = TaskResult.objects.using(self.alias)
        if self.vendor == "postgresql":
            # One statement: the upsert and the insert are CTEs of the
            # NOTIFY, so outside a transaction there is no BEGIN, no COMMIT
            # and no second statement, and it is still all or nothing.
            upsert, row_params = results.enqueued_sql(list(pending))
            insert, params = self._insert(items)
            notice, notice_params = self._notice(items)
            with self._errors(), transaction.mark_for_rollback_on_error(self.alias):
                self._sql(f"WITH r AS ({upsert}), m AS ({insert} RETURNING id) {notice}",
                          [*row_params, *params, *notice_params])
            return
        # SQLite and MariaDB have no CTE that writes: the rows, then the
        # messages, in the caller's transaction (no savepoint: the enqueue
        # door has one) or in a short one of their own (on SQLite it takes
        # the write lock at BEGIN IMMEDIATE).
        inside = connections[self.alias].in_atomic_block
        with (transaction.atomic(using=self.alias, savepoint=False) if inside
              else self._write()), self._errors():
            for message in pending:
                results.enqueued(message)
            self.publish(items)

    def _insert(self, items: Sequence[tuple[Message, bytes]]) -> tuple[str, list[Any]]:
        """The INSERT of ``items`` into the queue table, and its parameters."""
        now = self.clock()
        params: list[Any] = []
        for m, body in items:
            due = m.eta if m.eta is not None and m.eta > now else None
            params += [m.id, self.prefix, m.queue, m.priority, due, "", 0, body]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(items))
        return (f"INSERT INTO {QUEUE} (task_id, prefix, queue, priority, due, consumer, "
                f"deaths, body) VALUES {values}", params)

    def published(self, messages: Sequence[Message]) -> set[str]:
        # What publish() was given committed with the caller's transaction:
        # nothing is ever waiting to be published (no outbox to run).
        return {m.id for m in messages}

    def consumer(self, name: str, queues: Sequence[str]) -> DatabaseConsumer:
        return DatabaseConsumer(self, name, list(queues))

    def reap(self) -> list[Reaped]:
        now = self.clock()
        with self._errors():
            self._rows(Revocation).filter(score__lt=now - REVOKE_MEMORY).delete()
            expired = list(self._rows(BrokerConsumer).filter(lease_until__lte=now)
                           .order_by("lease_until").values_list("name", flat=True))
        out = []
        for name in expired:
            with self._write():
                # Another reaper may have taken it meanwhile: skip it then.
                if self._rows(BrokerConsumer).select_for_update(skip_locked=True).filter(
                        name=name, lease_until__lte=now).exists():
                    out.append(self._release(name))
        return out

    def _release(self, name: str, drop: str | None = None, shutdown: bool = False) -> Reaped:
        """Release consumer ``name``; call inside ``_write()``."""
        marker = self._rows(BrokerConsumer).select_for_update().filter(name=name).first()
        held = list(self._rows(QueuedMessage).select_for_update().filter(consumer=name)
                    .order_by("id").only("id", "task_id", "deaths", "queue", "body"))
        running = marker.running_task if marker and marker.running_task else None
        fate = Fate.ACKED if running else Fate.NONE
        frame = next((m for m in held if marker and m.pk == marker.running_message), None)
        if frame is not None and marker is not None:
            held.remove(frame)
            if drop == running or not marker.redeliver:
                frame.delete()
                fate = Fate.DROPPED
            elif shutdown:
                fate = Fate.REQUEUED
                held.insert(0, frame)
            elif frame.deaths + 1 >= self.max_deaths:
                self._bury(frame.task_id, frame.queue, bytes(frame.body),
                           f"its executor died while running it {frame.deaths + 1} times")
                frame.delete()
                fate = Fate.DEAD
            else:
                frame.deaths += 1
                frame.save(update_fields=["deaths"])
                fate = Fate.REQUEUED
                held.insert(0, frame)
        self._rows(QueuedMessage).filter(pk__in=[m.pk for m in held]).update(consumer="")
        started = self._rows(StartedTask).filter(consumer=name)
        unsettled = [i for i in started.order_by("id").values_list("task_id", flat=True)
                     if i != running]
        started.delete()
        self._rows(BrokerConsumer).filter(name=name).delete()
        if held:
            self._notify(self.channel)
        requeued = [m.task_id for m in held if frame is None or m.pk != frame.pk]
        return Reaped(name, running, fate, requeued, unsettled)

    def _bury(self, task_id: str, queue: str, body: bytes, reason: str) -> None:
        letter_id = task_id
        letters = self._rows(StoredDeadLetter)
        if letters.filter(letter_id=letter_id).exists():  # keep both letters
            letter_id = f"{task_id}:{letters.count() + 1}"
            while letters.filter(letter_id=letter_id).exists():
                letter_id += "+"
        StoredDeadLetter.objects.using(self.alias).create(
            prefix=self.prefix, letter_id=letter_id, task_id=task_id, queue=queue, body=body,
            reason=reason, time=self.clock())

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        now = self.clock()
        with self._errors():
            counts = dict(self._rows(QueuedMessage).filter(queue__in=list(queues), consumer="")
                          .filter(Q(due__isnull=True) | Q(due__lte=now))
                          .values_list("queue").annotate(n=Count("id")).values_list("queue", "n"))
        return {q: counts.get(q, 0) for q in queues}

    def scheduled_count(self) -> int:
        with self._errors():
            return int(self._rows(QueuedMessage).filter(consumer="", due__gt=self.clock())
                       .count())

    def purge(self, queue: str) -> list[str]:
        now = self.clock()
        with self._write():
            # A locked row is being claimed right now: it is fetched, not
            # purged (SQLite has one writer at a time: nothing is locked).
            rows = list(self._rows(QueuedMessage).filter(queue=queue, consumer="")
                        .filter(Q(due__isnull=True) | Q(due__lte=now))
                        .select_for_update(skip_locked=True)
                        .order_by("-priority", "id").values_list("pk", "task_id"))
            if rows:
                self._rows(QueuedMessage).filter(pk__in=[pk for pk, _ in rows]).delete()
        return [task_id for _, task_id in rows]

    def in_flight(self, queues: Sequence[str]) -> dict[str, int]:
        with self._errors():
            counts = dict(self._rows(QueuedMessage).filter(queue__in=list(queues))
                          .exclude(consumer="").values_list("queue")
                          .annotate(n=Count("id")).values_list("queue", "n"))
        return {q: counts.get(q, 0) for q in queues}

    def ping(self) -> None:
        with self._errors(), self._cursor() as cursor:
            cursor.execute("SELECT 1")

    def close(self) -> None:
        """Nothing of its own to close: it uses Django's connections."""
