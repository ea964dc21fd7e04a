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

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.db import DatabaseError, connections, transaction
from django.db.models import Count, Exists, Min, OuterRef, Q

from ..exceptions import BrokerError
from ..message import Message
from . import envelope_priority
from .base import Broker, Consumer, DeadLetter, Delivery, DoneListener, Fate, Reaped, Started
from .tables import (
    BrokerConsumer,
    Duty,
    QueuedMessage,
    RateBucket,
    Revocation,
    StartedTask,
    StoredDeadLetter,
    WorkerRecord,
)

MAX_BLOCK = 1.0  # seconds an idle fetch waits at most, so stop flags are seen
REVOKE_MEMORY = 86400.0  # seconds a revocation is kept past its score


class DatabaseBroker(Broker):
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

    # -- plumbing ------------------------------------------------------------

    @property
    def vendor(self) -> str:
        return connections[self.alias].vendor

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DatabaseError as exc:
            raise BrokerError(f"the database {self.alias!r} refused: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A short write transaction. On SQLite it takes the write lock at
        ``BEGIN IMMEDIATE``: two deferred readers upgrading would deadlock."""
        with self._errors():
            conn = connections[self.alias]
            if conn.vendor != "sqlite" or conn.in_atomic_block:
                with transaction.atomic(using=self.alias):
                    yield
                return
            conn.ensure_connection()
            mode = conn.transaction_mode  # DATABASES OPTIONS "transaction_mode"
            conn.transaction_mode = "IMMEDIATE"
            try:
                with transaction.atomic(using=self.alias):
                    conn.transaction_mode = mode  # BEGIN IMMEDIATE was sent
                    yield
            finally:
                conn.transaction_mode = mode

    def _rows(self, model: Any) -> Any:
        return model.objects.using(self.alias).filter(prefix=self.prefix)

    def _notify(self, channel: str, payload: str = "") -> None:
        if self.vendor == "postgresql":
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])

    def _listener(self, *channels: str) -> _PgListener | None:
        return _PgListener(self, channels) if self.vendor == "postgresql" else None

    # -- transport -----------------------------------------------------------

    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        if not items:
            return
        with self._errors(), transaction.atomic(using=self.alias):
            now = self.clock()
            QueuedMessage.objects.using(self.alias).bulk_create([
                QueuedMessage(task_id=m.id, prefix=self.prefix, queue=m.queue,
                              priority=m.priority, body=body,
                              due=m.eta if m.eta is not None and m.eta > now else None)
                for m, body in items
            ])
            self._notify(self.channel)  # delivered when the transaction commits

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

    def ping(self) -> None:
        with self._errors(), connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT 1")

    def close(self) -> None:
        """Nothing of its own to close: it uses Django's connections."""

    # -- revocations ---------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        now = self.clock()
        ids = list(task_ids)
        with self._write():
            etas: dict[str, float] = {}
            for task_id, due in self._rows(QueuedMessage).filter(
                    task_id__in=ids, due__gt=now).values_list("task_id", "due"):
                etas[task_id] = max(etas.get(task_id, 0.0), due)
            for task_id in ids:
                score = max(now, etas.get(task_id, 0.0))
                row, made = Revocation.objects.using(self.alias).get_or_create(
                    prefix=self.prefix, task_id=task_id,
                    defaults={"score": score, "terminate": terminate})
                if not made:
                    row.score, row.terminate = max(row.score, score), row.terminate or terminate
                    row.save(update_fields=["score", "terminate"])
            running = set(self._rows(BrokerConsumer).filter(running_task__in=ids)
                          .values_list("running_task", flat=True))
        return [i for i in ids if i not in running]

    def to_terminate(self, consumers: Sequence[str]) -> dict[str, str]:
        if not consumers:
            return {}
        doomed = self._rows(Revocation).filter(terminate=True, task_id=OuterRef("running_task"))
        with self._errors():
            return dict(self._rows(BrokerConsumer).filter(name__in=list(consumers))
                        .filter(Exists(doomed)).values_list("name", "running_task"))

    # -- rate limits ---------------------------------------------------------

    def take_token(self, name: str, rate: float) -> float:
        # The token bucket of lua/rate.lua.
        now = self.clock()
        capacity = max(rate, 1)
        with self._write():
            RateBucket.objects.using(self.alias).get_or_create(
                prefix=self.prefix, name=name, defaults={"tokens": capacity, "ts": now})
            bucket = self._rows(RateBucket).select_for_update().get(name=name)
            tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.ts) * rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            bucket.tokens, bucket.ts = (tokens - 1 if wait == 0 else tokens), now
            bucket.save(update_fields=["tokens", "ts"])
        return wait

    # -- workers -------------------------------------------------------------

    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        with self._errors():
            WorkerRecord.objects.using(self.alias).update_or_create(
                prefix=self.prefix, name=name, defaults={"info": info})

    def unregister_worker(self, name: str) -> None:
        with self._errors():
            self._rows(WorkerRecord).filter(name=name).delete()

    def workers(self) -> dict[str, dict[str, Any]]:
        with self._errors():
            return dict(self._rows(WorkerRecord).values_list("name", "info"))

    def lead(self, duty: str, holder: str, ttl: float) -> bool:
        now = self.clock()
        with self._write():
            row, made = Duty.objects.using(self.alias).get_or_create(
                prefix=self.prefix, name=duty, defaults={"holder": holder, "until": now + ttl})
            if made:
                return True
            row = self._rows(Duty).select_for_update().get(pk=row.pk)
            if row.holder != holder and row.until > now:
                return False
            row.holder, row.until = holder, now + ttl
            row.save(update_fields=["holder", "until"])
        return True

    # -- dead letters --------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        with self._errors():
            return [DeadLetter(d.letter_id, d.queue, bytes(d.body), d.reason, d.time)
                    for d in self._rows(StoredDeadLetter).order_by("-time", "-id")]

    def requeue_dead_letter(self, letter_id: str) -> bool:
        with self._write():
            letter = self._rows(StoredDeadLetter).select_for_update().filter(
                letter_id=letter_id).first()
            if letter is None:
                return False
            body = bytes(letter.body)
            QueuedMessage.objects.using(self.alias).create(
                task_id=letter.task_id, prefix=self.prefix, queue=letter.queue,
                priority=envelope_priority(body), body=body)
            letter.delete()
            self._notify(self.channel)
        return True

    def delete_dead_letter(self, letter_id: str) -> bool:
        with self._errors():
            return bool(self._rows(StoredDeadLetter).filter(letter_id=letter_id).delete()[0])

    # -- result notices ------------------------------------------------------

    @property
    def exact_notices(self) -> bool:  # type: ignore[override]
        return self.vendor == "postgresql"

    def notify_done(self, ids: Sequence[str]) -> None:
        if ids and self.vendor == "postgresql":
            with self._errors(), connections[self.alias].cursor() as cursor:
                for task_id in ids:
                    cursor.execute("SELECT pg_notify(%s, %s)", [self.done_channel, task_id])

    def listen_done(self, task_id: str) -> DoneListener:
        return _DoneListener(self, task_id)


