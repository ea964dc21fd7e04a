"""``--pool threads``: ``--concurrency`` executors as threads of this process.

For I/O-bound tasks. Signals reach only the main thread, so soft time limits
are not enforced (the executor warns once per task name), nor hard ones.
"""

from __future__ import annotations

import threading

from .base import TICK, InProcessPool


class ThreadsPool(InProcessPool):
    name = "threads"

    def _run_executors(self) -> None:
        threads = [threading.Thread(target=e.run, name=f"djtasks-executor-{i}", daemon=True)
                   for i, e in enumerate(self.executors)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if self.supervisor.check_shutdown_timeout():
                # Threads cannot be killed: their consumers are released (the
                # messages go back) and they die with the process.
                return
            for t in threads:
                t.join(TICK)
