"""The pool interface, and what the pools that run executors in this process share.

A pool starts the executors, keeps them running until the worker stops,
and says what they are doing; the supervisor (``..supervisor``) owns
signals, leases, the worker registry and settling lost tasks, and calls the
pool through ``Pool``. docs/worker.md#pools compares the pools.
"""

from __future__ import annotations

import enum
import logging
import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from ...brokers import Broker, get_broker
from ...exceptions import BrokerError
from ..executor import ColdShutdown, Executor
from ..report import Reporter
from ..slots import SlotState

if TYPE_CHECKING:
    from ..supervisor import Supervisor

logger = logging.getLogger("djtasks.worker")

TICK = 0.05  # seconds between a pool's looks at its executors


class Kill(enum.Enum):
    """Why a pool killed an executor, and so how its task is recorded."""

    TIME_LIMIT = "time limit"  # FAILURE, TimeLimitExceeded
    TERMINATE = "terminate"  # REVOKED, revoked with terminate=True


class Stats(NamedTuple):
    running: int  # executors running a task now
    done: int  # tasks finished by this worker's executors


class Pool(ABC):
    """Runs a worker's executors for its ``supervisor``.

    The supervisor calls ``run()`` once, and ``stop()``, ``go_cold()``,
    ``consumers()`` and ``stats()`` from its signal handler and heartbeat,
    which may be on another thread than ``run()``.
    """

    name: ClassVar[str]
    fixed_concurrency: ClassVar[int | None] = None
    """The number of executors whatever ``--concurrency`` says (solo: 1);
    ``None`` follows it."""
    recycles_executors: ClassVar[bool] = False
    """Whether ``--max-tasks-per-child`` and ``--max-memory-per-child``
    replace an executor; pools that cannot ignore them with a warning."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.options = supervisor.options
        self.size = self.fixed_concurrency or self.options.concurrency
        self.crashed = False  # an executor crashed in a --burst run: exit status 1
        self._generation = 0
        # Where executors report each run that ended: the supervisor's own
        # (metrics), or a pipe to it from a prefork child.
        self.reporter: Reporter = supervisor.reporter

    @property
    def broker(self) -> Broker:
        return get_broker()

    @abstractmethod
    def run(self) -> None:
        """Start the executors and return once every one has ended and its
        consumer is released. Renews leases through the supervisor's
        ``heartbeat()`` every ``lease / 3`` seconds meanwhile."""

    @abstractmethod
    def stop(self) -> None:
        """Warm shutdown: each executor finishes its task and gives the
        fetched ones back."""

    @abstractmethod
    def go_cold(self) -> None:
        """Cold shutdown: interrupt running tasks as far as the pool can; the
        messages go back when their consumers are released."""

    @abstractmethod
    def consumers(self) -> list[str]:
        """The consumer names of the executors alive now (for lease renewal)."""

    @abstractmethod
    def stats(self) -> Stats:
        """Executors running a task now, and tasks done (for the registry)."""

    def _consumer_name(self, slot: int) -> str:
        self._generation += 1
        return f"{self.options.hostname}/{slot}.{self._generation}"

    def _make_executor(self, consumer: str, slot: SlotState | None = None) -> Executor:
        o = self.options
        return Executor(
            get_broker(), consumer=consumer, hostname=o.hostname, queues=o.queues,
            prefetch=o.prefetch_multiplier, burst=o.burst, limits=o.limits, slot=slot,
            reporter=self.reporter,
        )


class InProcessPool(Pool):
    """Executors in this process (threads and solo), with a heartbeat thread.

    A process cannot kill one of its threads, so these pools neither enforce
    hard time limits nor terminate a revoked task: they warn and let it run.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor)
        self.executors: list[Executor] = []
        self._terminate_warned: set[str] = set()

    def run(self) -> None:
        sup = self.supervisor
        self.executors = [self._make_executor(self._consumer_name(i)) for i in range(self.size)]
        sup.heartbeat()
        done = threading.Event()

        def beat() -> None:
            while not done.wait(sup.lease / 3):
                sup.heartbeat()
                self._warn_terminate_revoked()

        beater = threading.Thread(target=beat, name="djtasks-heartbeat", daemon=True)
        beater.start()
        try:
            self._run_executors()
        except ColdShutdown:
            logger.warning("cold shutdown: the running task was interrupted")
        finally:
            done.set()
            beater.join()
            for executor in self.executors:
                sup.release(executor.name)

    @abstractmethod
    def _run_executors(self) -> None:
        """Run ``self.executors`` to their end (or until a cold shutdown)."""

    def stop(self) -> None:
        for executor in self.executors:
            executor.stop()

    def go_cold(self) -> None:
        for executor in self.executors:
            executor.stop()

    def consumers(self) -> list[str]:
        return [e.name for e in self.executors]

    def stats(self) -> Stats:
        views = [e.slot.read() for e in self.executors]
        return Stats(running=sum(1 for v in views if v.running), done=sum(v.done for v in views))

    def _warn_terminate_revoked(self) -> None:
        try:
            found = self.broker.to_terminate(self.consumers())
        except BrokerError:  # the heartbeat reports outages
            return
        for task_id in set(found.values()) - self._terminate_warned:
            self._terminate_warned.add(task_id)
            logger.warning("task %s was revoked with terminate=True, but the %s pool "
                           "cannot kill a running task; it runs to its end",
                           task_id, self.name)
