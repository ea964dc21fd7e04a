"""The supervisor: owns signals, the pool's lives and the consumers' leases.

``--pool prefork`` forks ``concurrency`` executor processes and replaces any
that dies; ``--pool solo`` runs one executor in this process. Either way the
supervisor renews every consumer's lease (a heartbeat every ``lease / 3``
seconds) and reaps consumers of dead workers, so their fetched messages go
back to their queues (DESIGN.md section 4).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from django.db import close_old_connections, connections
from django.utils import timezone

from .. import states
from ..brokers import Broker, Reaped, get_broker, reset_broker
from ..conf import get_settings
from ..exceptions import BrokerError, WorkerLostError
from ..models import TaskResult
from .executor import Executor
from .results import exception_type

logger = logging.getLogger("djtasks.worker")

POOLS = ("prefork", "solo")


def default_hostname() -> str:
    return f"djtasks@{socket.gethostname()}.{os.getpid()}"


@dataclass
class WorkerOptions:
    queues: list[str]
    concurrency: int
    pool: str = "prefork"
    burst: bool = False
    prefetch_multiplier: int = 4
    hostname: str = field(default_factory=default_hostname)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the supervisor dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def settle_lost(reaped: list[Reaped]) -> None:
    """Mark the task a dead consumer was running as FAILURE, unless requeued.

    Its message was acked when it started (``acks_late=False``), so it will
    not run again; the row says why (``WorkerLostError``). Only a PENDING or
    STARTED row changes: RETRY, SUCCESS, FAILURE and REVOKED rows were
    written after the run ended, so the task was not lost.
    """
    for r in reaped:
        if r.requeued:
            logger.warning("gave back %d message(s) of dead consumer %s",
                           len(r.requeued), r.consumer)
        if r.running is None or r.running in r.requeued:
            continue
        count = TaskResult.objects.filter(
            task_id=r.running, status__in=[states.PENDING, states.STARTED]
        ).update(
            status=states.FAILURE,
            exception_type=exception_type(WorkerLostError()),
            exception_message=f"{r.consumer} died while running the task",
            worker=r.consumer,
            finished=timezone.now(),
        )
        if count:
            logger.error("task %s was lost with dead consumer %s", r.running, r.consumer)


class Supervisor:
    """Runs a worker to the end; ``run()`` returns the process exit status."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.lease = get_settings().WORKER_LEASE
        self.stopping = False
        self.cold = False
        self.children: dict[int, str] = {}  # pid -> consumer
        self._generation = 0
        self._executor: Executor | None = None

    @property
    def broker(self) -> Broker:
        return get_broker()

    def _consumer_name(self, slot: int) -> str:
        self._generation += 1
        return f"{self.options.hostname}/{slot}.{self._generation}"

    # -- signals -------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            logger.warning("cold shutdown (second signal)")
            self.cold = True
        else:
            logger.warning("warm shutdown (%s): finishing running tasks",
                           signal.Signals(signum).name)
        self.stopping = True
        if self._executor is not None:
            self._executor.stop()
        for pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL if self.cold else signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # -- leases --------------------------------------------------------------

    def _renew_and_reap(self, consumers: list[str]) -> None:
        try:
            self.broker.heartbeat(consumers, self.lease)
            reaped = self.broker.reap()
        except BrokerError as exc:
            logger.error("heartbeat failed: %s", exc)
            return
        if reaped:
            close_old_connections()
            settle_lost(reaped)

    def _release(self, consumer: str) -> None:
        """A consumer of ours is gone: give its messages back, settle its tasks."""
        try:
            released = self.broker.release(consumer)
        except BrokerError as exc:
            logger.error("could not release %s (its lease will run out): %s", consumer, exc)
            return
        close_old_connections()
        settle_lost([released])

    # -- running -------------------------------------------------------------

    def run(self) -> int:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        self._install_signals()
        try:
            if self.options.pool == "solo":
                return self._run_solo()
            return self._run_prefork()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _make_executor(self, consumer: str) -> Executor:
        return Executor(
            get_broker(), consumer=consumer, hostname=self.options.hostname,
            queues=self.options.queues, prefetch=self.options.prefetch_multiplier,
            burst=self.options.burst,
        )

    def _run_solo(self) -> int:
        consumer = self._consumer_name(0)
        self._renew_and_reap([consumer])
        self._executor = self._make_executor(consumer)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.lease / 3):
                self._renew_and_reap([consumer])

        beat = threading.Thread(target=heartbeat, name="djtasks-heartbeat", daemon=True)
        beat.start()
        try:
            self._executor.run()
        finally:
            done.set()
            beat.join()
            self._release(consumer)
        return 0

    def _spawn(self, slot: int) -> None:
        consumer = self._consumer_name(slot)
        self.broker.heartbeat([consumer], self.lease)
        connections.close_all()  # a forked child must not share the parent's sockets
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
                _die_with_parent()
                reset_broker()
                executor = self._make_executor(consumer)
                signal.signal(signal.SIGTERM, lambda *_: executor.stop())
                executor.run()
                code = 0
            except BaseException:
                logger.exception("executor %s crashed", consumer)
            finally:
                connections.close_all()
                os._exit(code)
        self.children[pid] = consumer
        self._slots[pid] = slot

    def _run_prefork(self) -> int:
        self._slots: dict[int, int] = {}
        self._renew_and_reap([])
        for slot in range(self.options.concurrency):
            self._spawn(slot)
        next_beat = time.monotonic() + self.lease / 3
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if time.monotonic() >= next_beat:
                    self._renew_and_reap(list(self.children.values()))
                    next_beat = time.monotonic() + self.lease / 3
                time.sleep(0.05)
                continue
            consumer = self.children.pop(pid)
            slot = self._slots.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            self._release(consumer)
            if code != 0:
                logger.error("executor %s (pid %d) exited with %d", consumer, pid, code)
            if not self.stopping and not (self.options.burst and code == 0):
                self._spawn(slot)
        return 0
