"""Result writes from the worker, batched by a writer thread per executor.

The executor hands each state to ``ResultWriter.add()`` and goes on with
the next task; the writer thread collects what arrives within ``interval``
seconds and writes it with ``TaskResult.objects.write`` (on PostgreSQL and
SQLite one conditional INSERT ... ON CONFLICT DO UPDATE ... WHERE the state
may follow; elsewhere the stored states read and locked first), then sends
the done notices and the late acks that waited for those rows. Per task that
is a fraction of a database round trip instead of two.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from django.db import DatabaseError, close_old_connections, connections

from .. import states
from ..brokers import Broker, Consumer
from ..exceptions import BrokerError
from ..models import TaskResult

logger = logging.getLogger("djtasks.worker")

class _Sync:
    """A marker in the writer's queue: set once everything before it is written."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
# A queued row: the row, the message id to ack late once it is stored (or
# None), and its workflow's FollowUp (djtasks/workflow.py) or None.
Item = tuple[TaskResult, "str | None", Any]


class ResultWriter:
    """Writes ``TaskResult`` rows for one executor from a background thread.

    ``add(row, late_ack=id)`` queues a row; the writer acks ``late_ack`` in
    the broker only after the row is stored, so an acks_late message is
    never acked before its result exists. ``sync()`` waits until everything
    added so far is written; ``stop()`` writes the rest and ends the thread.
    """

    def __init__(self, broker: Broker, consumer: Consumer, *, interval: float = 0.02,
                 max_batch: int = 500) -> None:
        self.broker = broker
        self.consumer = consumer
        self.interval = interval
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"djtasks-results-{consumer.name}",
                                        daemon=True)
        self._thread.start()

    def add(self, row: TaskResult, late_ack: str | None = None, then: Any = None) -> None:
        """Queue ``row``; ``then`` (a workflow's ``FollowUp``, djtasks/workflow.py)
        runs once the row is stored, before ``late_ack`` is acked. It travels
        with the row: a batch that fails leaves nothing behind for a later row."""
        self._queue.put((row, late_ack, then))

    def sync(self, timeout: float = 60.0) -> bool:
        """Wait (up to ``timeout`` seconds) until what was added is written."""
        marker = _Sync()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            while self._cycle():
                pass
        finally:
            connections.close_all()  # this thread's own connections

    def _cycle(self) -> bool:
        """Collect one batch (what arrives within ``interval`` seconds of its
        first row) and write it. Returns False once told to stop."""
        item = self._queue.get()
        deadline = time.monotonic() + self.interval
        batch: list[Item] = []
        markers: list[_Sync] = []
        stop = False
        while True:
            if item is _STOP:
                stop = True
                break
            if isinstance(item, _Sync):
                markers.append(item)
                break
            batch.append(item)
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
        try:
            self._write(batch)
        except Exception:  # the thread must outlive any one batch
            logger.exception("result writer failed on a batch of %d rows", len(batch))
        for marker in markers:
            marker.done.set()
        return not stop

    def _close_old_connections(self) -> None:
        close_old_connections()

    def _write_one_by_one(self, batch: list[Item]) -> list[Item]:
        """After a failed batch: store each row alone, so one bad row cannot
        lose the others. A row the database refuses becomes a FAILURE saying
        why. Returns the rows stored (their late acks may go out); a row
        that cannot be stored at all (the database is down) is not acked, so
        its acks_late message runs again if this consumer dies."""
        stored = []
        for row, ack, then in batch:
            try:
                TaskResult.objects.write([row])
                stored.append((row, ack, then))
                continue
            except DatabaseError as exc:
                self._close_old_connections()
                error = exc
            logger.error("could not store the result of task %s: %s", row.task_id, error)
            fallback = row.refused(error)
            try:
                TaskResult.objects.write([fallback])
                stored.append((fallback, ack, then))
            except DatabaseError:
                self._close_old_connections()
        return stored

    def _write(self, batch: list[Item]) -> None:
        if not batch:
            return
        self._close_old_connections()
        follow_ups = [then for _, _, then in batch if then is not None]
        try:
            TaskResult.objects.write([row for row, _, _ in batch])  # too late ones are dropped
        except DatabaseError:
            self._close_old_connections()
            batch = self._write_one_by_one(batch)
        self._follow_up(follow_ups)
        acks = [ack for _, ack, _ in batch if ack is not None]
        stored = [r for r, _, _ in batch]
        done = [r.task_id for r in stored if r.status in states.READY_STATES]
        # An attempt is settled once its last row (RETRY or ready) is stored:
        # a dead executor's reaper then has nothing of it to settle.
        settled = [r.task_id for r in stored if states.settles(r.status)]
        try:
            if acks or settled:
                self.consumer.ack(acks, settled=settled)
            if done:
                self.broker.notify_done(done)
        except BrokerError as exc:
            # Unacked acks_late messages are redelivered if this consumer dies:
            # at least once, as promised.
            logger.error("could not ack/notify after storing results: %s", exc)


    def _follow_up(self, follow_ups: list[Any]) -> None:
        """Run the follow-ups of the rows just written, together (whether
        stored or refused as late: a rerun's follow-ups are claimed, so run once)."""
        if not follow_ups:
            return
        from ..workflow import run_all

        run_all(follow_ups)


class InlineResultWriter(ResultWriter):
    """Writes each row at once, in the calling thread, on its database
    connections, which it never closes: for tasks run inside a test's
    transaction (``djtasks.testing``), whose rows another thread's
    connection could not see, and whose locks it would wait on."""

    def __init__(self, broker: Broker, consumer: Consumer) -> None:
        self.broker = broker
        self.consumer = consumer

    def add(self, row: TaskResult, late_ack: str | None = None, then: Any = None) -> None:
        self._write([(row, late_ack, then)])

    def sync(self, timeout: float = 60.0) -> bool:
        return True  # nothing waits

    def stop(self) -> None:
        pass

    def _close_old_connections(self) -> None:
        pass  # the caller's, maybe inside its transaction: closing one would end it
