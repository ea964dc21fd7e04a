"""The memory broker: the whole contract in one process, for tests.

Everything lives in Python objects under one lock, with the same semantics
as the Redis broker (djtasks/brokers/redis.py), so a test's enqueue and an
in-process worker share real queues. Nothing crosses processes.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..message import Message
from . import envelope_priority
from .base import (
    PRIORITIES,
    REVOKE_MEMORY,
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
    WakeStart,
)

_shared: dict[tuple[int, str, str], MemoryBroker] = {}
_shared_lock = threading.Lock()


def shared_broker(url: str, key_prefix: str, max_deaths: int = 3) -> MemoryBroker:
    """The one memory broker of this process for ``url`` and ``key_prefix``,
    so every ``make_broker()`` (the caller's enqueue, an in-process worker)
    sees the same queues. A forked child starts with an empty one."""
    key = (os.getpid(), url, key_prefix)
    with _shared_lock:
        broker = _shared.get(key)
        if broker is None:
            broker = _shared[key] = MemoryBroker(url)
        broker.max_deaths = max_deaths
        return broker


def discard_shared_broker(url: str, key_prefix: str) -> None:
    """Forget this process's memory broker for ``url`` and ``key_prefix``
    and everything in it (``djtasks.testing``, at the end of a capture)."""
    with _shared_lock:
        broker = _shared.pop((os.getpid(), url, key_prefix), None)
    if broker is not None:
        broker.reset()


_FRAMES = itertools.count(1)  # numbers each frame: its Delivery.token


@dataclass(eq=False, slots=True)
class _Frame:
    """One published message. Compared by identity: a retry with the same
    id is another frame (Redis compares the sha1 of the frame)."""

    id: str
    queue: str
    priority: int
    body: bytes
    # Its Delivery.token: which frame a start asked again had started.
    seq: int = field(default_factory=lambda: next(_FRAMES))


@dataclass(slots=True)
class _Running:
    """What a consumer started last: the reaper's view of what died with it."""

    id: str
    redeliver: bool
    frame: _Frame


class MemoryBroker(Broker):
    """A broker in this process's memory, for tests and ``djtasks.testing``.

    Thread-safe: consumers in threads of this process block in ``fetch`` and
    wake on publish. It holds nothing across processes (a worker subprocess
    or a prefork child sees none of it). ``close()`` keeps the state;
    ``reset()`` forgets it.
    """

    def __init__(self, url: str = "memory://", *, max_deaths: int = 3) -> None:
        self.url = url
        self.max_deaths = max_deaths
        self._cond = threading.Condition()
        self.reset()

    def reset(self) -> None:
        """Forget every message, consumer, dead letter, revocation and worker."""
        with self._cond:
            self._lists: dict[tuple[str, int], deque[_Frame]] = {}
            self._scheduled: list[tuple[float, int, _Frame]] = []  # heap by eta
            self._seq = itertools.count()  # ties in the heap: first scheduled first
            self._inflight: dict[str, dict[str, _Frame]] = {}
            self._leases: dict[str, float] = {}
            self._running: dict[str, _Running] = {}
            self._started: dict[str, dict[str, None]] = {}  # an ordered set per consumer
            self._dead: dict[str, tuple[str, DeadLetter]] = {}  # key -> (message id, letter)
            self._letters = 0
            self._revoked: dict[str, float] = {}  # id -> later of revoke time and eta
            self._terminate: dict[str, float] = {}
            self._deaths: dict[str, int] = {}
            self._workers: dict[str, str] = {}
            self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, ts)
            # (id, created) of each message given -> the later of created and eta
            self._published: dict[tuple[str, float], float] = {}
            self._duties: dict[str, tuple[str, float]] = {}  # duty -> (holder, until)
            self._listeners: dict[str, set[_MemoryDoneListener]] = {}
            self._chords: dict[str, tuple[set[str], float]] = {}  # id -> (members, expiry)

    def _push(self, frame: _Frame, *, front: bool = False) -> None:
        lst = self._lists.setdefault((frame.queue, frame.priority), deque())
        if front:
            lst.appendleft(frame)
        else:
            lst.append(frame)
        self._cond.notify_all()

    def _schedule(self, frame: _Frame, eta: float) -> None:
        heapq.heappush(self._scheduled, (eta, next(self._seq), frame))
        self._cond.notify_all()  # a waiting fetch may need to wake sooner

    def _move_due(self, now: float) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            self._push(heapq.heappop(self._scheduled)[2])

    def _bury(self, message_id: str, queue: str, body: bytes, reason: str) -> None:
        key = message_id
        if key in self._dead:  # keep both letters
            self._letters += 1
            key = f"{message_id}:{self._letters}"
        self._dead[key] = (message_id, DeadLetter(key, queue, body, reason, self.clock()))

    def _died(self, task_id: str, frame: _Frame) -> bool:
        """Count a death of an executor running ``task_id``; True if that
        made it a dead letter."""
        deaths = self._deaths[task_id] = self._deaths.get(task_id, 0) + 1
        if deaths < self.max_deaths:
            return False
        del self._deaths[task_id]
        self._bury(task_id, frame.queue, frame.body,
                   f"its executor died while running it {deaths} times")
        return True

    def _release(self, name: str, drop: str | None = None, shutdown: bool = False) -> Reaped:
        inflight = self._inflight.pop(name, {})
        marker = self._running.pop(name, None)
        fate = Fate.NONE if marker is None else Fate.ACKED
        # Only the very frame that started is the running one: a later frame
        # with the same id (its retry) is merely fetched, and goes back below.
        if marker is not None and inflight.get(marker.id) is marker.frame:
            frame = inflight.pop(marker.id)
            if drop == marker.id or not marker.redeliver:
                fate = Fate.DROPPED
            elif not shutdown and self._died(marker.id, frame):
                fate = Fate.DEAD
            else:
                self._push(frame, front=True)
                fate = Fate.REQUEUED
        for frame in reversed(inflight.values()):  # first fetched, first delivered again
            self._push(frame, front=True)
        running = None if marker is None else marker.id
        unsettled = [i for i in self._started.pop(name, {}) if i != running]
        self._leases.pop(name, None)
        return Reaped(name, running, fate, list(inflight), unsettled)

    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        with self._cond:
            now = self.clock()
            for message, body in items:
                if (message.id, message.created) in self._published:
                    continue  # given already: publishing is idempotent
                self._published[(message.id, message.created)] = max(
                    message.created, message.eta or 0.0)
                frame = _Frame(message.id, message.queue, message.priority, body)
                if message.eta is not None and message.eta > now:
                    self._schedule(frame, message.eta)
                else:
                    self._push(frame)

    def published(self, messages: Sequence[Message]) -> set[str]:
        with self._cond:
            return {m.id for m in messages if (m.id, m.created) in self._published}

    def consumer(self, name: str, queues: Sequence[str]) -> MemoryConsumer:
        return MemoryConsumer(self, name, list(queues))

    def reap(self) -> list[Reaped]:
        with self._cond:
            now = self.clock()
            self._revoked = {i: s for i, s in self._revoked.items() if s > now - REVOKE_MEMORY}
            self._published = {k: s for k, s in self._published.items()
                               if s > now - REVOKE_MEMORY}
            expired = sorted((d, c) for c, d in self._leases.items() if d <= now)
            return [self._release(c) for _, c in expired]

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        with self._cond:
            return {q: sum(len(self._lists.get((q, p), ())) for p in PRIORITIES) for q in queues}

    def scheduled_count(self) -> int:
        with self._cond:
            return len(self._scheduled)

    def purge(self, queue: str) -> list[str]:
        with self._cond:
            self._move_due(self.clock())
            return [frame.id for p in PRIORITIES for frame in self._lists.pop((queue, p), ())]

    def in_flight(self, queues: Sequence[str]) -> dict[str, int]:
        with self._cond:
            held = [f.queue for frames in self._inflight.values() for f in frames.values()]
        return {q: held.count(q) for q in queues}

    def next_eta(self) -> float | None:
        """The earliest eta of a scheduled message (a timestamp), None if none
        is scheduled: where ``djtasks.testing`` moves the clock to run it early."""
        with self._cond:
            return self._scheduled[0][0] if self._scheduled else None

    def ping(self) -> None:
        pass  # always here

    def close(self) -> None:
        pass  # the state is the broker: keep it for the next user in this process

    def locate(self, task_id: str, queues: Sequence[str]) -> list[Held]:
        with self._cond:
            self._move_due(self.clock())  # as a fetch would: a due message is ready
            out = [Held(Place.SCHEDULED, f.queue, eta=eta)
                   for eta, _, f in sorted(self._scheduled, key=lambda e: e[:2])
                   if f.id == task_id]
            out += [Held(Place.FETCHED, f.queue, consumer=name)
                    for name, held in self._inflight.items()
                    if (f := held.get(task_id)) is not None]
            out += [Held(Place.READY, q) for q in queues for p in PRIORITIES
                    for f in self._lists.get((q, p), ()) if f.id == task_id]
            return out

    def is_revoked(self, task_id: str) -> bool:
        with self._cond:
            return task_id in self._revoked

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        with self._cond:
            now = self.clock()
            running = {m.id for m in self._running.values()}
            for task_id in task_ids:  # kept a day past the later of now and its eta
                etas = [eta for eta, _, frame in self._scheduled if frame.id == task_id]
                self._revoked[task_id] = max([now, *etas])
                if terminate:
                    self._terminate[task_id] = now
            if terminate:
                self._terminate = {i: t for i, t in self._terminate.items()
                                   if t > now - REVOKE_MEMORY}
            return [i for i in task_ids if i not in running]

    def to_terminate(self, consumers: Sequence[str]) -> dict[str, str]:
        with self._cond:
            return {c: m.id for c in consumers
                    if (m := self._running.get(c)) is not None and m.id in self._terminate}

    def take_token(self, name: str, rate: float) -> float:
        # The token bucket of lua/rate.lua.
        with self._cond:
            now = self.clock()
            capacity = max(rate, 1)
            tokens, ts = self._buckets.get(name, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - ts) * rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / rate
            self._buckets[name] = (tokens - 1 if wait == 0 else tokens, now)
            return wait

    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        with self._cond:
            self._workers[name] = json.dumps(info)  # JSON data, as Redis holds it

    def unregister_worker(self, name: str) -> None:
        with self._cond:
            self._workers.pop(name, None)

    def lead(self, duty: str, holder: str, ttl: float) -> bool:
        with self._cond:
            now = self.clock()
            current, until = self._duties.get(duty, (holder, now))
            if current != holder and until > now:
                return False
            self._duties[duty] = (holder, now + ttl)
            return True

    def chord_members_done(self, chord_id: str, member_ids: Sequence[str], size: int,
                           ttl: float) -> bool:
        with self._cond:
            now = self.clock()
            members, until = self._chords.get(chord_id, (set(), now))
            if until < now:  # expired, as a Redis key would be
                members = set()
            members.update(member_ids)
            self._chords[chord_id] = (members, now + ttl)
            return len(members) >= size

    def forget_chord(self, chord_id: str) -> None:
        with self._cond:
            self._chords.pop(chord_id, None)

    def workers(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return {k: json.loads(v) for k, v in self._workers.items()}

    def dead_letters(self) -> list[DeadLetter]:
        with self._cond:
            return sorted((d for _, d in self._dead.values()), key=lambda d: d.time, reverse=True)

    def requeue_dead_letter(self, letter_id: str) -> bool:
        with self._cond:
            if letter_id not in self._dead:
                return False
            message_id, letter = self._dead.pop(letter_id)
            self._push(_Frame(message_id, letter.queue, envelope_priority(letter.body),
                              letter.body))
            self._deaths.pop(message_id, None)
            return True

    def delete_dead_letter(self, letter_id: str) -> bool:
        with self._cond:
            return self._dead.pop(letter_id, None) is not None

    def dead_letter_count(self) -> int:
        with self._cond:
            return len(self._dead)

    def notify_done(self, ids: Sequence[str]) -> None:
        with self._cond:
            for task_id in ids:
                for listener in self._listeners.get(task_id, ()):
                    listener.event.set()

    def listen_done(self, task_id: str) -> DoneListener:
        listener = _MemoryDoneListener(self, task_id)
        with self._cond:
            self._listeners.setdefault(task_id, set()).add(listener)
        return listener


class MemoryConsumer(Consumer):
    """A consumer's handle on a ``MemoryBroker``; its own queue rotation."""

    def __init__(self, broker: MemoryBroker, name: str, queues: list[str]) -> None:
        self.broker, self.name, self.queues = broker, name, queues
        self._rotation = 0

    def __repr__(self) -> str:
        return f"<MemoryConsumer {self.name}>"

    def fetch(self, count: int, timeout: float, *,
              start: WakeStart | None = None) -> list[Delivery]:
        b = self.broker
        # Rotate the queue order on each fetch so no queue starves another.
        self._rotation = (self._rotation + 1) % len(self.queues)
        ordered = [*self.queues[self._rotation:], *self.queues[:self._rotation]]
        deadline = time.monotonic() + timeout  # real time: tests may freeze the clock
        with b._cond:
            while True:
                now = b.clock()
                got = self._take(count, ordered, now)
                wait = deadline - time.monotonic()
                if got or wait <= 0:
                    return got
                if b._scheduled:
                    wait = min(wait, max(b._scheduled[0][0] - now, 0.001))
                b._cond.wait(wait)

    def _take(self, count: int, ordered: list[str], now: float) -> list[Delivery]:
        b = self.broker
        b._move_due(now)
        inflight = b._inflight.setdefault(self.name, {})
        out: list[Delivery] = []
        revoked: list[Delivery] = []
        for queue in ordered:
            for priority in PRIORITIES:
                lst = b._lists.get((queue, priority))
                if count <= 0 or not lst:
                    continue
                # As many as asked for, taken at once: a twin put back at the
                # tail is not met again in this fetch.
                for frame in [lst.popleft() for _ in range(min(count, len(lst)))]:
                    if frame.id in b._revoked:  # revoked while queued: never delivered
                        revoked.append(Delivery(frame.id, queue, frame.body, revoked=True))
                    elif frame.id in inflight:
                        lst.append(frame)
                    else:
                        inflight[frame.id] = frame
                        out.append(Delivery(frame.id, queue, frame.body, token=str(frame.seq)))
                        count -= 1
        return out + revoked

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = (), token: str = "") -> Started:
        b = self.broker
        with b._cond:
            self._forget(acks)
            if (frame := b._inflight.get(self.name, {}).get(task_id)) is None:
                # Started already, this very frame, by this consumer (a start
                # asked again): its marker is gone only if a reaper released it.
                running = b._running.get(self.name)
                mine = (running is not None and running.id == task_id and token != ""
                        and str(running.frame.seq) == token)
                return Started.RUN if mine else Started.LOST
            if task_id in b._revoked:
                self._forget([task_id])
                return Started.REVOKED
            if ack:
                self._forget([task_id])
            if track:
                b._started.setdefault(self.name, {})[task_id] = None
            b._running[self.name] = _Running(task_id, redeliver, frame)
            return Started.RUN

    def _forget(self, ids: Iterable[str]) -> None:
        inflight = self.broker._inflight.get(self.name, {})
        for i in ids:
            inflight.pop(i, None)
            self.broker._deaths.pop(i, None)  # it ended: its death count no longer matters

    def ack(self, ids: Iterable[str], *, settled: Iterable[str] = ()) -> None:
        with self.broker._cond:
            self._forget(ids)
            started = self.broker._started.get(self.name, {})
            for i in settled:
                started.pop(i, None)

    def requeue(self, ids: Iterable[str]) -> None:
        b = self.broker
        with b._cond:
            inflight = b._inflight.get(self.name, {})
            for i in reversed(list(ids)):  # the first id given back is the first delivered
                if (frame := inflight.pop(i, None)) is not None:
                    b._push(frame, front=True)

    def defer(self, task_id: str, eta: float) -> None:
        with self.broker._cond:
            if (frame := self.broker._inflight.get(self.name, {}).pop(task_id, None)):
                self.broker._schedule(frame, eta)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self.broker._cond:
            self.broker._bury(delivery.id, delivery.queue, delivery.body, reason)
            self.broker._inflight.get(self.name, {}).pop(delivery.id, None)

    def renew(self, lease: float) -> None:
        with self.broker._cond:
            self.broker._leases[self.name] = self.broker.clock() + lease

    def release(self, *, drop_running: str | None = None, shutdown: bool = False) -> Reaped:
        with self.broker._cond:
            return self.broker._release(self.name, drop_running, shutdown)


class _MemoryDoneListener(DoneListener):
    def __init__(self, broker: MemoryBroker, task_id: str) -> None:
        self.broker, self.task_id = broker, task_id
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)

    def close(self) -> None:
        with self.broker._cond:
            self.broker._listeners.get(self.task_id, set()).discard(self)
