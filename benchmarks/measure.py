"""djtasks' figures on one broker, for benchmarks/run.py (which runs this).

    BENCH_BROKER=db-postgres python benchmarks/measure.py --tasks N --json FILE

The broker and database come from the environment (benchmarks/settings.py),
so the worker subprocesses this starts see the same ones. Without
``BENCH_REDIS_URL`` it starts a private redis-server of its own (run.py
starts one for the whole run and passes it on). Each figure is measured
once; run.py repeats runs and takes medians. Writes ``{"figures": {...},
"others_cpu": {...}, "config": {...}}`` to ``--json``: ``others_cpu`` is, per
row, the cores other processes on the machine used meanwhile.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

from benchmarks.machine import CpuMeter, PrivateRedis, pss_kib, session_pids  # noqa: E402

if not os.environ.get("BENCH_REDIS_URL"):  # run alone: a private redis-server of its own
    _redis = PrivateRedis().__enter__()
    atexit.register(_redis.__exit__)
    os.environ["BENCH_REDIS_URL"] = _redis.url
    os.environ["BENCH_REDIS_PID"] = str(_redis.pid)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import OperationalError, connection, connections, transaction  # noqa: E402

from benchmarks.benchapp import tasks  # noqa: E402
from djtasks.brokers import get_broker, tables  # noqa: E402
from djtasks.conf import get_settings  # noqa: E402
from djtasks.models import TaskResult  # noqa: E402

# The database broker's tables; only this benchmark's KEY_PREFIX is deleted.
BROKER_TABLES = [tables.QueuedMessage, tables.BrokerConsumer, tables.StartedTask,
                 tables.StoredDeadLetter, tables.Revocation, tables.RateBucket,
                 tables.WorkerRecord, tables.Duty]
WARM_TASKS = 20  # run by a worker before it is measured, so its imports and connections are made


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


# -- the CPU of the rest of the machine -------------------------------------------

_workers: list[subprocess.Popen] = []  # running now: their processes are the benchmark's


def _own_pids() -> list[int]:
    pids = [os.getpid()]
    if os.environ.get("BENCH_REDIS_PID"):
        pids.append(int(os.environ["BENCH_REDIS_PID"]))
    for worker in _workers:
        pids += session_pids(worker.pid)
    conn = connections["default"]
    if conn.vendor == "postgresql":  # the backends serving this benchmark's connections
        with conn.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                           ["djtasks-bench"])
            pids += [row[0] for row in cursor.fetchall()]
    return pids


others_cpu: dict[str, float] = {}


@contextmanager
def row(name: str) -> Iterator[None]:
    """Record the cores other processes used while row ``name`` was measured."""
    with CpuMeter(_own_pids) as meter:
        yield
    others_cpu[name] = round(meter.others_cores, 3)


# -- workers ------------------------------------------------------------------------

def _worker(*argv: str) -> subprocess.Popen:
    """A ``runworker`` in a session of its own (so it can be frozen and counted whole)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", *argv, "--loglevel", "WARNING"],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    _workers.append(proc)
    return proc


def _stop(worker: subprocess.Popen) -> None:
    if worker in _workers:
        _workers.remove(worker)
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGCONT)  # if it was frozen
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def _wait_count(key: str, n: int, timeout: float, worker: subprocess.Popen) -> None:
    client = tasks.client()
    deadline = time.monotonic() + timeout
    while (done := int(client.get(key) or 0)) < n:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise MeasureError(f"{done}/{n} tasks on {key} ran (worker exit {worker.poll()})")
        time.sleep(0.001)


def _warm(worker: subprocess.Popen, task) -> None:
    """Run WARM_TASKS of ``task`` through ``worker``, then let it go idle."""
    for _ in range(WARM_TASKS):
        task.delay("bench:warm")
    _wait_count("bench:warm", WARM_TASKS, 120, worker)
    tasks.client().delete("bench:warm")
    time.sleep(0.5)


def _freeze(worker: subprocess.Popen) -> None:
    """SIGSTOP the worker's processes. On SQLite, never while one of them is
    inside its claim's write transaction: frozen there, it would hold the
    database's one write lock and every enqueue would wait for it ("database
    is locked"). So the write lock is tried at once after each freeze, and
    the worker is let run 20 ms more until it is free."""
    while True:
        os.killpg(worker.pid, signal.SIGSTOP)
        if connection.vendor != "sqlite":
            return
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 0")
            try:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute("ROLLBACK")
                return
            except OperationalError:
                pass
            finally:
                cursor.execute("PRAGMA busy_timeout = 30000")
        os.killpg(worker.pid, signal.SIGCONT)
        time.sleep(0.02)


# -- the rows -----------------------------------------------------------------------

def enqueue_rate(task, n: int) -> float:
    """n ``delay()`` calls in autocommit: one transaction each on the db brokers."""
    started = time.perf_counter()
    for _ in range(n):
        task.delay("bench:enqueue")
    return n / (time.perf_counter() - started)


def enqueue_in_transaction_rate(task, n: int) -> float:
    """n ``delay()`` calls inside one ``transaction.atomic()``, its commit included."""
    started = time.perf_counter()
    with transaction.atomic():
        for _ in range(n):
            task.delay("bench:enqueue")
    return n / (time.perf_counter() - started)


