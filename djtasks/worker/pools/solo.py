"""``--pool solo``: one executor in the supervisor's own thread.

For debugging, tests and ``call_command("runworker", burst=True,
pool="solo")``. The running task holds the thread, so a cold shutdown raises
``ColdShutdown`` inside it, and ``--shutdown-timeout`` is a timer that
delivers the second signal.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from ..executor import ColdShutdown
from .base import InProcessPool

logger = logging.getLogger("djtasks.worker")


class SoloPool(InProcessPool):
    name = "solo"
    fixed_concurrency = 1

    def _run_executors(self) -> None:
        self.executors[0].run()

    def stop(self) -> None:
        timeout = self.options.shutdown_timeout
        if timeout is not None:
            # The running task holds this thread: a timer delivers the second
            # signal, whose handler interrupts it.
            timer = threading.Timer(timeout, self._timeout)
            timer.daemon = True
            timer.start()
        super().stop()

    def _timeout(self) -> None:
        if not self.supervisor.cold:
            logger.warning("shutdown timeout reached: cold shutdown")
            os.kill(os.getpid(), signal.SIGTERM)

    def go_cold(self) -> None:
        super().go_cold()
        if any(e.slot.running for e in self.executors):
            raise ColdShutdown()
