"""The supervisor: owns signals, the consumers' leases and settling lost tasks.

It runs one pool (``pools/``: prefork, threads or solo), which starts and
watches the executors. Whatever the pool, the supervisor turns the first
SIGTERM/SIGINT into a warm shutdown and the second (or ``--shutdown-timeout``)
into a cold one, renews every consumer's lease (the pool calls
``heartbeat()`` every ``lease / 3`` seconds), records the worker for
``manage.py djtasks workers``, reaps consumers of dead workers so their
fetched messages go back to their queues, and settles the task of a consumer
that is gone (docs/delivery.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from django.db import close_old_connections

from .. import outbox, signals, states, workflow
from ..brokers import Broker, Consumer, Fate, Reaped, get_broker
from ..conf import get_settings
from ..exceptions import TaskRevokedError, TimeLimitExceeded, WorkerLostError
from ..models import TaskResult
from ..registry import registry
from ..utils import install_task_record_factory
from .executor import Limits
from .pools import POOLS, Kill, Pool
from .report import Reporter

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

logger = logging.getLogger("djtasks.worker")


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
    beat: bool = False  # run a beat runner in a thread of the supervisor (--beat)
    metrics: tuple[str, int] | None = None  # (address, port) to serve metrics on


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
    owed: list[str] = []  # settled tasks whose workflow follow-ups may not have run
    lost: dict[str, BaseException] = {}
    for r in reaped:
        if r.requeued:
            logger.warning("gave back %d message(s) of consumer %s", len(r.requeued),
                           r.consumer)
        if r.fate is Fate.DEAD:
            logger.error("task %s killed its executor %s times: dead-lettered", r.running,
                         get_settings().MAX_DEATHS)
        for task_id in r.unsettled:
            if task_id in r.requeued:  # acks_late, not yet acked: it runs again
                continue
            owed.append(task_id)
            exc = WorkerLostError(f"{r.consumer} {why} after the task ran; its result was lost")
            if _mark(task_id, r.consumer, states.FAILURE, exc):
                lost[task_id] = exc
                logger.error("the result of task %s was lost with consumer %s", task_id,
                             r.consumer)
                done.append(task_id)
        if r.running is None or r.fate is Fate.REQUEUED:
            continue
        exc = WorkerLostError(f"{r.consumer} {why} while running the task")
        owed.append(r.running)
        if _mark(r.running, r.consumer, states.FAILURE, exc):
            lost[r.running] = exc
            logger.error("task %s was lost with consumer %s", r.running, r.consumer)
            done.append(r.running)
    if done:
        broker.notify_done(done)
    if owed:
        try:
            workflow.resume(owed, lost)
        except Exception:  # the supervisor outlives any one workflow's trouble
            logger.exception("could not run the follow-ups of %d task(s) lost with their "
                             "executor", len(owed))


class Supervisor:
    """Runs a worker to the end; ``run()`` returns the process exit status."""

    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.lease = get_settings().WORKER_LEASE
        self.stopping = False
        self.cold = False
        self.started = time.time()
        self._stop_deadline: float | None = None
        self.restart = False
        self.metrics_on = options.metrics is not None
        self._metrics_server: WSGIServer | None = None
        # Hears of every run that ended, from every executor (worker/report.py).
        self.reporter: Reporter = Reporter()
        if self.metrics_on:
            from ..metrics import Recorder

            self.reporter = Recorder()
        self.pool: Pool = POOLS[options.pool](self)

    @property
    def broker(self) -> Broker:
        return get_broker()

    # -- signals -------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        how = "Cold" if self.stopping else "Warm"
        signals.worker_shutting_down.send_robust(sender=self.options.hostname,
                                                 sig=signal.Signals(signum).name, how=how,
                                                 exitcode=0)
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
        self.pool.stop()

    def request_restart(self) -> None:
        """Stop warmly so the worker can be started again (``--reload``)."""
        if not self.stopping:
            self.restart = True
            logger.warning("code changed: restarting the worker")
            self._on_signal(signal.SIGTERM, None)

    def _go_cold(self) -> None:
        self.stopping = self.cold = True
        self.pool.go_cold()

    def check_shutdown_timeout(self) -> bool:
        """Go cold once ``--shutdown-timeout`` seconds have passed since the
        warm shutdown began (pools call this as they wait); True once cold."""
        if (self._stop_deadline is not None and not self.cold
                and time.monotonic() > self._stop_deadline):
            logger.warning("shutdown timeout reached: cold shutdown")
            self._go_cold()
        return self.cold

    # -- leases and bookkeeping ------------------------------------------------

    def _handle(self, consumer: str) -> Consumer:
        return self.broker.consumer(consumer, self.options.queues)

    def heartbeat(self) -> None:
        """Renew the pool's consumers' leases, record the worker, reap dead
        workers' consumers and settle their tasks, and (one worker at a time)
        publish committed tasks the broker never had (the outbox)."""
        # Nothing here may kill the heartbeat: without it, other workers would
        # take this live worker's messages.
        try:
            for consumer in self.pool.consumers():
                self._handle(consumer).renew(self.lease)
            self.broker.register_worker(self.options.hostname, self._info())
            reaped = self.broker.reap()
            if reaped:
                close_old_connections()
                settle_lost(reaped, self.broker)
        except Exception as exc:
            logger.error("heartbeat failed: %s", exc)
        try:
            self._sweep_outbox()
        except Exception as exc:
            logger.error("the outbox sweep failed: %s", exc)

    def _sweep_outbox(self) -> None:
        # A broker whose publish joins the caller's transaction has no outbox.
        if self.broker.atomic_with is None and self.broker.lead(
                "outbox", self.options.hostname, ttl=self.lease):
            close_old_connections()
            outbox.sweep(self.broker, grace=get_settings().OUTBOX_GRACE)

    def _info(self) -> dict[str, object]:
        running, done = self.pool.stats()
        return {
            "hostname": self.options.hostname, "pid": os.getpid(),
            "queues": self.options.queues, "concurrency": self.options.concurrency,
            "pool": self.options.pool, "started": self.started, "last_seen": time.time(),
            "lease": self.lease, "tasks_done": done, "tasks_running": running,
        }

    def release(self, consumer: str, *, drop_running: str | None = None) -> Reaped | None:
        """A consumer of ours is gone: give its messages back, settle its task.

        ``drop_running``: the pool killed it while it ran that task, which is
        acked, not settled here (see ``record_kill``). While stopping, a
        running acks_late task goes back without counting as a death (the
        worker stopped it; the task did not kill it).
        """
        try:
            released = self._handle(consumer).release(drop_running=drop_running,
                                                      shutdown=self.stopping)
        except Exception as exc:
            logger.error("could not release %s (its lease will run out): %s", consumer, exc)
            return None
        lost = released
        if drop_running and released.running == drop_running:
            # The killed task is record_kill's; the others it ran without
            # their rows written are still lost with it.
            lost = dataclasses.replace(released, running=None)
        why = "was stopped by a cold shutdown" if self.stopping else "died"
        try:
            close_old_connections()
            settle_lost([lost], self.broker, why)
        except Exception as exc:
            logger.error("could not record the task lost with %s: %s", consumer, exc)
        return released

    def record_kill(self, kill: Kill, task_id: str, consumer: str) -> None:
        """Settle task ``task_id``, whose executor ``consumer`` the pool killed
        for ``kill``: FAILURE ``TimeLimitExceeded`` or REVOKED ``terminated``."""
        if kill is Kill.TIME_LIMIT:
            exc: BaseException = TimeLimitExceeded(
                f"ran past its hard time limit; executor {consumer} was killed")
            status = states.FAILURE
        else:
            exc, status = TaskRevokedError("terminated"), states.REVOKED
        changed = _mark(task_id, consumer, status, exc)
        if changed:
            self.broker.notify_done([task_id])
        logger.error("task %s: %s", task_id, exc)
        row = TaskResult.objects.filter(task_id=task_id).values_list("task_name", "queue").first()
        name = row[0] if row else None
        if changed and row:  # its executor died before it could report the run
            self.reporter.finished(row[0], row[1], status, None)
        if kill is Kill.TERMINATE:
            # The task object as sender, as Celery sends it (its name if unknown).
            task = registry.get(name) if name is not None and name in registry else name
            signals.task_revoked.send(sender=task, request=None, task_id=task_id,
                                      terminated=True, signum=signal.SIGKILL, expired=False)

    # -- running -------------------------------------------------------------

    def serve_metrics(self) -> None:
        """Serve metrics on ``options.metrics`` until ``run()`` ends (a no-op
        without it). Raises ``OSError`` if the port cannot be bound."""
        if self.options.metrics is None or self._metrics_server is not None:
            return
        from ..metrics import serve

        address, port = self.options.metrics
        self._metrics_server = serve(self, address, port)
        logger.info("metrics on http://%s:%d/metrics", address,
                    self._metrics_server.server_port)

    def run(self) -> int:
        install_task_record_factory()
        signals.worker_init.send(sender=self.options.hostname)
        in_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        if in_main:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.serve_metrics()
        signals.worker_ready.send(sender=self.options.hostname, hostname=self.options.hostname)
        beat = None
        if self.options.beat:
            from ..beat.runner import start_thread

            beat, _ = start_thread(self.options.hostname)
        try:
            self.pool.run()
        finally:
            if beat is not None:
                beat.stop()
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
                self._metrics_server.server_close()
                self._metrics_server = None
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            try:
                self.broker.unregister_worker(self.options.hostname)
            except Exception as exc:
                logger.error("could not unregister the worker: %s", exc)
            signals.worker_shutdown.send(sender=self.options.hostname,
                                         hostname=self.options.hostname)
        return 1 if self.pool.crashed else 0
