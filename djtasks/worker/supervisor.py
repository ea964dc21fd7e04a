"""The supervisor: owns signals, the pool's lives and the consumers' leases.

``--pool prefork`` forks ``concurrency`` executor processes and replaces any
that dies or asks to be recycled, and kills a task past its hard time limit
or revoked with ``terminate``; ``--pool threads`` runs the executors as
threads; ``--pool solo`` runs one executor in this process. Whatever the
pool, the supervisor renews every consumer's lease (a heartbeat every
``lease / 3`` seconds), records the worker for ``manage.py djtasks workers``
and reaps consumers of dead workers, so their fetched messages go back to
their queues (docs/delivery.md).
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

from .. import signals, states
from ..brokers import Broker, Consumer, Fate, Reaped, get_broker, reset_broker
from ..conf import get_settings
from ..exceptions import BrokerError, TaskRevokedError, TimeLimitExceeded, WorkerLostError
from ..models import TaskResult
from ..utils import install_task_record_factory
from .executor import RECYCLE, ColdShutdown, Executor, Limits
from .slots import SharedSlots, SlotState

logger = logging.getLogger("djtasks.worker")

POOLS = ("prefork", "threads", "solo")
TICK = 0.05  # seconds between the prefork supervisor's looks at its children
TERMINATE_EVERY = 0.25  # seconds between looks for tasks revoked with terminate


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
    limits: Limits = field(default_factory=Limits)
    shutdown_timeout: float | None = 60.0  # seconds of warm shutdown before a cold one


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the supervisor dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _mark(task_id: str, consumer: str, status: str, exc: BaseException) -> int:
    """Settle the row of a task ``consumer`` was running, or had run without
    its row being written, as ``status`` with ``exc``: unless it was started
    elsewhere or has finished (``TaskResult.objects.lost_by``). Returns rows
    changed."""
    return TaskResult.objects.filter(task_id=task_id).lost_by(consumer).move_to(
        status, exc=exc, worker=consumer)


def settle_lost(reaped: list[Reaped], broker: Broker, why: str = "died") -> None:
    """Mark the task a dead consumer was running as FAILURE (``WorkerLostError``),
    unless its message went back to the queue to run again."""
    done = []
    for r in reaped:
        if r.requeued:
            logger.warning("gave back %d message(s) of consumer %s", len(r.requeued),
                           r.consumer)
        if r.fate is Fate.DEAD:
            logger.error("task %s killed its executor %s times: dead-lettered", r.running,
                         get_settings().MAX_DEATHS)
        for task_id in r.unsettled:
            exc = WorkerLostError(f"{r.consumer} {why} after the task ran; its result was lost")
            if _mark(task_id, r.consumer, states.FAILURE, exc):
                logger.error("the result of task %s was lost with consumer %s", task_id,
                             r.consumer)
                done.append(task_id)
        if r.running is None or r.fate is Fate.REQUEUED:
            continue
        exc = WorkerLostError(f"{r.consumer} {why} while running the task")
        if _mark(r.running, r.consumer, states.FAILURE, exc):
            logger.error("task %s was lost with consumer %s", r.running, r.consumer)
            done.append(r.running)
    if done:
        broker.notify_done(done)


class Supervisor:
    """Runs a worker to the end; ``run()`` returns the process exit status."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.lease = get_settings().WORKER_LEASE
        self.stopping = False
        self.cold = False
        self.started = time.time()
        self._stop_deadline: float | None = None
        self._generation = 0
        self._executors: list[Executor] = []  # solo and threads pools
        self.children: dict[int, tuple[int, str]] = {}  # pid -> (slot, consumer)
        self._killed: dict[int, tuple[str, str]] = {}  # pid -> (why, task id)
        self._failures: dict[int, int] = {}  # slot -> quick exits in a row
        self._spawn_at: dict[int, float] = {}  # slot -> when to respawn
        self._spawned: dict[int, float] = {}  # slot -> when last spawned (monotonic)
        self._shared: SharedSlots | None = None
        self.crashed = False
        self.restart = False
        self._terminate_warned: set[str] = set()

    @property
    def broker(self) -> Broker:
        return get_broker()

    def _consumer_name(self, slot: int) -> str:
        self._generation += 1
        return f"{self.options.hostname}/{slot}.{self._generation}"

    # -- signals -------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            logger.warning("cold shutdown (second signal): giving messages back")
            self._go_cold()
            return
        logger.warning("warm shutdown (%s): finishing running tasks%s",
                       signal.Signals(signum).name,
                       f", for {self.options.shutdown_timeout:g}s at most"
                       if self.options.shutdown_timeout is not None else "")
        self.stopping = True
        if self.options.shutdown_timeout is not None:
            self._stop_deadline = time.monotonic() + self.options.shutdown_timeout
            if self.options.pool == "solo":
                # The running task holds the main thread: a timer delivers the
                # second signal, whose handler interrupts it.
                timer = threading.Timer(self.options.shutdown_timeout, self._timeout_solo)
                timer.daemon = True
                timer.start()
        for executor in self._executors:
            executor.stop()
        self._signal_children(signal.SIGTERM)

    def _timeout_solo(self) -> None:
        if not self.cold:
            logger.warning("shutdown timeout reached: cold shutdown")
            os.kill(os.getpid(), signal.SIGTERM)

    def request_restart(self) -> None:
        """Stop warmly so the worker can be started again (``--reload``)."""
        if not self.stopping:
            self.restart = True
            logger.warning("code changed: restarting the worker")
            self._on_signal(signal.SIGTERM, None)

    def _go_cold(self) -> None:
        self.stopping = self.cold = True
        for executor in self._executors:
            executor.stop()
        self._signal_children(signal.SIGKILL)
        if self.options.pool == "solo" and any(s.running for s in self._slots_in_process()):
            raise ColdShutdown()

    def _signal_children(self, signum: int) -> None:
        for pid in self.children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _slots_in_process(self) -> list[SlotState]:
        return [e.slot for e in self._executors]

    # -- leases and bookkeeping ------------------------------------------------

    def _handle(self, consumer: str) -> Consumer:
        return self.broker.consumer(consumer, self.options.queues)

    def _consumers(self) -> list[str]:
        return [c for _, c in self.children.values()] + [e.name for e in self._executors]

    def _heartbeat(self) -> None:
        # Nothing here may kill the heartbeat: without it, other workers would
        # take this live worker's messages.
        try:
            for consumer in self._consumers():
                self._handle(consumer).renew(self.lease)
            self.broker.register_worker(self.options.hostname, self._info())
            reaped = self.broker.reap()
            if reaped:
                close_old_connections()
                settle_lost(reaped, self.broker)
        except Exception as exc:
            logger.error("heartbeat failed: %s", exc)

    def _info(self) -> dict[str, object]:
        if self._shared is not None:
            slots = [self._shared.read(i) for i in range(self._shared.count)]
            running = sum(1 for r, _, _ in slots if r)
            done = sum(d for _, _, d in slots)
        else:
            running = sum(1 for e in self._executors if e.slot.running)
            done = sum(e.slot.tasks_done for e in self._executors)
        return {
            "hostname": self.options.hostname, "pid": os.getpid(),
            "queues": self.options.queues, "concurrency": self.options.concurrency,
            "pool": self.options.pool, "started": self.started, "last_seen": time.time(),
            "lease": self.lease, "tasks_done": done, "tasks_running": running,
        }

    def _release(self, consumer: str, *, drop_running: str | None = None) -> Reaped | None:
        """A consumer of ours is gone: give its messages back, settle its task.

        While stopping, a running acks_late task goes back without counting
        as a death (the worker stopped it; the task did not kill it).
        """
        try:
            released = self._handle(consumer).release(drop_running=drop_running,
                                                      shutdown=self.stopping)
        except Exception as exc:
            logger.error("could not release %s (its lease will run out): %s", consumer, exc)
            return None
        if not drop_running or released.running != drop_running:
            why = "was stopped by a cold shutdown" if self.stopping else "died"
            try:
                close_old_connections()
                settle_lost([released], self.broker, why)
            except Exception as exc:
                logger.error("could not record the task lost with %s: %s", consumer, exc)
        return released

    # -- running -------------------------------------------------------------

    def run(self) -> int:
        install_task_record_factory()
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if in_main:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        signals.worker_ready.send(sender=self.options.hostname, hostname=self.options.hostname)
        try:
            if self.options.pool == "prefork":
                self._run_prefork()
            else:
                self._run_in_process()
        finally:
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            try:
                self.broker.unregister_worker(self.options.hostname)
            except Exception as exc:
                logger.error("could not unregister the worker: %s", exc)
            signals.worker_shutdown.send(sender=self.options.hostname,
                                         hostname=self.options.hostname)
        return 1 if self.crashed else 0

    def _make_executor(self, consumer: str, slot: SlotState | None = None) -> Executor:
        return Executor(
            get_broker(), consumer=consumer, hostname=self.options.hostname,
            queues=self.options.queues, prefetch=self.options.prefetch_multiplier,
            burst=self.options.burst, limits=self.options.limits, slot=slot,
        )

    # solo and threads ---------------------------------------------------------

    def _run_in_process(self) -> None:
        count = 1 if self.options.pool == "solo" else self.options.concurrency
        self._executors = [self._make_executor(self._consumer_name(i)) for i in range(count)]
        self._heartbeat()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.lease / 3):
                self._heartbeat()
                self._terminate_revoked_in_process()

        beater = threading.Thread(target=beat, name="djtasks-heartbeat", daemon=True)
        beater.start()
        try:
            if self.options.pool == "solo":
                self._executors[0].run()
            else:
                self._run_threads()
        except ColdShutdown:
            logger.warning("cold shutdown: the running task was interrupted")
        finally:
            done.set()
            beater.join()
            for executor in self._executors:
                self._release(executor.name)

    def _run_threads(self) -> None:
        threads = [threading.Thread(target=e.run, name=f"djtasks-executor-{i}", daemon=True)
                   for i, e in enumerate(self._executors)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if self.cold:
                # Threads cannot be killed: give their messages back and leave
                # them to die with the process.
                return
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                logger.warning("shutdown timeout reached: cold shutdown")
                self._go_cold()
                return
            for t in threads:
                t.join(TICK)

    def _terminate_revoked_in_process(self) -> None:
        try:
            found = self.broker.to_terminate([e.name for e in self._executors])
        except BrokerError:  # the heartbeat reports outages
            return
        for task_id in set(found.values()) - self._terminate_warned:
            self._terminate_warned.add(task_id)
            logger.warning("task %s was revoked with terminate=True, but the %s pool "
                           "cannot kill a running task; it runs to its end",
                           task_id, self.options.pool)

    # prefork ----------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        assert self._shared is not None
        consumer = self._consumer_name(slot)
        try:
            self._handle(consumer).renew(self.lease)
        except Exception as exc:  # the next heartbeat registers it
            logger.error("could not register executor %s yet: %s", consumer, exc)
        connections.close_all()  # a forked child must not share the parent's sockets
        # Signals stay blocked across fork so the child never runs our handler.
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        pid = os.fork()
        if pid == 0:
            self._child(slot, consumer)  # never returns
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        self._shared.write(slot, False, 0.0, self._shared.read(slot)[2])
        self.children[pid] = (slot, consumer)
        self._spawned[slot] = time.monotonic()

    def _child(self, slot: int, consumer: str) -> None:
        assert self._shared is not None
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            reset_broker()
            executor = self._make_executor(consumer, self._shared.slot(slot))
            signal.signal(signal.SIGTERM, lambda *_: executor.stop())
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            executor.run()
            code = RECYCLE if executor.recycle else 0
        except BaseException:
            logger.exception("executor %s crashed", consumer)
        finally:
            connections.close_all()
            os._exit(code)

    def _run_prefork(self) -> None:
        self._shared = SharedSlots(self.options.concurrency)
        self._heartbeat()
        for slot in range(self.options.concurrency):
            self._spawn(slot)
        next_beat = time.monotonic() + self.lease / 3
        next_terminate = 0.0
        while self.children or (self._spawn_at and not self.stopping):
            self._reap_children()
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.lease / 3
            if now >= next_terminate:
                self._terminate_revoked()
                next_terminate = now + TERMINATE_EVERY
            self._enforce_time_limits()
            if self._stop_deadline is not None and now > self._stop_deadline and not self.cold:
                logger.warning("shutdown timeout reached: cold shutdown")
                self._go_cold()
            for slot, when in list(self._spawn_at.items()):
                if now >= when and not self.stopping:
                    del self._spawn_at[slot]
                    self._spawn(slot)
            time.sleep(TICK)

    def _reap_children(self) -> None:
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
            if self.stopping or (self.options.burst and code == 0):
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
        why, task_id = self._killed.pop(pid, ("", ""))
        if not why or not task_id:
            self._release(consumer)
            return
        released = self._release(consumer, drop_running=task_id)
        if released is not None and released.running != task_id:
            return  # that task had ended; _release settled the one that was running
        try:
            self._record_kill(why, task_id, consumer)
        except Exception as exc:
            logger.error("could not record that task %s was killed: %s", task_id, exc)

    def _record_kill(self, why: str, task_id: str, consumer: str) -> None:
        if why == "time limit":
            exc: BaseException = TimeLimitExceeded(
                f"ran past its hard time limit; executor {consumer} was killed")
            status = states.FAILURE
        else:
            exc, status = TaskRevokedError("terminated"), states.REVOKED
        if _mark(task_id, consumer, status, exc):
            self.broker.notify_done([task_id])
        logger.error("task %s: %s", task_id, exc)
        if why == "terminate":
            name = TaskResult.objects.filter(task_id=task_id).values_list(
                "task_name", flat=True).first()
            signals.task_revoked.send(sender=name, request=None, task_id=task_id,
                                      terminated=True, signum=signal.SIGKILL, expired=False)

    def _kill(self, pid: int, consumer: str, why: str, task_id: str | None = None) -> None:
        """SIGKILL an executor for ``why`` ("time limit" or "terminate"); the task
        it runs is settled as killed only if it is still ``task_id``."""
        if task_id is None:
            try:
                task_id = getattr(self._handle(consumer), "running_task", lambda: "")() or ""
            except BrokerError:  # the heartbeat reports outages
                task_id = ""
        self._killed[pid] = (why, task_id)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _enforce_time_limits(self) -> None:
        assert self._shared is not None
        now = time.time()
        for pid, (slot, consumer) in self.children.items():
            running, deadline, _ = self._shared.read(slot)
            if running and deadline and now > deadline and pid not in self._killed:
                logger.error("executor %s ran past a hard time limit: killing it", consumer)
                self._kill(pid, consumer, "time limit")

    def _terminate_revoked(self) -> None:
        consumers = {c: pid for pid, (_, c) in self.children.items() if pid not in self._killed}
        try:
            found = self.broker.to_terminate(list(consumers))
        except BrokerError:  # the heartbeat reports outages
            return
        assert self._shared is not None
        for consumer, task_id in found.items():
            pid = consumers[consumer]
            if not self._shared.read(self.children[pid][0])[0]:
                continue  # the marker names the last task; none runs now
            logger.warning("terminating task %s (revoked with terminate=True)", task_id)
            self._kill(pid, consumer, "terminate", task_id)
