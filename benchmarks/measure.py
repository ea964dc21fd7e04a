#!/usr/bin/env python
"""djtasks' figures on one broker, for benchmarks/run.py (which runs this).

    BENCH_BROKER=db-postgres python benchmarks/measure.py --tasks N --json FILE

The broker and database come from the environment (benchmarks/settings.py),
so the worker subprocesses this starts see the same ones. Each figure is
measured once; run.py repeats runs and takes medians. Writes
``{"figures": {...}, "config": {...}}`` to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

from benchmarks.benchapp import tasks  # noqa: E402
from djtasks.brokers import get_broker, tables  # noqa: E402
from djtasks.models import TaskResult  # noqa: E402

# The database broker's tables; only this benchmark's KEY_PREFIX is deleted.
BROKER_TABLES = [tables.QueuedMessage, tables.BrokerConsumer, tables.StartedTask,
                 tables.StoredDeadLetter, tables.Revocation, tables.RateBucket,
                 tables.WorkerRecord, tables.Duty]


class MeasureError(RuntimeError):
    """A measurement did not complete in time."""


def _reset() -> None:
    client = tasks.client()
    keys = list(client.scan_iter(match="*djtasks-bench*", count=1000))
    keys += list(client.scan_iter(match="bench:*", count=1000))
    if keys:
        client.delete(*keys)
    TaskResult.objects.all().delete()
    prefix = settings.DJTASKS["KEY_PREFIX"]
    for model in BROKER_TABLES:
        model.objects.filter(prefix=prefix).delete()


def _worker(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", *argv, "--loglevel", "WARNING"],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL,
    )


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def enqueue_rate(task, n: int) -> float:
    """n ``delay()`` calls in autocommit: one transaction each on the db brokers."""
    started = time.perf_counter()
    for _ in range(n):
        task.delay("bench:enqueue")
    return n / (time.perf_counter() - started)


def drain_rate(task, n: int, concurrency: int, timeout: float) -> float:
    """Enqueue n tasks, then time a burst worker from its first task to the last."""
    counter = "bench:drain"
    for _ in range(n):
        task.delay(counter)
    client = tasks.client()
    worker = _worker("-c", str(concurrency), "--burst")
    try:
        deadline = time.monotonic() + 60
        while int(client.get(counter) or 0) == 0:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise MeasureError(f"no task started (worker exit {worker.poll()})")
            time.sleep(0.0005)
        first = time.perf_counter()
        deadline = time.monotonic() + timeout
        while (done := int(client.get(counter) or 0)) < n:
            if time.monotonic() > deadline:
                raise MeasureError(f"only {done}/{n} tasks ran within {timeout:.0f}s")
            time.sleep(0.001)
        last = time.perf_counter()
        try:
            worker.wait(60)  # a burst worker exits once the queue is empty
        except subprocess.TimeoutExpired:
            print("measure: the burst worker did not exit within 60s of the last task",
                  file=sys.stderr)
    finally:
        _stop(worker)
    return (n - 1) / (last - first)


def rss_kib(pid: int) -> int:
    """Resident memory (KiB) of a process and its children, from /proc."""
    total = 0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    for p in [str(pid), *children]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines()
                      if line.startswith("VmRSS:"))
    return total


# Seconds idle before each cold probe: drawn from [COLD_GAP, 2 * COLD_GAP), as
# in peers.py, so a probe lands anywhere in a poller's sleep.
COLD_GAP = 0.25


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    values = sorted(values)
    return {f"{prefix}_p50_ms": statistics.median(values),
            f"{prefix}_p99_ms": values[max(int(len(values) * 0.99) - 1, 0)]}


def latency_ms(samples: int, cold_samples: int) -> dict[str, float]:
    """Enqueue-to-start latency with one idle executor, in ms, as in peers.py.

    ``latency_*``: probes sent 2 ms after the one before ran; ``latency_cold_*``
    (with ``cold_samples``): probes sent after 0.25-0.5 s idle, so
    the worker is waiting for a message (LISTEN on PostgreSQL, polling on
    SQLite, BLMOVE on Redis) when each arrives. Also ``worker_rss_kib_c1``:
    the worker's resident memory (supervisor + executor, KiB) after the probes.
    """
    worker = _worker("-c", "1")
    client = tasks.client()
    out: dict[str, float] = {}
    try:
        time.sleep(2)  # worker start-up
        for prefix, count, gap in [("latency", samples, (0.002, 0.002)),
                                   ("latency_cold", cold_samples, (COLD_GAP, 2 * COLD_GAP))]:
            if not count:
                continue
            key = f"bench:{prefix}"
            gaps = random.Random(0)
            for i in range(count):
                time.sleep(gaps.uniform(*gap))
                tasks.latency.delay(key, time.time())
                deadline = time.monotonic() + 5
                while client.llen(key) < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.0002)
            values = [float(v) * 1000 for v in client.lrange(key, 0, -1)]
            if len(values) < count:
                raise MeasureError(f"only {len(values)}/{count} latency probes ran")
            out.update(_percentiles(values, prefix))
        out["worker_rss_kib_c1"] = float(rss_kib(worker.pid))
    finally:
        _stop(worker)
    return out


def config() -> dict:
    db, conn = settings.DATABASES["default"], connections["default"]
    return {"broker": settings.BENCH_BROKER, "BROKER_URL": settings.DJTASKS["BROKER_URL"],
            "database": {"ENGINE": db["ENGINE"], "NAME": str(db["NAME"]),
                         "OPTIONS": db.get("OPTIONS", {}),
                         "version": ".".join(map(str, conn.get_database_version()))},
            "prefetch_multiplier": settings.DJTASKS["PREFETCH_MULTIPLIER"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--cold-samples", type=int, default=0)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    get_broker().ping()
    n = args.tasks
    results: dict[str, float] = {}
    _reset()
    results["enqueue_no_result_per_s"] = enqueue_rate(tasks.noop, n)
    _reset()
    results["enqueue_with_result_row_per_s"] = enqueue_rate(tasks.noop_stored, n // 4)
    _reset()
    results["drain_no_result_per_s"] = drain_rate(tasks.noop, n, args.concurrency,
                                                  args.drain_timeout)
    _reset()
    results["drain_results_in_postgres_per_s"] = drain_rate(
        tasks.noop_stored, n // 2, args.concurrency, args.drain_timeout)
    _reset()
    results.update(latency_ms(args.latency_samples, args.cold_samples))
    _reset()
    args.json.write_text(json.dumps({"figures": results, "config": config()}, indent=2))


if __name__ == "__main__":
    main()
