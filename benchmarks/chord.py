#!/usr/bin/env python
"""A chord of N members on a real worker: time and the worker's peak PSS per size.

    BENCH_BROKER=redis python benchmarks/chord.py [--sizes 100,1000,10000] [--json FILE]
    BENCH_BROKER=db-postgres python benchmarks/chord.py

The broker and database come from benchmarks/settings.py. For each size, an
idle ``runworker -c C`` is started, then ``chord(noop_stored.s(c) for _ in
range(N))(noop_stored.si(cb))`` is applied; the figures are the time the
apply takes (enqueue), the time from the apply to the callback's run (total),
and the peak PSS (KiB) of the worker's processes together (the supervisor
and its executors, from /proc/<pid>/smaps_rollup, sampled every 50 ms).
It checks that every member ran and the callback ran exactly once. The
callback is immutable: it takes no results, but the worker still reads the
N results from their rows to build it. docs/canvas.md quotes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
# Its own key prefix and database: benchmarks/measure.py, which may run at the
# same time, deletes every TaskResult row and the keys matching *djtasks-bench*.
os.environ.setdefault("BENCH_KEY_PREFIX", "canvas-chord-bench")
os.environ.setdefault("BENCH_DB_NAME", "djtasks_bench_chord")


def ensure_database() -> None:
    """Create the benchmark's PostgreSQL database if it is missing."""
    import psycopg

    name = os.environ["BENCH_DB_NAME"]
    with psycopg.connect(host=os.environ.get("PGHOST", "127.0.0.1"),
                         port=os.environ.get("PGPORT", "5432"),
                         user=os.environ.get("PGUSER", "postgres"), dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


ensure_database()

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.benchapp import tasks  # noqa: E402
from djtasks import chord, group  # noqa: E402
from djtasks.brokers import tables  # noqa: E402
from djtasks.models import TaskResult  # noqa: E402

BROKER_TABLES = [tables.QueuedMessage, tables.BrokerConsumer, tables.StartedTask,
                 tables.StoredDeadLetter, tables.Revocation, tables.RateBucket,
                 tables.WorkerRecord, tables.Duty, tables.ChordState, tables.ChordMember]


def reset() -> None:
    """Forget this benchmark's rows, messages and counters (its own prefix only)."""
    client = tasks.client()
    prefix = settings.DJTASKS["KEY_PREFIX"]
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    TaskResult.objects.all().delete()
    for model in BROKER_TABLES:
        model.objects.filter(prefix=prefix).delete()


def pss_kib(pid: int) -> int:
    """PSS (KiB) of ``pid`` and its children, 0 for a process that is gone."""
    total = 0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    for p in [str(pid), *children]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def start_worker(concurrency: int) -> subprocess.Popen[bytes]:
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", "-c", str(concurrency)],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + 30
    while len(subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True,
                             text=True).stdout.split()) < concurrency:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit("chord.py: the worker did not start")
        time.sleep(0.1)
    time.sleep(1.0)  # its executors have imported everything and wait for messages
    return worker


def one(size: int, concurrency: int, timeout: float, kind: str = "chord") -> dict[str, float]:
    """One chord of ``size`` members (or, ``kind="group"``, the same members
    as a plain group with no callback: the baseline the chord adds to)."""
    reset()
    client = tasks.client()
    prefix = settings.DJTASKS["KEY_PREFIX"]
    members, callback = f"{prefix}:members", f"{prefix}:callback"
    worker = start_worker(concurrency)
    try:
        idle = pss_kib(worker.pid)
        start = time.perf_counter()
        header = (tasks.noop_stored.s(members) for _ in range(size))
        if kind == "chord":
            chord(header)(tasks.noop_stored.si(callback))
        else:
            group(header).apply_async()
        enqueued = time.perf_counter() - start
        peak = idle
        deadline = time.monotonic() + timeout

        def finished() -> bool:
            if kind == "chord":
                return int(client.get(callback) or 0) >= 1
            return TaskResult.objects.filter(status="SUCCESS").count() >= size

        while not finished():
            if time.monotonic() > deadline:
                raise SystemExit(f"chord.py: a chord of {size} did not complete in {timeout}s")
            peak = max(peak, pss_kib(worker.pid))
            time.sleep(0.05)
        total = time.perf_counter() - start
        time.sleep(1.0)  # a second callback, if any, would have run by now
        ran, calls = int(client.get(members) or 0), int(client.get(callback) or 0)
        if ran < size or calls != (1 if kind == "chord" else 0):
            raise SystemExit(f"chord.py: {ran} of {size} members ran, callback ran {calls} times")
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    return {"kind": kind, "size": size, "enqueue_s": round(enqueued, 3), "total_s": round(total, 3),
            "per_member_ms": round(total / size * 1000, 3), "idle_pss_kib": idle,
            "peak_pss_kib": peak, "members_run": ran, "callback_runs": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--kind", choices=["chord", "group"], default="chord",
                        help="group: the same members with no callback (the baseline)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        row = one(size, args.concurrency, args.timeout, args.kind)
        rows.append(row)
        print(json.dumps({"broker": settings.BENCH_BROKER, **row}), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"broker": settings.BENCH_BROKER, "runs": rows},
                                        indent=2))
    reset()


if __name__ == "__main__":
    main()
