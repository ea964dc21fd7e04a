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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.db import DatabaseError, connections, transaction
from django.db.models import Count, Exists, OuterRef, Q

from ..exceptions import BrokerError
from ..message import Message
from . import envelope_priority
from .base import (
    Broker,
    Consumer,
    DeadLetter,
    Delivery,
    DoneListener,
    Fate,
    Held,
    Place,
    Reaped,
    Started,
)
from .tables import (
    BrokerConsumer,
    ChordMember,
    ChordState,
    Duty,
    QueuedMessage,
    RateBucket,
    Revocation,
    StartedTask,
    StoredDeadLetter,
    WorkerRecord,
)

MAX_BLOCK = 1.0  # seconds an idle fetch waits at most, so stop flags are seen
QUEUE = QueuedMessage._meta.db_table
CONSUMER = BrokerConsumer._meta.db_table
STARTED = StartedTask._meta.db_table
REVOCATION = Revocation._meta.db_table
# Ready messages of a queue a consumer may claim (params: prefix, queue, now,
# prefix, consumer, count): not a twin of one it holds, highest priority,
# oldest first. On PostgreSQL it is MATERIALIZED, so its LIMIT holds: an
# IN (subquery) may be planned as a join that runs it more than once.
READY = (f"SELECT id FROM {QUEUE} WHERE prefix = %s AND queue = %s AND consumer = '' "
         f"AND (due IS NULL OR due <= %s) AND task_id NOT IN (SELECT task_id FROM "
         f"{QUEUE} WHERE prefix = %s AND consumer = %s) ORDER BY priority DESC, id LIMIT %s")


