"""What both sides of the benchmark share, standard library only (peers.py
imports it from the peers' virtualenv): a private redis-server, the CPU
the rest of the machine used during a row, and a worker's PSS.

- ``PrivateRedis``: a ``redis-server`` of the benchmark's own on a free
  port, no persistence, so no other process's ``FLUSHDB`` (or load) reaches
  its keys.
- ``CpuMeter``: busy CPU time of the whole machine (``/proc/stat``) minus
  that of the benchmark's own processes (``/proc/PID/stat``) over one row,
  in cores; ``LOADED`` (0.1 core) is where a row is marked.
- ``pss_kib``: proportional set size (``/proc/PID/smaps_rollup``) summed
  over a worker's processes, so pages its processes share are counted once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")  # /proc times are in these ticks per second
LOADED = 0.10  # cores used by other processes above which a row is marked


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` on a free port for one benchmark run.

    Use as a context manager; ``url`` is ``redis://127.0.0.1:<port>/0``.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="djtasks-bench-redis-")

    def __enter__(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self._dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._dir.cleanup()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def session_pids(sid: int) -> list[int]:
    """Every live process in session ``sid`` (a worker started with
    ``start_new_session=True``: its supervisor and all its children)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            out.append(int(entry.name))
    return out


def _proc_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of one process (children it reaped included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(f) for f in fields[11:15])


def _machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return sum(parts[:3]) + sum(parts[5:8])


class CpuMeter:
    """The CPU other processes used while one row was measured, in cores.

    ``own`` returns the pids of the benchmark's processes at that moment
    (this process, its workers, its redis-server, its database backends);
    they are read at the start and at the end, so each should live across
    the row (a process that exits meanwhile counts as "others", which errs
    towards marking a row).
    """

    def __init__(self, own: Callable[[], Iterable[int]]) -> None:
        self.own = own

    def __enter__(self) -> CpuMeter:
        self._pids_start = {pid: _proc_ticks(pid) for pid in self.own()}
        self._busy = _machine_busy_ticks()
        self._wall = time.monotonic()
        self.others_cores = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _machine_busy_ticks() - self._busy
        wall = time.monotonic() - self._wall
        own = 0
        for pid in set(self.own()) | set(self._pids_start):
            own += max(_proc_ticks(pid) - self._pids_start.get(pid, 0), 0)
        self.others_cores = max(busy - own, 0) / TICK / max(wall, 1e-6)


def pss_kib(pids: Iterable[int]) -> int:
    """Proportional set size (KiB) of ``pids`` together, from smaps_rollup."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in text.splitlines()
                       if line.startswith("Pss:")), 0)
    return total