class DatabaseConsumer(Consumer):
    """A consumer's handle: its claimed rows, its marker row and its lease."""

    def __init__(self, broker: DatabaseBroker, name: str, queues: list[str]) -> None:
        self.broker, self.name, self.queues = broker, name, queues
        self._rotation = 0
        self._wake: _PgListener | None = None

    def __repr__(self) -> str:
        return f"<DatabaseConsumer {self.name}>"

    def _mine(self) -> Any:
        return self.broker._rows(QueuedMessage).filter(consumer=self.name)

    def fetch(self, count: int, timeout: float) -> list[Delivery]:
        b = self.broker
        # Rotate the queue order on each fetch so no queue starves another.
        self._rotation = (self._rotation + 1) % len(self.queues)
        ordered = [*self.queues[self._rotation:], *self.queues[:self._rotation]]
        deadline = time.monotonic() + timeout
        if timeout > 0 and self._wake is None:
            self._wake = b._listener(b.channel)  # LISTEN before looking: no wake is missed
        while True:
            got = self._claim(count, ordered)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            wait = min(remaining, MAX_BLOCK)
            with b._errors():
                due = (b._rows(QueuedMessage).filter(queue__in=self.queues, consumer="",
                                                    due__gt=b.clock())
                       .aggregate(due=Min("due"))["due"])
            if due is not None:  # a scheduled message comes due before the wait is over
                wait = min(wait, max(due - b.clock(), 0.001))
            if self._wake is not None:
                self._wake.wait(wait, lambda payload: True)
            else:
                time.sleep(min(wait, b.poll_interval))

    def _claim(self, count: int, ordered: list[str]) -> list[Delivery]:
        b = self.broker
        rows = b._rows(QueuedMessage)
        now = b.clock()
        out: list[Delivery] = []
        revoked: list[Delivery] = []
        with b._write():
            held = self._mine().values("task_id")
            for queue in ordered:
                if count <= 0:
                    break
                # A twin of a message this consumer holds waits its turn.
                candidates = list(
                    rows.filter(queue=queue, consumer="")
                    .filter(Q(due__isnull=True) | Q(due__lte=now))
                    .exclude(task_id__in=held).order_by("-priority", "id")
                    .select_for_update(skip_locked=True)
                    .annotate(revoked=Exists(b._rows(Revocation).filter(
                        task_id=OuterRef("task_id"))))
                    .values_list("id", "task_id", "body", "revoked")[:count])
                seen: set[str] = set()
                take, drop = [], []
                for pk, task_id, body, is_revoked in candidates:
                    if is_revoked:
                        drop.append(pk)
                        revoked.append(Delivery(task_id, queue, bytes(body), revoked=True))
                    elif task_id not in seen:
                        seen.add(task_id)
                        take.append((pk, task_id, bytes(body)))
                if drop:
                    rows.filter(pk__in=drop).delete()
                if take:
                    # The conditional UPDATE is the claim: a row another
                    # consumer took meanwhile is not taken again.
                    pks = [pk for pk, _, _ in take]
                    claimed = rows.filter(pk__in=pks, consumer="").update(consumer=self.name)
                    if claimed < len(pks):
                        mine = set(self._mine().filter(pk__in=pks).values_list("pk", flat=True))
                        take = [t for t in take if t[0] in mine]
                    out += [Delivery(task_id, queue, body) for _, task_id, body in take]
                    count -= len(take)
        return out + revoked

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = ()) -> Started:
        b = self.broker
        acks = list(acks)
        with b._write():
            found = (self._mine().filter(task_id=task_id)
                     .annotate(revoked=Exists(b._rows(Revocation).filter(task_id=task_id)))
                     .values_list("id", "revoked").first())
            gone = acks + ([task_id] if found and (ack or found[1]) else [])
            if gone:
                self._mine().filter(task_id__in=gone).delete()
            if found is None:
                return Started.LOST
            if found[1]:
                return Started.REVOKED
            marked = b._rows(BrokerConsumer).filter(name=self.name).update(
                running_task=task_id, running_message=found[0], redeliver=redeliver)
            if not marked:
                BrokerConsumer.objects.using(b.alias).create(
                    prefix=b.prefix, name=self.name, running_task=task_id,
                    running_message=found[0], redeliver=redeliver)
            if track:
                StartedTask.objects.using(b.alias).create(prefix=b.prefix, consumer=self.name,
                                                          task_id=task_id)
        return Started.RUN

    def ack(self, ids: Iterable[str], *, settled: Iterable[str] = ()) -> None:
        ids, settled = list(ids), list(settled)
        if not ids and not settled:
            return
        b = self.broker
        with b._write():
            if ids:
                self._mine().filter(task_id__in=ids).delete()
            if settled:
                b._rows(StartedTask).filter(consumer=self.name, task_id__in=settled).delete()

    def requeue(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            with self.broker._write():
                self._mine().filter(task_id__in=ids).update(consumer="")
                self.broker._notify(self.broker.channel)

    def defer(self, task_id: str, eta: float) -> None:
        with self.broker._write():
            self._mine().filter(task_id=task_id).update(consumer="", due=eta)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self.broker._write():
            self.broker._bury(delivery.id, delivery.queue, delivery.body, reason)
            self._mine().filter(task_id=delivery.id).delete()

    def renew(self, lease: float) -> None:
        b = self.broker
        with b._errors():
            until = b.clock() + lease
            if not b._rows(BrokerConsumer).filter(name=self.name).update(lease_until=until):
                BrokerConsumer.objects.using(b.alias).update_or_create(
                    prefix=b.prefix, name=self.name, defaults={"lease_until": until})

    def release(self, *, drop_running: str | None = None, shutdown: bool = False) -> Reaped:
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        with self.broker._write():
            return self.broker._release(self.name, drop_running, shutdown)


class _PgListener:
    """A connection of its own that LISTENs on PostgreSQL channels."""

    def __init__(self, broker: DatabaseBroker, channels: Iterable[str]) -> None:
        import psycopg

        params = connections[broker.alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        try:
            self.conn = psycopg.connect(**params, autocommit=True)
            for channel in channels:
                self.conn.execute(f'LISTEN "{channel}"')
        except psycopg.Error as exc:
            raise BrokerError(f"could not LISTEN on {broker.alias!r}: {exc}") from exc
        self.lock = threading.Lock()

    def wait(self, timeout: float, wanted: Any) -> bool:
        """True once a notice whose payload ``wanted(payload)`` accepts arrives."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while (remaining := deadline - time.monotonic()) > 0:
                for notice in self.conn.notifies(timeout=remaining, stop_after=1):
                    if wanted(notice.payload):
                        return True
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class _DoneListener(DoneListener):
    """PostgreSQL: a LISTEN on the done channel. Elsewhere: a pause of the
    poll interval, after which ``AsyncResult.get`` reads the row again."""

    def __init__(self, broker: DatabaseBroker, task_id: str) -> None:
        self.broker, self.task_id = broker, task_id
        self.listener = broker._listener(broker.done_channel)

    def wait(self, timeout: float) -> bool:
        if self.listener is None:
            time.sleep(min(timeout, self.broker.poll_interval))
            return False
        return self.listener.wait(timeout, lambda payload: payload == self.task_id)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()