def _marks(values: Sequence[Any]) -> str:
    """``%s, %s, ...``: one placeholder per value, for ``IN (...)``."""
    return ", ".join(["%s"] * len(values))
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

    def _sql(self, sql: str,
             params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the broker's connection; its rows, if any.
        The hot paths (publish, claim, start, ack) are plain SQL: building
        querysets cost more than the statements themselves."""
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

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
        now = self.clock()
        params: list[Any] = []
        for m, body in items:
            due = m.eta if m.eta is not None and m.eta > now else None
            params += [m.id, self.prefix, m.queue, m.priority, due, "", 0, body]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(items))
        insert = (f"INSERT INTO {QUEUE} (task_id, prefix, queue, priority, due, consumer, "
                  f"deaths, body) VALUES {values}")
        # One statement, in the caller's transaction when there is one (then
        # the row is there exactly if it commits), else a transaction of its
        # own: no BEGIN and COMMIT round trips. On PostgreSQL the NOTIFY
        # rides in it, and is delivered when it commits.
        with self._errors():
            if self.vendor == "postgresql":
                self._sql(f"WITH m AS ({insert}) SELECT pg_notify(%s, '')",
                          [*params, self.channel])
            else:
                self._sql(insert, params)

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
        with self._errors(), connections[self.alias].cursor() as cursor:
            cursor.execute("SELECT 1")

    def close(self) -> None:
        """Nothing of its own to close: it uses Django's connections."""

    # -- inspection ----------------------------------------------------------

    def locate(self, task_id: str, queues: Sequence[str]) -> list[Held]:
        now = self.clock()
        with self._errors():
            rows = list(self._rows(QueuedMessage).filter(task_id=task_id).order_by("id")
                        .values_list("queue", "due", "consumer"))
        scheduled = [Held(Place.SCHEDULED, q, eta=due) for q, due, c in rows
                     if not c and due is not None and due > now]
        fetched = [Held(Place.FETCHED, q, consumer=c) for q, _, c in rows if c]
        ready = [Held(Place.READY, q) for q, due, c in rows
                 if not c and (due is None or due <= now) and q in queues]
        return scheduled + fetched + ready

    def is_revoked(self, task_id: str) -> bool:
        with self._errors():
            return bool(self._rows(Revocation).filter(task_id=task_id).exists())

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

    # -- chords --------------------------------------------------------------

    def chord_members_done(self, chord_id: str, member_ids: Sequence[str], size: int,
                           ttl: float) -> bool:
        # The chord's row is locked first, so members finishing at once take
        # turns (no deadlock on MariaDB's gap locks) and exactly one of them
        # counts the last; member rows are unique, so a rerun adds nothing.
        now = self.clock()
        with self._errors():
            ChordState.objects.using(self.alias).get_or_create(
                prefix=self.prefix, chord_id=chord_id, defaults={"expires": now + ttl})
        with self._write():
            state = self._rows(ChordState).select_for_update().filter(chord_id=chord_id).first()
            if state is None:  # forgotten meanwhile: a rerun after the callback went
                state = ChordState.objects.using(self.alias).create(
                    prefix=self.prefix, chord_id=chord_id, expires=now + ttl)
            mine = self._rows(ChordMember).filter(chord_id=chord_id)
            new = set(member_ids) - set(mine.filter(member_id__in=list(member_ids))
                                        .values_list("member_id", flat=True))
            ChordMember.objects.using(self.alias).bulk_create(
                [ChordMember(prefix=self.prefix, chord_id=chord_id, member_id=m) for m in new])
            state.done += len(new)
            state.expires = now + ttl
            state.save(update_fields=["done", "expires"])
        return state.done >= size

    def forget_chord(self, chord_id: str) -> None:
        with self._write():
            self._rows(ChordMember).filter(chord_id=chord_id).delete()
            self._rows(ChordState).filter(chord_id=chord_id).delete()
            # Chords that failed or were abandoned go with the next one.
            stale = self._rows(ChordState).filter(expires__lt=self.clock())
            self._rows(ChordMember).filter(
                chord_id__in=list(stale.values_list("chord_id", flat=True)[:1000])).delete()
            stale.delete()

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

    def dead_letter_count(self) -> int:
        with self._errors():
            return int(self._rows(StoredDeadLetter).count())

    # -- result notices ------------------------------------------------------

    @property
    def exact_notices(self) -> bool:  # type: ignore[override]
        return self.vendor == "postgresql"

    def notify_done(self, ids: Sequence[str]) -> None:
        if ids and self.vendor == "postgresql":
            with self._errors():
                self._sql("SELECT pg_notify(%s, task_id) FROM unnest(%s::text[]) AS task_id",
                          [self.done_channel, list(ids)])

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
                due = b._sql(f"SELECT MIN(due) FROM {QUEUE} WHERE prefix = %s AND consumer = '' "
                             f"AND due > %s AND queue IN ({_marks(self.queues)})",
                             [b.prefix, b.clock(), *self.queues])[0][0]
            if due is not None:  # a scheduled message comes due before the wait is over
                wait = min(wait, max(due - b.clock(), 0.001))
            if self._wake is not None:
                self._wake.wait(wait, lambda payload: True)
            else:
                time.sleep(min(wait, b.poll_interval))

    def _claim(self, count: int, ordered: list[str]) -> list[Delivery]:
        b = self.broker
        if b.vendor == "postgresql":
            with b._errors():
                return self._claim_pg(count, ordered)
        now = b.clock()
        out: list[Delivery] = []
        with b._write():
            for queue in ordered:
                if count <= 0:
                    break
                rows = self._claim_queue(queue, count, now)
                if not rows:
                    continue
                rows.sort(key=lambda r: (-r[2], r[0]))  # highest priority, then oldest
                seen: set[str] = set()
                take: list[tuple[Any, str, bytes]] = []
                twins: list[tuple[Any, str, bytes]] = []
                for pk, task_id, _, body in rows:
                    (twins if task_id in seen else take).append((pk, task_id, bytes(body)))
                    seen.add(task_id)
                if twins:  # a second message with one id waits its turn
                    b._sql(f"UPDATE {QUEUE} SET consumer = '' WHERE id IN "
                           f"({_marks(twins)})", [pk for pk, _, _ in twins])
                revoked = {r[0] for r in b._sql(
                    f"SELECT task_id FROM {REVOCATION} WHERE prefix = %s AND task_id IN "
                    f"({_marks(take)})", [b.prefix, *[t for _, t, _ in take]])}
                if revoked:  # revoked while queued: never delivered, on any worker
                    gone = [t for t in take if t[1] in revoked]
                    b._sql(f"DELETE FROM {QUEUE} WHERE id IN ({_marks(gone)})",
                           [pk for pk, _, _ in gone])
                for _, task_id, body in take:
                    out.append(Delivery(task_id, queue, body, revoked=task_id in revoked))
                count -= len(take) - len(revoked)
        return sorted(out, key=lambda d: d.revoked)  # the revoked ones last

    def _claim_pg(self, count: int, ordered: list[str]) -> list[Delivery]:
        """PostgreSQL: each queue's claim is one statement in a transaction
        of its own, which also says which claimed messages are revoked. A
        twin or a revoked message is then given back or deleted by a second
        statement: until it is, it is held by this consumer, whose release
        or reaper gives it back if it dies in between."""
        b = self.broker
        out: list[Delivery] = []
        for queue in ordered:
            if count <= 0:
                break
            rows = b._sql(
                f"WITH claim AS MATERIALIZED ({READY} FOR UPDATE SKIP LOCKED), "
                f"taken AS (UPDATE {QUEUE} AS q SET consumer = %s FROM claim WHERE "
                f"q.id = claim.id RETURNING q.id, q.task_id, q.priority, q.body) "
                f"SELECT taken.*, EXISTS (SELECT 1 FROM {REVOCATION} AS r WHERE r.prefix = %s "
                f"AND r.task_id = taken.task_id) FROM taken ORDER BY taken.priority DESC, "
                f"taken.id",
                [b.prefix, queue, b.clock(), b.prefix, self.name, count, self.name, b.prefix])
            seen: set[str] = set()
            twins, gone = [], []
            for pk, task_id, _, body, revoked in rows:
                if task_id in seen:  # a second message with one id waits its turn
                    twins.append(pk)
                    continue
                seen.add(task_id)
                if revoked:  # revoked while queued: never delivered, on any worker
                    gone.append(pk)
                else:
                    count -= 1
                out.append(Delivery(task_id, queue, bytes(body), revoked=revoked))
            if twins:
                b._sql(f"UPDATE {QUEUE} SET consumer = '' WHERE id IN ({_marks(twins)})", twins)
            if gone:
                b._sql(f"DELETE FROM {QUEUE} WHERE id IN ({_marks(gone)})", gone)
        return sorted(out, key=lambda d: d.revoked)  # the revoked ones last

    def _claim_queue(self, queue: str, count: int, now: float) -> list[tuple[Any, ...]]:
        """Claim up to ``count`` ready messages of ``queue``: (id, task_id,
        priority, body) rows. A twin of a message this consumer holds is not
        taken; the conditional UPDATE is the claim, so a row another
        consumer took meanwhile is never taken again."""
        b = self.broker
        ready = READY
        params = [b.prefix, queue, now, b.prefix, self.name, count]
        if b.vendor == "sqlite":  # one writer at a time (BEGIN IMMEDIATE)
            return b._sql(f"UPDATE {QUEUE} SET consumer = %s WHERE consumer = '' AND id IN "
                          f"({ready}) RETURNING id, task_id, priority, body",
                          [self.name, *params])
        # MariaDB and MySQL have no UPDATE ... RETURNING: lock, then mark.
        locked = [r[0] for r in b._sql(ready + " FOR UPDATE SKIP LOCKED", params)]
        if not locked:
            return []
        b._sql(f"UPDATE {QUEUE} SET consumer = %s WHERE consumer = '' AND id IN "
               f"({_marks(locked)})", [self.name, *locked])
        return b._sql(f"SELECT id, task_id, priority, body FROM {QUEUE} WHERE consumer = %s "
                      f"AND id IN ({_marks(locked)})", [self.name, *locked])

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = ()) -> Started:
        b = self.broker
        acks = list(acks)
        if b.vendor == "postgresql":
            with b._errors():
                return self._start_pg(task_id, ack, redeliver, track, acks)
        with b._write():
            found = b._sql(
                f"SELECT id, (SELECT COUNT(*) FROM {REVOCATION} WHERE prefix = %s AND "
                f"task_id = %s) FROM {QUEUE} WHERE prefix = %s AND consumer = %s AND "
                f"task_id = %s LIMIT 1", [b.prefix, task_id, b.prefix, self.name, task_id])
            pk, revoked = (found[0][0], bool(found[0][1])) if found else (None, False)
            gone = [pk] if pk is not None and (ack or revoked) else []
            if acks or gone:
                b._sql(f"DELETE FROM {QUEUE} WHERE prefix = %s AND consumer = %s AND "
                       f"(task_id IN ({_marks(acks) if acks else 'NULL'}) OR id IN "
                       f"({_marks(gone) if gone else 'NULL'}))",
                       [b.prefix, self.name, *acks, *gone])
            if pk is None:
                return Started.LOST
            if revoked:
                return Started.REVOKED
            marker = [task_id, pk, redeliver, b.prefix, self.name]
            if not b._count(f"UPDATE {CONSUMER} SET running_task = %s, running_message = %s, "
                            f"redeliver = %s WHERE prefix = %s AND name = %s", marker):
                b._sql(f"INSERT INTO {CONSUMER} (running_task, running_message, redeliver, "
                       f"prefix, name) VALUES (%s, %s, %s, %s, %s)", marker)
            if track:
                b._sql(f"INSERT INTO {STARTED} (prefix, consumer, task_id) VALUES (%s, %s, %s)",
                       [b.prefix, self.name, task_id])
        return Started.RUN

    def _start_pg(self, task_id: str, ack: bool, redeliver: bool, track: bool,
                  acks: list[str]) -> Started:
        """``start`` on PostgreSQL: one statement, so one round trip and its
        own transaction. The message row is locked first, so a reaper that
        is giving this consumer's messages back is waited for, and then the
        row is not found (LOST) instead of run twice."""
        b = self.broker
        found = b._sql(
            f"WITH m AS MATERIALIZED (SELECT id FROM {QUEUE} WHERE prefix = %(p)s AND "
            f"consumer = %(c)s AND task_id = %(t)s LIMIT 1 FOR UPDATE), "
            f"r AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM {REVOCATION} WHERE prefix = %(p)s "
            f"AND task_id = %(t)s) AS revoked), "
            f"run AS MATERIALIZED (SELECT m.id FROM m, r WHERE NOT r.revoked), "
            f"gone AS (DELETE FROM {QUEUE} WHERE prefix = %(p)s AND consumer = %(c)s AND "
            f"(task_id = ANY(%(acks)s) OR id IN (SELECT m.id FROM m, r WHERE %(ack)s OR "
            f"r.revoked))), "
            f"mark AS (UPDATE {CONSUMER} SET running_task = %(t)s, running_message = "
            f"(SELECT id FROM run), redeliver = %(rd)s WHERE prefix = %(p)s AND name = %(c)s "
            f"AND EXISTS (SELECT 1 FROM run) RETURNING 1), "
            f"track AS (INSERT INTO {STARTED} (prefix, consumer, task_id) SELECT %(p)s, %(c)s, "
            f"%(t)s FROM run WHERE %(track)s) "
            f"SELECT (SELECT id FROM m), (SELECT revoked FROM r), (SELECT COUNT(*) FROM mark)",
            {"p": b.prefix, "c": self.name, "t": task_id, "acks": acks, "ack": ack,
             "rd": redeliver, "track": track})
        pk, revoked, marked = found[0]
        if pk is None:
            return Started.LOST
        if revoked:
            return Started.REVOKED
        if not marked:  # no marker row yet: this consumer's first start
            b._sql(f"INSERT INTO {CONSUMER} (running_task, running_message, redeliver, prefix, "
                   f"name) VALUES (%s, %s, %s, %s, %s)", [task_id, pk, redeliver, b.prefix,
                                                         self.name])
        return Started.RUN

    def ack(self, ids: Iterable[str], *, settled: Iterable[str] = ()) -> None:
        ids, settled = list(ids), list(settled)
        if not ids and not settled:
            return
        b = self.broker
        if b.vendor == "postgresql":  # one statement: its own transaction
            with b._errors():
                b._sql(f"WITH a AS (DELETE FROM {QUEUE} WHERE prefix = %(p)s AND consumer = "
                       f"%(c)s AND task_id = ANY(%(ids)s)) DELETE FROM {STARTED} WHERE "
                       f"prefix = %(p)s AND consumer = %(c)s AND task_id = ANY(%(settled)s)",
                       {"p": b.prefix, "c": self.name, "ids": ids, "settled": settled})
            return
        with b._write():
            if ids:
                b._sql(f"DELETE FROM {QUEUE} WHERE prefix = %s AND consumer = %s AND task_id IN "
                       f"({_marks(ids)})", [b.prefix, self.name, *ids])
            if settled:
                b._sql(f"DELETE FROM {STARTED} WHERE prefix = %s AND consumer = %s AND "
                       f"task_id IN ({_marks(settled)})", [b.prefix, self.name, *settled])

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

