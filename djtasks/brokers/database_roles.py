"""The database broker's connection helpers, its roles (inspection,
revocations, rate limits, workers, chords, dead letters, result notices)
and its LISTEN connections. ``DatabaseBroker`` (database.py) adds the
transport; docs/brokers.md says how it works."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import Exists, OuterRef

from ..exceptions import BrokerError
from ..sql import cursor as sql_cursor
from ..sql import pooler_hint
from . import envelope_priority
from .base import (
    Broker,
    DeadLetter,
    DoneListener,
    Held,
    Place,
)
from .tables import (
    BrokerConsumer,
    ChordMember,
    ChordState,
    Duty,
    QueuedMessage,
    RateBucket,
    Revocation,
    StoredDeadLetter,
    WorkerRecord,
)


class DatabaseRoles(Broker):
    """What ``DatabaseBroker`` does besides moving messages: the plumbing
    every statement goes through and the role interfaces of brokers/base.py."""

    alias: str
    prefix: str
    channel: str  # NOTIFY: a message may be ready
    done_channel: str  # NOTIFY: a task has a new state
    poll_interval: float

    # -- plumbing ------------------------------------------------------------

    @property
    def vendor(self) -> str:
        return connections[self.alias].vendor

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DatabaseError as exc:
            raise BrokerError(f"the database {self.alias!r} refused: {exc}"
                              f"{pooler_hint(exc)}") from exc

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
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.rowcount)

    def _cursor(self) -> Any:
        """A cursor on the broker's connection (``djtasks.sql.cursor``: on
        PostgreSQL, its statements are prepared)."""
        return sql_cursor(self.alias)

    def _notify(self, channel: str, payload: str = "") -> None:
        if self.vendor == "postgresql":
            with self._cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])

    def _listener(self, *channels: str) -> PgListener | None:
        return PgListener(self, channels) if self.vendor == "postgresql" else None


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
        return DoneNotices(self, task_id)



class PgListener:
    """A connection of its own that LISTENs on PostgreSQL channels."""

    def __init__(self, broker: DatabaseRoles, channels: Iterable[str]) -> None:
        import psycopg

        params = connections[broker.alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        self.alias, self.channels = broker.alias, list(channels)
        self.lock = threading.Lock()
        try:
            self.conn = psycopg.connect(**params, autocommit=True)
        except psycopg.Error as exc:
            raise BrokerError(f"could not LISTEN on {broker.alias!r}: {exc}") from exc
        self.listening = False
        try:
            self.listen()
        except BrokerError:
            self.close()
            raise

    def listen(self) -> None:
        """LISTEN on the channels (again, after ``unlisten``)."""
        self._execute(*[f'LISTEN "{channel}"' for channel in self.channels])
        self.listening = True

    def unlisten(self) -> None:
        """Stop receiving notices until ``listen``. A listener that is not
        read falls behind: once its socket is full, its PostgreSQL backend
        waits, holding a snapshot, which keeps VACUUM and the pruning of
        the queue table's dead rows from advancing (docs/brokers.md,
        "Waking"). The notices read on the way are dropped, not kept in
        psycopg's backlog: they name messages a claim finds anyway."""
        def drop(notice: Any) -> None:
            pass

        self.conn.add_notify_handler(drop)
        try:
            self._execute("UNLISTEN *")
        finally:
            self.conn.remove_notify_handler(drop)
        self.listening = False

    def _execute(self, *statements: str) -> None:
        import psycopg

        with self.lock:
            try:
                for statement in statements:
                    self.conn.execute(statement)
            except psycopg.Error as exc:
                raise BrokerError(f"could not LISTEN on {self.alias!r}: {exc}") from exc

    def wait(self, timeout: float, wanted: Callable[[str], bool]) -> bool:
        """True once a notice whose payload ``wanted(payload)`` accepts
        arrives within ``timeout`` seconds. Raises ``BrokerError``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if any(wanted(payload) for payload in self.payloads(remaining)):
                return True
        return False

    def payloads(self, timeout: float) -> list[str]:
        """The payloads of the first notices to arrive within ``timeout``
        seconds and of those already waiting behind them; [] if none came."""
        import psycopg

        with self.lock:
            try:
                got = [n.payload for n in self.conn.notifies(timeout=timeout, stop_after=1)]
                if got:
                    got += [n.payload for n in self.conn.notifies(timeout=0)]
            except psycopg.Error as exc:
                raise BrokerError(f"the LISTEN connection failed: {exc}") from exc
            return got

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class DoneNotices(DoneListener):
    """PostgreSQL: a LISTEN on the done channel. Elsewhere: a pause of the
    poll interval, after which ``AsyncResult.get`` reads the row again."""

    def __init__(self, broker: DatabaseRoles, task_id: str) -> None:
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


