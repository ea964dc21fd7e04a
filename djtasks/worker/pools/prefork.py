"""``--pool prefork``: one forked child process per executor.

The pool's loop (every ``TICK``) reaps children and replaces any that exits
(with backoff for one that keeps dying at once), kills a child whose task is
past its hard time limit, and every ``TERMINATE_EVERY`` one whose task was
revoked with ``terminate``. Each child reports the task it runs (id and hard
deadline) in its shared-memory slot (``..slots``); a kill names the task the
slot showed, and happens only if the slot still shows it just before.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from django.db import connections

from ... import signals
from ...brokers import reset_broker
from ...exceptions import BrokerError
from ..executor import RECYCLE
from ..report import PipeReader
from ..slots import SharedSlots, SlotView
from .base import TICK, Kill, Pool, Stats

if TYPE_CHECKING:
    from ..supervisor import Supervisor

logger = logging.getLogger("djtasks.worker")

TERMINATE_EVERY = 0.25  # seconds between looks for tasks revoked with terminate


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the supervisor dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _process_init() -> None:
    """Celery's ``worker_process_init``, in the child before it takes a
    message. A receiver that raises is logged: failing here would make the
    supervisor replace the child for ever."""
    for receiver, response in signals.worker_process_init.send_robust(sender=None):
        if isinstance(response, Exception):
            logger.error("worker_process_init receiver %r raised: %r", receiver, response,
                         exc_info=response)


class PreforkPool(Pool):
    name = "prefork"
    recycles_executors = True

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor)
        self.slots = SharedSlots(self.size)
        self.children: dict[int, tuple[int, str]] = {}  # pid -> (slot, consumer)
        self._killed: dict[int, tuple[Kill, str]] = {}  # pid -> (why, task id)
        self._failures: dict[int, int] = {}  # slot -> quick exits in a row
        self._spawn_at: dict[int, float] = {}  # slot -> when to respawn
        self._spawned: dict[int, float] = {}  # slot -> when last spawned (monotonic)
        self._pipe: PipeReader | None = None

    # -- the Pool interface ------------------------------------------------------

    def run(self) -> None:
        sup = self.supervisor
        # With metrics on, children report their runs through a pipe.
        self._pipe = PipeReader(sup.reporter) if sup.metrics_on else None
        try:
            self._run()
        finally:
            if self._pipe is not None:
                self._pipe.close()

    def _run(self) -> None:
        sup = self.supervisor
        sup.heartbeat()
        for slot in range(self.size):
            self._spawn(slot)
        next_beat = time.monotonic() + sup.lease / 3
        next_terminate = 0.0
        while self.children or (self._spawn_at and not sup.stopping):
            self.reap_children()
            now = time.monotonic()
            if now >= next_beat:
                sup.heartbeat()
                next_beat = now + sup.lease / 3
            if now >= next_terminate:
                self.terminate_revoked()
                next_terminate = now + TERMINATE_EVERY
            self.enforce_time_limits()
            sup.check_shutdown_timeout()
            for slot, when in list(self._spawn_at.items()):
                if now >= when and not sup.stopping:
                    del self._spawn_at[slot]
                    self._spawn(slot)
            time.sleep(TICK)

    def stop(self) -> None:
        self._signal_children(signal.SIGTERM)

    def go_cold(self) -> None:
        self._signal_children(signal.SIGKILL)

    def consumers(self) -> list[str]:
        return [c for _, c in self.children.values()]

    def stats(self) -> Stats:
        views = [v for v in map(self.slots.read, range(self.slots.count)) if v is not None]
        return Stats(running=sum(1 for v in views if v.running), done=sum(v.done for v in views))

    # -- children ------------------------------------------------------------------

    def _signal_children(self, signum: int) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _spawn(self, slot: int) -> None:
        consumer = self._consumer_name(slot)
        try:
            self.broker.consumer(consumer, self.options.queues).renew(self.supervisor.lease)
        except Exception as exc:  # the next heartbeat registers it
            logger.error("could not register executor %s yet: %s", consumer, exc)
        connections.close_all()  # a forked child must not share the parent's sockets
        # Signals stay blocked across fork so the child never runs our handler.
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        self.slots.reset(slot)  # before the fork: from then on the child writes it
        # What exists now is never collected, here or in the child: a
        # collection writes to every object it visits, which would copy the
        # pages the child shares with this process (the gc.freeze docs).
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            self._child(slot, consumer)  # never returns
        # Known as a child before a signal held back during the fork is
        # handled: a warm shutdown that came meanwhile must reach it too.
        self.children[pid] = (slot, consumer)
        self._spawned[slot] = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    def _child(self, slot: int, consumer: str) -> None:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
            # Log records say which executor wrote them (processName), not "MainProcess".
            multiprocessing.current_process().name = f"executor-{slot + 1}"
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            reset_broker()
            if self._pipe is not None:
                self.reporter = self._pipe.child_reporter()
            _process_init()
            executor = self._make_executor(consumer, self.slots.slot(slot))
            signal.signal(signal.SIGTERM, lambda *_: executor.stop())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            executor.run()
            code = RECYCLE if executor.recycle else 0
        except BaseException:
            logger.exception("executor %s crashed", consumer)
        finally:
            connections.close_all()
            os._exit(code)

    def reap_children(self) -> None:
        """Settle every child that has exited, and plan its replacement."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot, consumer = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            self._settle_child(pid, consumer, code)
            if code not in (0, RECYCLE):
                logger.error("executor %s (pid %d) exited with %d", consumer, pid, code)
            if self.supervisor.stopping or (self.options.burst and code == 0):
                continue
            # A child that keeps dying at once is respawned with backoff.
            quick = time.monotonic() - self._spawned.get(slot, 0) < 1.0 and code not in (
                0, RECYCLE) and pid not in self._killed
            self._failures[slot] = self._failures.get(slot, 0) + 1 if quick else 0
            delay = min(0.1 * 2 ** self._failures[slot], 10.0) if quick else 0.0
            self._spawn_at[slot] = time.monotonic() + delay
            if code not in (0, RECYCLE) and self.options.burst and pid not in self._killed:
                self.crashed = True

    def _settle_child(self, pid: int, consumer: str, code: int) -> None:
        kill, task_id = self._killed.pop(pid, (None, ""))
        if kill is None:
            self.supervisor.release(consumer)
            return
        released = self.supervisor.release(consumer, drop_running=task_id)
        if released is not None and released.running != task_id:
            return  # that task had ended; release() settled the one that was running
        try:
            self.supervisor.record_kill(kill, task_id, consumer)
        except Exception as exc:
            logger.error("could not record that task %s was killed: %s", task_id, exc)

    # -- kills ---------------------------------------------------------------------

    def _kill(self, pid: int, slot: int, seen: SlotView, kill: Kill) -> bool:
        """SIGKILL executor ``pid`` for ``kill`` of the task in ``seen``, if its
        slot still shows that run: a task that ended meanwhile is no longer
        the one to kill, and the next is not. Returns whether it was killed."""
        if self.slots.read(slot) != seen:
            return False
        self._killed[pid] = (kill, seen.task_id)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def enforce_time_limits(self) -> None:
        """Kill each child whose task has run past its hard time limit."""
        now = time.time()
        for pid, (slot, consumer) in self.children.items():
            if pid in self._killed:
                continue
            view = self.slots.read(slot)
            if view is None or not view.running or not view.deadline or now <= view.deadline:
                continue
            if self._kill(pid, slot, view, Kill.TIME_LIMIT):
                logger.error("executor %s ran past a hard time limit: killing it", consumer)

    def terminate_revoked(self) -> None:
        """Kill each child whose running task was revoked with ``terminate``."""
        consumers = {c: (pid, slot) for pid, (slot, c) in self.children.items()
                     if pid not in self._killed}
        try:
            found = self.broker.to_terminate(list(consumers))
        except BrokerError:  # the heartbeat reports outages
            return
        for consumer, task_id in found.items():
            pid, slot = consumers[consumer]
            view = self.slots.read(slot)
            if view is None or view.task_id != task_id:
                continue  # the broker names the task started last; it is not running now
            if self._kill(pid, slot, view, Kill.TERMINATE):
                logger.warning("terminating task %s (revoked with terminate=True)", task_id)
