"""Running a memory broker's messages in the caller's thread and transaction,
with the real ``Executor`` (``inline=True``): for ``djtasks.testing``.

``run_inline`` hands the executor one message at a time through an
``InlineConsumer``, which picks which message runs next, treats scheduled
ones as due on request (by moving the broker's ``InlineClock``), and makes
the commits a worker's tasks would make.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from django.db import connections

from ..brokers import Delivery, Started, WakeStart
from ..brokers.memory import MemoryBroker, MemoryConsumer
from ..exceptions import MessageError
from ..message import Message
from .executor import Executor

logger = logging.getLogger("djtasks.worker")

RUN_LIMIT = 1000  # runs in one call; more means a task enqueues or retries itself for ever


class InlineClock:
    """A memory broker's clock: real time plus ``offset`` seconds, or
    ``pinned`` to a later eta while a run treats that scheduled message as due."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.pinned: float | None = None

    def __call__(self) -> float:
        now = time.time() + self.offset
        return now if self.pinned is None else max(now, self.pinned)


def run_inline(broker: MemoryBroker, clock: InlineClock, *, name: str,
               queues: Callable[[], Sequence[str]], only: set[str] | None = None,
               most: int | None = None, include_scheduled: bool = False) -> list[Message]:
    """Run due messages from ``queues()`` (asked again before each fetch, in
    that order) as consumer ``name``; return the runs, in order.

    ``only``: ids to run (the others are held and given back at the end,
    at their eta if they have one); ``most``: stop after that many runs;
    ``include_scheduled``: when none is due, move ``clock`` to the next eta.
    Raises ``RuntimeError`` after ``RUN_LIMIT`` runs.
    """
    consumer = InlineConsumer(broker, name, clock, queues, only=only, most=most,
                              include_scheduled=include_scheduled)
    executor = Executor(broker, consumer=name, hostname="djtasks.testing", queues=[],
                        prefetch=1, burst=True, inline=True)
    executor.consumer = consumer
    try:
        executor.run()
    finally:
        consumer.give_back()
    return consumer.ran


class InlineConsumer(MemoryConsumer):
    """The consumer of ``run_inline``: hands the executor one wanted message
    at a time and records each one that starts."""

    def __init__(self, broker: MemoryBroker, name: str, clock: InlineClock,
                 queues: Callable[[], Sequence[str]], *, only: set[str] | None,
                 most: int | None, include_scheduled: bool) -> None:
        super().__init__(broker, name, [])
        self.clock, self._queue_names = clock, queues
        self.only, self.most, self.include_scheduled = only, most, include_scheduled
        self.ran: list[Message] = []
        self._handed: dict[str, Delivery] = {}
        self._held: list[Delivery] = []
        self._marks = {c.alias: len(c.run_on_commit) for c in connections.all(initialized_only=True)
                       if c.in_atomic_block}

    def fetch(self, count: int, timeout: float, *,
              start: WakeStart | None = None) -> list[Delivery]:
        self.clock.pinned = None  # the last task has run
        commit_since(self._marks)  # the last task's, before anything else is fetched
        while self.most is None or len(self.ran) < self.most:
            got = self._next()
            wanted = [d for d in got if d.revoked or self.only is None or d.id in self.only]
            self._held += [d for d in got if d not in wanted]
            if wanted and len(self.ran) >= RUN_LIMIT:
                self._held += wanted
                raise RuntimeError(f"{RUN_LIMIT} tasks ran and more are due: does a task "
                                   "enqueue or retry itself for ever?")
            if wanted or not got:
                self._handed.update((d.id, d) for d in wanted)
                return wanted
        return []

    def _next(self) -> list[Delivery]:
        while True:
            for queue in self._queue_names():
                got = self.broker.consumer(self.name, [queue]).fetch(1, 0)
                if got:
                    return got
            eta = self.broker.next_eta() if self.include_scheduled else None
            if eta is None or eta == self.clock.pinned:  # none, or not on these queues
                return []
            # Its time has come, for the broker, until the next fetch: a rate
            # limit it was deferred for has a token by then.
            self.clock.pinned = eta

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = (), token: str = "") -> Started:
        started = super().start(task_id, ack=ack, redeliver=redeliver, track=track, acks=acks,
                                token=token)
        if started is Started.RUN:
            self.ran.append(Message.decode(self._handed[task_id].body))
        return started

    def give_back(self) -> None:
        """Put held messages back (due, or scheduled at their eta) and forget
        this consumer."""
        self.clock.pinned = None
        due = []
        for delivery in self._held:
            try:
                eta = Message.decode(delivery.body).eta
            except MessageError:
                eta = None
            if eta is not None and eta > self.broker.clock():
                self.defer(delivery.id, eta)
            else:
                due.append(delivery.id)
        self.requeue(due)
        self.release(shutdown=True)


def commit_since(marks: dict[str, int]) -> None:
    """Run and drop the on-commit callbacks registered since ``marks`` (an
    index into ``run_on_commit`` per database alias), as a commit would.

    A worker runs a task outside any transaction, so what the task enqueues
    (inside its own ``atomic()`` or not) is published when that block ends.
    Run inside a test's transaction, those callbacks would wait for a commit
    that a TestCase never makes; dropped once run, an enclosing
    ``captureOnCommitCallbacks(execute=True)`` does not run them again.
    """
    for alias, start in marks.items():
        pending = connections[alias].run_on_commit
        while len(pending) > start:
            _, callback, robust = pending.pop(start)
            if not robust:
                callback()
                continue
            try:
                callback()
            except Exception:
                logger.exception("on_commit callback %r raised", callback)
