"""``--pool solo``: one executor in the supervisor's own thread.

For debugging, tests and ``call_command("runworker", burst=True,
pool="solo")``. The running task holds the thread, so a cold shutdown raises
``ColdShutdown`` inside it, and ``--shutdown-timeout`` is a timer that
delivers the second signal; the timer ends with the run, so a process that
ran the worker in-process outlives it untouched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING

from ..executor import ColdShutdown
from .base import InProcessPool

if TYPE_CHECKING:
    from ..supervisor import Supervisor

logger = logging.getLogger("djtasks.worker")


class SoloPool(InProcessPool):
    name = "solo"
    fixed_concurrency = 1

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor)
        self._timer: threading.Timer | None = None

    def _run_executors(self) -> None:
        try:
            self.executors[0].run()
        finally:
            if self._timer is not None:
                # Joined too: a timer already firing delivers its signal while
                # our handler is still installed, not the caller's.
                self._timer.cancel()
                self._timer.join()

    def stop(self) -> None:
        timeout = self.options.shutdown_timeout
        if timeout is not None and self._timer is None:
            # The running task holds this thread: a timer delivers the second
            # signal, whose handler interrupts it.
            self._timer = threading.Timer(timeout, self._timeout)
            self._timer.daemon = True
            self._timer.name = "djtasks-shutdown-timeout"
            self._timer.start()
        super().stop()

    def _timeout(self) -> None:
        if not self.supervisor.cold:
            logger.warning("shutdown timeout reached: cold shutdown")
            os.kill(os.getpid(), signal.SIGTERM)

    def go_cold(self) -> None:
        super().go_cold()
        if any(e.slot.read().running for e in self.executors):
            raise ColdShutdown()
