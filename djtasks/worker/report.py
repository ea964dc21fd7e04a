"""How executors tell their supervisor about each run that ended, for the
worker's metrics (``runworker --metrics-port``; docs/monitoring.md).

The supervisor counts every executor's runs in its own process, so one
scrape of one port sees the whole worker. Executors in the supervisor's
process (threads, solo) call its ``Reporter`` directly; a prefork child
writes one line per run to a pipe that a thread of the supervisor reads
(``PipeReader``). A line is far shorter than ``PIPE_BUF``, so the children's
writes never interleave.
"""

from __future__ import annotations

import json
import os
import threading

LINE_MAX = 1024  # bytes of one report line: task (255) and queue (200) names fit


class Reporter:
    """Receives one call per run that ended. This one does nothing: a
    worker without ``--metrics-port`` pays nothing per task."""

    def finished(self, task: str, queue: str, state: str, runtime: float | None) -> None:
        """Run of ``task`` from ``queue`` ended in ``state`` (a ``states``
        name) after ``runtime`` seconds (None: it did not run, e.g. REVOKED)."""


class PipeReporter(Reporter):
    """A prefork child's reporter: one JSON line per run, written to ``fd``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def finished(self, task: str, queue: str, state: str, runtime: float | None) -> None:
        line = (json.dumps([task, queue, state, runtime]) + "\n").encode()
        if len(line) > LINE_MAX:  # not one atomic write: better a lost sample than a torn one
            return
        try:
            os.write(self.fd, line)
        except OSError:  # the supervisor is gone: this child is about to go too
            pass


class PipeReader:
    """The supervisor's end: a pipe whose write end (``write_fd``) prefork
    children inherit, and a thread that passes each line to ``sink``."""

    def __init__(self, sink: Reporter) -> None:
        self.sink = sink
        self.read_fd, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._read, name="djtasks-metrics-pipe",
                                        daemon=True)
        self._thread.start()

    def child_reporter(self) -> PipeReporter:
        """In a forked child: its reporter (the read end is closed there)."""
        os.close(self.read_fd)
        return PipeReporter(self.write_fd)

    def _read(self) -> None:
        buffered = b""
        while chunk := os.read(self.read_fd, 65536):
            *lines, buffered = (buffered + chunk).split(b"\n")
            for line in lines:
                try:
                    task, queue, state, runtime = json.loads(line)
                    self.sink.finished(str(task), str(queue), str(state),
                                       None if runtime is None else float(runtime))
                except (ValueError, TypeError):  # a line no child of ours wrote
                    continue

    def close(self) -> None:
        """Close the write end; the thread ends once every child has exited
        (the last write end is closed) and it has read what they wrote."""
        os.close(self.write_fd)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # else a child still holds it: the thread reads on
            os.close(self.read_fd)
