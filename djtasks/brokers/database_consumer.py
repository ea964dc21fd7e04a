"""The database broker's consumer handle: claiming, starting, acking and
giving back one executor's messages (docs/brokers.md, "Claiming")."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import connections

from ..exceptions import BrokerError
from .base import (
    MAX_BLOCK,
    Consumer,
    Delivery,
    Reaped,
    Started,
    WakeStart,
)
from .database_roles import PgListener
from .tables import (
    CONSUMER,
    OFFERED,
    QUEUE,
    READY,
    REVOCATION,
    STARTED,
    BrokerConsumer,
    QueuedMessage,
    marks,
)

if TYPE_CHECKING:
    from .database import DatabaseBroker

T = TypeVar("T")

# Bytes of body an offer carries at most: PostgreSQL refuses a NOTIFY
# payload of 8000 bytes or more, and the ids and queue name come with it.
MAX_OFFER = 7000


def offer_payload(task_id: str, queue: str, body: bytes) -> str:
    """An offer's NOTIFY payload after its row id, which the statement puts
    first: `` <len>:<task id><len>:<queue><body>`` (docs/brokers.md,
    "Offers"). The body is ASCII (``publish`` checks)."""
    return f" {len(task_id)}:{task_id}{len(queue)}:{queue}{body.decode('ascii')}"


def parse_offer(payload: str) -> tuple[int, str, str, bytes] | None:
    """``(row id, task id, queue, body)`` of an offer's payload; None for an
    empty payload (a plain wake) or one that is not an offer."""
    try:
        pk, rest = payload.split(" ", 1)
        fields = []
        for _ in range(2):  # the task id, then the queue
            size, rest = rest.split(":", 1)
            if not size.isdigit() or len(rest) < int(size):
                return None
            fields.append(rest[:int(size)])
            rest = rest[int(size):]
        return int(pk), fields[0], fields[1], rest.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        return None


class DatabaseConsumer(Consumer):
    """A consumer's handle: its claimed rows, its marker row and its lease."""

    def __init__(self, broker: DatabaseBroker, name: str, queues: list[str]) -> None:
        self.broker, self.name, self.queues = broker, name, queues
        self._rotation = 0
        self._wake: PgListener | None = None
        self._offers: dict[str, int] = {}  # offered, not yet taken: task id -> row id
        self._gone: set[str] = set()  # offered, and another consumer took them first

    def __repr__(self) -> str:
        return f"<DatabaseConsumer {self.name}>"

    def _mine(self) -> Any:
        return self.broker._rows(QueuedMessage).filter(consumer=self.name)

    def fetch(self, count: int, timeout: float, *,
              start: WakeStart | None = None) -> list[Delivery]:
        b = self.broker
        self._offers.clear()  # not taken: still in their queues
        self._gone.clear()
        # Rotate the queue order on each fetch so no queue starves another.
        self._rotation = (self._rotation + 1) % len(self.queues)
        ordered = [*self.queues[self._rotation:], *self.queues[:self._rotation]]
        deadline = time.monotonic() + timeout
        if timeout > 0:  # LISTEN before looking: no wake is missed
            if self._wake is None:
                self._wake = b._listener(b.channel)
            elif not self._wake.listening:
                self._on_listener(self._wake.listen)
            if self._wake is not None:
                # Notices that came while this consumer was busy name
                # messages the claim below finds anyway: drop them, so no
                # offer is stale.
                self._listen(0)
        while True:
            got = self._claim(count, ordered)
            remaining = deadline - time.monotonic()
            if got and timeout == 0 and self._wake is not None and self._wake.listening:
                # Busy with a backlog: its notices would pile up unread. If
                # the listener failed, it is closed instead (the next waiting
                # fetch opens one): either way nothing holds back VACUUM, and
                # what the claim took is handed over, never left held.
                with contextlib.suppress(BrokerError):
                    self._on_listener(self._wake.unlisten)
            if got or remaining <= 0:
                return got
            wait = min(remaining, MAX_BLOCK)
            with b._errors():
                due = b._sql(f"SELECT MIN(due) FROM {QUEUE} WHERE prefix = %s AND consumer = '' "
                             f"AND due > %s AND queue IN ({marks(self.queues)})",
                             [b.prefix, b.clock(), *self.queues])[0][0]
            if due is not None:  # a scheduled message comes due before the wait is over
                wait = min(wait, max(due - b.clock(), 0.001))
            if self._wake is not None:
                offer = self._offer(self._listen(wait))
                if offer is not None:
                    return [offer]
            else:
                time.sleep(min(wait, b.poll_interval))

    def _listen(self, timeout: float) -> list[str]:
        wake = self._wake
        assert wake is not None
        return self._on_listener(lambda: wake.payloads(timeout))

    def _on_listener(self, call: Callable[[], T]) -> T:
        """``call()``, a call on the LISTEN connection; if it fails, the
        connection is closed and forgotten, so the next waiting fetch opens
        a new one (and LISTENs before it looks), and ``BrokerError`` raised."""
        assert self._wake is not None
        try:
            return call()
        except BrokerError:
            self._wake.close()
            self._wake = None
            raise

    def _offer(self, payloads: list[str]) -> Delivery | None:
        """The message a lone notice offers, if it is one of this consumer's
        queues: handed over without a claim, to be taken by its start (one
        statement instead of two) or by whatever else is done with it first.
        Several notices at once mean several messages: a claim takes them in
        order instead."""
        if len(payloads) != 1 or (offer := parse_offer(payloads[0])) is None:
            return None
        pk, task_id, queue, body = offer
        if queue not in self.queues:
            return None
        self._offers[task_id] = pk
        return Delivery(task_id, queue, body, offered=True, token=str(pk))

    def hold(self, delivery: Delivery) -> bool:
        if not delivery.offered:
            return True
        if delivery.id in self._offers:
            return self._take(delivery.id)
        return delivery.id not in self._gone  # taken before, by this consumer or another

    def _take(self, task_id: str) -> bool:
        """Claim the offered message ``task_id`` (one statement): True if
        this consumer holds it now; False if another consumer took it or it
        is no longer ready. Only the executor's thread asks (never the
        result writer's)."""
        pk = self._offers.pop(task_id)
        b = self.broker
        try:
            with b._errors():
                taken = bool(b._sql(
                    f"WITH c AS MATERIALIZED ({OFFERED} FOR UPDATE SKIP LOCKED) UPDATE {QUEUE} "
                    f"AS q SET consumer = %(c)s FROM c WHERE q.id = c.id RETURNING q.id",
                    {"row": pk, "t": task_id, "p": b.prefix, "c": self.name,
                     "now": b.clock()}))
        except BrokerError:
            self._offers[task_id] = pk  # taken or not: asked again, the take is idempotent
            raise
        if not taken:
            self._gone.add(task_id)
        return taken

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
                           f"({marks(twins)})", [pk for pk, _, _ in twins])
                revoked = {r[0] for r in b._sql(
                    f"SELECT task_id FROM {REVOCATION} WHERE prefix = %s AND task_id IN "
                    f"({marks(take)})", [b.prefix, *[t for _, t, _ in take]])}
                if revoked:  # revoked while queued: never delivered, on any worker
                    gone = [t for t in take if t[1] in revoked]
                    b._sql(f"DELETE FROM {QUEUE} WHERE id IN ({marks(gone)})",
                           [pk for pk, _, _ in gone])
                for pk, task_id, body in take:
                    out.append(Delivery(task_id, queue, body, revoked=task_id in revoked,
                                        token=str(pk)))
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
        # Alone, the claim is its own transaction, and its commit need not
        # wait for the WAL flush (synchronous_commit off for that transaction
        # only): a claim lost by a PostgreSQL crash only makes the message
        # claimable again, and this consumer's start then finds it LOST. The
        # start, which keeps the promise, commits synchronously, flushing the
        # claim with it. Inside a caller's transaction (the inline executor
        # of djtasks.testing) the setting would be the caller's: not there.
        lazy = not connections[b.alias].in_atomic_block
        relaxed = ("lazy AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', "
                   "true)), " if lazy else "")
        for queue in ordered:
            if count <= 0:
                break
            rows = b._sql(
                f"WITH {relaxed}claim AS MATERIALIZED ({READY} FOR UPDATE SKIP LOCKED), "
                f"taken AS (UPDATE {QUEUE} AS q SET consumer = %s FROM claim WHERE "
                f"q.id = claim.id RETURNING q.id, q.task_id, q.priority, q.body) "
                f"SELECT taken.*, EXISTS (SELECT 1 FROM {REVOCATION} AS r WHERE r.prefix = %s "
                f"AND r.task_id = taken.task_id) FROM taken{', lazy' if lazy else ''} "
                f"ORDER BY taken.priority DESC, taken.id",
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
                out.append(Delivery(task_id, queue, bytes(body), revoked=revoked, token=str(pk)))
            if twins:
                b._sql(f"UPDATE {QUEUE} SET consumer = '' WHERE id IN ({marks(twins)})", twins)
            if gone:
                b._sql(f"DELETE FROM {QUEUE} WHERE id IN ({marks(gone)})", gone)
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
               f"({marks(locked)})", [self.name, *locked])
        return b._sql(f"SELECT id, task_id, priority, body FROM {QUEUE} WHERE consumer = %s "
                      f"AND id IN ({marks(locked)})", [self.name, *locked])

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = (), token: str = "") -> Started:
        b = self.broker
        acks = list(acks)
        mine = int(token) if token.isdigit() else None  # the message row this start is of
        if b.vendor == "postgresql":
            offer = self._offers.pop(task_id, None)
            try:
                with b._errors():
                    return self._start_pg(task_id, ack, redeliver, track, acks, offer, mine)
            except BrokerError:
                if offer is not None:  # started or not: asked again, it finds out
                    self._offers[task_id] = offer
                raise
        with b._write():
            found = b._sql(
                f"SELECT id, (SELECT COUNT(*) FROM {REVOCATION} WHERE prefix = %s AND "
                f"task_id = %s) FROM {QUEUE} WHERE prefix = %s AND consumer = %s AND "
                f"task_id = %s LIMIT 1", [b.prefix, task_id, b.prefix, self.name, task_id])
            pk, revoked = (found[0][0], bool(found[0][1])) if found else (None, False)
            gone = [pk] if pk is not None and (ack or revoked) else []
            if acks or gone:
                b._sql(f"DELETE FROM {QUEUE} WHERE prefix = %s AND consumer = %s AND "
                       f"(task_id IN ({marks(acks) if acks else 'NULL'}) OR id IN "
                       f"({marks(gone) if gone else 'NULL'}))",
                       [b.prefix, self.name, *acks, *gone])
            if pk is None:
                return Started.RUN if self._started_here(task_id, mine) else Started.LOST
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
                  acks: list[str], offer: int | None, mine: int | None) -> Started:
        """``start`` on PostgreSQL: one statement, so one round trip and its
        own transaction. The message row is locked first, so a reaper that
        is giving this consumer's messages back is waited for, and then the
        row is not found (LOST) instead of run twice. An offer (row
        ``offer``) is claimed by the same statement: deleted if acked now,
        else marked this consumer's; LOST if another consumer took it."""
        b = self.broker
        if offer is None:
            m, held = (f"SELECT id FROM {QUEUE} WHERE prefix = %(p)s AND consumer = %(c)s AND "
                       f"task_id = %(t)s LIMIT 1 FOR UPDATE"), ""
        else:
            # Not yet this consumer's, so ``gone`` (which must name the
            # consumer to use its index) does not see it: acked or revoked,
            # ``drop`` deletes it, else ``held`` makes it this consumer's.
            m = f"{OFFERED} FOR UPDATE SKIP LOCKED"
            held = (f"held AS (UPDATE {QUEUE} SET consumer = %(c)s WHERE NOT %(ack)s AND "
                    f"id IN (SELECT id FROM run)), "
                    f"drop AS (DELETE FROM {QUEUE} WHERE id IN (SELECT m.id FROM m, r WHERE "
                    f"%(ack)s OR r.revoked)), ")
        found = b._sql(
            f"WITH m AS MATERIALIZED ({m}), "
            f"r AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM {REVOCATION} WHERE prefix = %(p)s "
            f"AND task_id = %(t)s) AS revoked), "
            f"run AS MATERIALIZED (SELECT m.id FROM m, r WHERE NOT r.revoked), "
            f"gone AS (DELETE FROM {QUEUE} WHERE prefix = %(p)s AND consumer = %(c)s AND "
            f"(task_id = ANY(%(acks)s) OR id IN (SELECT m.id FROM m, r WHERE %(ack)s OR "
            f"r.revoked))), {held}"
            f"mark AS (UPDATE {CONSUMER} SET running_task = %(t)s, running_message = "
            f"(SELECT id FROM run), redeliver = %(rd)s WHERE prefix = %(p)s AND name = %(c)s "
            f"AND EXISTS (SELECT 1 FROM run) RETURNING 1), "
            f"track AS (INSERT INTO {STARTED} (prefix, consumer, task_id) SELECT %(p)s, %(c)s, "
            f"%(t)s FROM run WHERE %(track)s) "
            f"SELECT (SELECT id FROM m), (SELECT revoked FROM r), (SELECT COUNT(*) FROM mark), "
            # The marker as it was before this statement: this start asked again?
            f"EXISTS (SELECT 1 FROM {CONSUMER} WHERE prefix = %(p)s AND name = %(c)s AND "
            f"running_task = %(t)s AND running_message = %(mine)s)",
            {"p": b.prefix, "c": self.name, "t": task_id, "acks": acks, "ack": ack,
             "rd": redeliver, "track": track, "row": offer, "now": b.clock(), "mine": mine})
        pk, revoked, marked, again = found[0]
        if pk is None:
            if again:
                return Started.RUN  # see _started_here
            if offer is not None:
                self._gone.add(task_id)
            return Started.LOST
        if revoked:
            return Started.REVOKED
        if not marked:  # no marker row yet: this consumer's first start
            b._sql(f"INSERT INTO {CONSUMER} (running_task, running_message, redeliver, prefix, "
                   f"name) VALUES (%s, %s, %s, %s, %s)", [task_id, pk, redeliver, b.prefix,
                                                         self.name])
        return Started.RUN

    def _started_here(self, task_id: str, mine: int | None) -> bool:
        """Whether this consumer's marker names ``task_id`` in its message row
        ``mine`` (``Delivery.token``): a start that committed and whose reply
        was lost, asked again by the executor. A reaper deletes the marker."""
        if mine is None:
            return False
        b = self.broker
        return bool(b._sql(f"SELECT 1 FROM {CONSUMER} WHERE prefix = %s AND name = %s AND "
                           f"running_task = %s AND running_message = %s",
                           [b.prefix, self.name, task_id, mine]))

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
                       f"({marks(ids)})", [b.prefix, self.name, *ids])
            if settled:
                b._sql(f"DELETE FROM {STARTED} WHERE prefix = %s AND consumer = %s AND "
                       f"task_id IN ({marks(settled)})", [b.prefix, self.name, *settled])

    def requeue(self, ids: Iterable[str]) -> None:
        ids = [i for i in ids if self._offers.pop(i, None) is None]  # offers: still queued
        if ids:
            with self.broker._write():
                self._mine().filter(task_id__in=ids).update(consumer="")
                self.broker._notify(self.broker.channel)

    def defer(self, task_id: str, eta: float) -> None:
        if task_id in self._offers:
            self._take(task_id)
        with self.broker._write():
            self._mine().filter(task_id=task_id).update(consumer="", due=eta)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if not self.hold(delivery):
            return  # another consumer took the offer: it is that one's to judge
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
        self._offers.clear()
        self._gone.clear()
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        with self.broker._write():
            return self.broker._release(self.name, drop_running, shutdown)