def drain_rate(task, n: int, concurrency: int, timeout: float) -> tuple[float, int]:
    """A warm worker frozen (SIGSTOP) while n tasks are enqueued, then thawed:
    tasks/s from the first task's start to the last's, and the worker's PSS
    (KiB, supervisor + executors) once idle again."""
    counter = "bench:drain"
    client = tasks.client()
    worker = _worker("-c", str(concurrency))
    try:
        _warm(worker, task)
        _freeze(worker)
        try:
            for _ in range(n):
                task.delay(counter)
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while int(client.get(counter) or 0) == 0:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise MeasureError(f"no task started (worker exit {worker.poll()})")
            time.sleep(0.0005)
        first = time.perf_counter()
        _wait_count(counter, n, timeout, worker)
        last = time.perf_counter()
        time.sleep(0.5)
        pss = pss_kib(session_pids(worker.pid))
    finally:
        _stop(worker)
    return (n - 1) / (last - first), pss


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    values = sorted(values)
    return {f"{prefix}_p50_ms": statistics.median(values),
            f"{prefix}_p99_ms": values[max(int(len(values) * 0.99) - 1, 0)]}


# Seconds idle before each cold probe: uniform in [0, COLD_GAP) (seeded), as in
# peers.py, so a probe lands anywhere in a poller's sleep or a blocked wait.
COLD_GAP = 0.1


def _probe(key: str, timeout: float = 10) -> float:
    """Wait for one latency probe's record (BLPOP: this process sleeps meanwhile)."""
    got = tasks.client().blpop([key], timeout=timeout)
    if got is None:
        raise MeasureError(f"a latency probe did not run within {timeout:.0f}s")
    return float(got[1]) * 1000


def latency_ms(samples: int, cold_samples: int) -> dict[str, float]:
    """Enqueue-to-start latency with one idle executor, in ms, as in peers.py.

    ``latency_cold_*``: each probe sent after an idle gap of U(0, 100 ms),
    so the worker is waiting for a message (LISTEN on PostgreSQL, polling on
    SQLite, blocked on Redis) when it arrives; ``latency_*`` (hot): each
    sent 2 ms after the one before ran. The probe's time includes the
    enqueue call. Also ``worker_pss_kib_c1``: the worker's PSS (supervisor +
    executor, KiB) after the probes.
    """
    worker = _worker("-c", "1")
    out: dict[str, float] = {}
    try:
        _warm(worker, tasks.noop)
        for prefix, count, gap in [("latency_cold", cold_samples, (0.0, COLD_GAP)),
                                   ("latency", samples, (0.002, 0.002))]:
            if not count:
                continue
            key = f"bench:{prefix}"
            gaps = random.Random(0)
            values = []
            with row(prefix):
                for _ in range(count):
                    time.sleep(gaps.uniform(*gap))
                    tasks.latency.delay(key, time.time())
                    values.append(_probe(key))
            out.update(_percentiles(values, prefix))
        time.sleep(0.5)
        out["worker_pss_kib_c1"] = float(pss_kib(session_pids(worker.pid)))
    finally:
        _stop(worker)
    return out


def config() -> dict:
    db, conn = settings.DATABASES["default"], connections["default"]
    return {"broker": settings.BENCH_BROKER, "BROKER_URL": settings.DJTASKS["BROKER_URL"],
            "database": {"ENGINE": db["ENGINE"], "NAME": str(db["NAME"]),
                         "OPTIONS": db.get("OPTIONS", {}),
                         "version": ".".join(map(str, conn.get_database_version()))},
            "prefetch_multiplier": get_settings().PREFETCH_MULTIPLIER,
            "prefetch_is_default": "PREFETCH_MULTIPLIER" not in settings.DJTASKS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="hot probes, each 2 ms after the one before ran")
    parser.add_argument("--cold-samples", type=int, default=200,
                        help="cold probes, each after U(0, 100 ms) idle")
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--only", action="append", metavar="ROW",
                        help="measure only this row (enqueue, transaction, row, drain, "
                             "drain-results, latency; repeatable)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    get_broker().ping()
    n = args.tasks
    results: dict[str, float] = {}

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    _reset()
    if wanted("enqueue"):
        with row("enqueue_no_result_per_s"):
            results["enqueue_no_result_per_s"] = enqueue_rate(tasks.noop, n)
        _reset()
    if wanted("transaction"):
        with row("enqueue_in_transaction_per_s"):
            results["enqueue_in_transaction_per_s"] = enqueue_in_transaction_rate(tasks.noop, n)
        _reset()
    if wanted("row"):
        with row("enqueue_with_result_row_per_s"):
            results["enqueue_with_result_row_per_s"] = enqueue_rate(tasks.noop_stored, n // 4)
        _reset()
    if wanted("drain"):
        with row("drain_no_result_per_s"):
            rate, pss = drain_rate(tasks.noop, n, args.concurrency, args.drain_timeout)
        results["drain_no_result_per_s"] = rate
        results[f"worker_pss_kib_c{args.concurrency}"] = float(pss)
        _reset()
    if wanted("drain-results"):
        with row("drain_results_in_postgres_per_s"):
            results["drain_results_in_postgres_per_s"], _ = drain_rate(
                tasks.noop_stored, n // 2, args.concurrency, args.drain_timeout)
        _reset()
    if wanted("latency"):
        results.update(latency_ms(args.latency_samples, args.cold_samples))
        _reset()
    args.json.write_text(json.dumps({"figures": results, "others_cpu": others_cpu,
                                     "config": config()}, indent=2))


if __name__ == "__main__":
    main()
