#!/usr/bin/env python
"""The peers' side of the benchmark: RQ, Huey, Dramatiq, Celery, django-tasks-db.

    /tmp/peers-venv/bin/python benchmarks/peers.py [--tasks N] [--repeat R]
                                                   [--only NAME] [--json FILE]

Run with an interpreter whose environment has the peers installed (not
djtasks' own; see benchmarks/README.md). Every peer runs the workload of
benchmarks/run.py against the same private redis-server (``PEERS_REDIS_URL``,
which run.py sets; alone, this starts one on a free port) and PostgreSQL
(schema ``djtasks_peers``): a no-op task whose body INCRs a Redis counter.
Measured, as for djtasks (benchmarks/README.md):

* enqueue rate: N enqueues from this one process (tasks/s); django-tasks-db
  also inside one ``transaction.atomic()``;
* drain rate: warm workers with 2 executors frozen (SIGSTOP) while N tasks
  are queued, then thawed; timed from the first task's start to the last
  (tasks/s), no stored results; then the workers' PSS, idle;
* drain rate with results stored in PostgreSQL (Celery + django-celery-results,
  django-tasks-db);
* enqueue-to-start latency p50/p99 (ms): one worker, one idle executor,
  sequential enqueues, each after an idle gap of U(0, 100 ms) (cold) or
  2 ms (hot); then the worker's PSS.

Beside each row, ``others_cpu``: the cores other processes on the machine
used meanwhile (benchmarks/machine.py).

A peer that cannot be imported is skipped with the reason printed. Each
peer is measured in a child process of its own (``--in-process``), so that
two Django projects (celery-db's, django-tasks-db's) never meet in one
process; with ``--repeat R`` it is measured R times and each figure is the
median. Every worker is a subprocess in a session of its own, stopped
(SIGTERM, then SIGKILL) at the end whatever happens, and every wait has a
deadline.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.metadata
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import CpuMeter, PrivateRedis, pss_kib, session_pids  # noqa: E402

# Set by run.py (or by main() here, with a private redis-server) before any peer's
# module reads it.
REDIS_URL = os.environ.get("PEERS_REDIS_URL", "")
BIN = Path(sys.executable).parent
# A child (--in-process) logs beside its parent.
LOG_DIR = Path(os.environ.get("PEERS_LOG_DIR") or tempfile.mkdtemp(prefix="djtasks-peers-"))

# Every Redis key a peer creates matches one of these; _reset deletes only those.
KEY_PATTERNS = ["peers:*", "rq:*", "huey.*", "peers-dramatiq*", "peers-celery*",
                "_kombu.binding.peers-celery*", "_kombu.binding_permanent.peers-celery*",
                "_kombu.binding_deadlines", "unacked*", "celery-task-meta-*"]


class PeerError(RuntimeError):
    """A measurement of one peer did not complete (timeout, worker died)."""


def _on_sigterm(signum, frame):  # so that `timeout` still runs the finally blocks
    raise KeyboardInterrupt(f"signal {signum}")


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def _reset() -> None:
    client = redis_client()
    for pattern in KEY_PATTERNS:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])


# -- the CPU of the rest of the machine -------------------------------------------

_workers: list[subprocess.Popen] = []  # running now: their processes are the benchmark's


def _own_pids() -> list[int]:
    pids = [os.getpid()]
    if os.environ.get("PEERS_REDIS_PID"):
        pids.append(int(os.environ["PEERS_REDIS_PID"]))
    for worker in _workers:
        pids += session_pids(worker.pid)
    if "django" in sys.modules:  # celery-db, django-tasks-db: their PostgreSQL backends
        from django.conf import settings
        from django.db import connections

        if settings.configured:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity "
                               "WHERE application_name = 'djtasks-peers'")
                pids += [r[0] for r in cursor.fetchall()]
    return pids


class Row:
    """Measure one row under ``CpuMeter``; ``Row.others`` keeps the cores
    other processes used, by row name (for the JSON's ``others_cpu``)."""

    others: dict[str, float] = {}

    def __init__(self, name: str) -> None:
        self.name, self.meter = name, CpuMeter(_own_pids)

    def __enter__(self) -> Row:
        self.meter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.meter.__exit__(*exc)
        Row.others[self.name] = round(self.meter.others_cores, 3)


# -- worker subprocesses ---------------------------------------------------------

def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def start_worker(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(LOG_DIR / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    proc.log_name = name  # type: ignore[attr-defined]
    _workers.append(proc)
    return proc


def stop_worker(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the worker's process group, SIGKILL it after `grace` seconds."""
    if proc in _workers:
        _workers.remove(proc)
    try:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGCONT)  # if it was frozen
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Children (prefork pools, Huey's processes) may outlive the parent.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            print(f"  warning: worker {proc.pid} did not exit after SIGKILL", file=sys.stderr)
    finally:
        proc.log.close()  # type: ignore[attr-defined]


def _log_tail(procs: list[subprocess.Popen], lines: int = 15) -> str:
    out = []
    for proc in procs:
        path = LOG_DIR / f"{proc.log_name}.log"  # type: ignore[attr-defined]
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"--- {path} (exit {proc.poll()}) ---\n" + "\n".join(text))
    return "\n".join(out)


# -- the three measurements, peer-agnostic ----------------------------------------

def enqueue_rate(enqueue: Callable[[str], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        enqueue("peers:enqueue")
    return n / (time.perf_counter() - started)


WARM_TASKS = 20  # run by the workers before they are measured


def _wait_started(client, counter: str, n: int, procs: list[subprocess.Popen],
                  timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while int(client.get(counter) or 0) < n:
        if time.monotonic() > deadline:
            raise PeerError(f"{int(client.get(counter) or 0)}/{n} tasks on {counter} ran "
                            f"within {timeout:.0f}s\n" + _log_tail(procs))
        time.sleep(0.0005)


def drain_rate(name: str, enqueue: Callable[[str], object], n: int,
               workers: list[tuple[list[str], dict[str, str]]], timeout: float,
               start_timeout: float = 60) -> tuple[float, int]:
    """Start the workers and warm them up, freeze them (SIGSTOP) while n
    tasks are enqueued, thaw them; time the first task's start to the
    last's. Returns tasks/s and the workers' PSS (KiB) once idle again."""
    counter = f"peers:drain:{name}"
    warm = f"peers:warm:{name}"
    client = redis_client()
    procs: list[subprocess.Popen] = []
    try:
        for i, (argv, env) in enumerate(workers):
            procs.append(start_worker(f"{name}-drain-{i}", argv, env))
        for _ in range(WARM_TASKS):
            enqueue(warm)
        _wait_started(client, warm, WARM_TASKS, procs, start_timeout)
        time.sleep(0.5)
        for proc in procs:
            os.killpg(proc.pid, signal.SIGSTOP)
        try:
            for _ in range(n):
                enqueue(counter)
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGCONT)
        _wait_started(client, counter, 1, procs, start_timeout)
        first = time.perf_counter()
        deadline = time.monotonic() + timeout
        while (done := int(client.get(counter) or 0)) < n:
            if time.monotonic() > deadline:
                raise PeerError(f"only {done}/{n} tasks ran within {timeout:.0f}s\n"
                                + _log_tail(procs))
            time.sleep(0.001)
        last = time.perf_counter()
        time.sleep(0.5)
        pss = pss_kib([pid for proc in procs for pid in session_pids(proc.pid)])
    finally:
        for proc in procs:
            stop_worker(proc)
    return (n - 1) / (last - first), pss


# Seconds idle before each cold probe: uniform in [0, COLD_GAP) (seeded: the same
# draws each run), so a probe lands anywhere in a poller's sleep (django-tasks-db's
# 0.1 s) or a blocked wait, rather than at the same point of it each time.
COLD_GAP = 0.1


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    values = sorted(values)
    return {f"{prefix}_p50_ms": statistics.median(values),
            f"{prefix}_p99_ms": values[max(int(len(values) * 0.99) - 1, 0)]}


def latency_ms(name: str, enqueue: Callable[[str, float], object], args: argparse.Namespace,
               argv: list[str], env: dict[str, str],
               start_timeout: float = 60) -> dict[str, float]:
    """Enqueue-to-start latency with one idle executor, in ms.

    ``latency_cold_*``: ``args.cold_samples`` probes, each after an idle gap
    of U(0, 100 ms), so the worker is waiting (blocked or between polls) when
    it arrives; ``latency_*`` (hot): ``args.latency_samples`` probes, each
    sent 2 ms after the one before ran. Also ``worker_pss_kib_c1``: the
    worker's PSS (KiB, all its processes) after the probes.
    """
    client = redis_client()
    warm = f"peers:latency-warmup:{name}"
    proc = start_worker(f"{name}-latency", argv, env)
    out: dict[str, float] = {}
    try:
        # Wait until the worker really runs tasks (rather than a fixed sleep).
        deadline = time.monotonic() + start_timeout
        while client.llen(warm) == 0:
            if time.monotonic() > deadline:
                raise PeerError(f"worker ran nothing within {start_timeout:.0f}s\n"
                                + _log_tail([proc]))
            enqueue(warm, time.time())
            inner = time.monotonic() + 1
            while client.llen(warm) == 0 and time.monotonic() < inner:
                time.sleep(0.005)
        time.sleep(1)  # let any extra warm-up probes finish
        client.delete(warm)
        for prefix, samples, gap in [("latency_cold", args.cold_samples, (0.0, COLD_GAP)),
                                     ("latency", args.latency_samples, (0.002, 0.002))]:
            if not samples:
                continue
            key = f"peers:{prefix}:{name}"
            gaps = random.Random(0)
            values = []
            with Row(prefix):
                for i in range(samples):
                    time.sleep(gaps.uniform(*gap))
                    enqueue(key, time.time())
                    # BLPOP: this process sleeps until the probe's record arrives.
                    got = client.blpop([key], timeout=10)
                    if got is None:
                        raise PeerError(f"latency probe {i} did not run within 10s\n"
                                        + _log_tail([proc]))
                    values.append(float(got[1]) * 1000)
            out.update(_percentiles(values, prefix))
        time.sleep(0.5)
        out["worker_pss_kib_c1"] = float(pss_kib(session_pids(proc.pid)))
    finally:
        stop_worker(proc)
    return out


def _enqueue_row(results: dict, key: str, enqueue: Callable[[str], object], n: int) -> None:
    with Row(key):
        results[key] = enqueue_rate(enqueue, n)


def _drain_row(results: dict, key: str, name: str, enqueue: Callable[[str], object], n: int,
               workers: list[tuple[list[str], dict[str, str]]], args) -> None:
    with Row(key):
        results[key], pss = drain_rate(name, enqueue, n, workers, args.drain_timeout)
    # Idle after its drain (the one without results, where a peer has both).
    results.setdefault(f"worker_pss_kib_c{args.concurrency}", float(pss))


# -- the peers -------------------------------------------------------------------

def peer_rq(args, worker_class: str = "rq.Worker") -> dict:
    from redis import Redis
    from rq import Queue

    from benchmarks.peerapps import rq_tasks

    queue = Queue(rq_tasks.QUEUE, connection=Redis.from_url(REDIS_URL))

    def enqueue(counter):
        return queue.enqueue(rq_tasks.noop, counter, result_ttl=0)

    def enqueue_latency(key, sent):
        return queue.enqueue(rq_tasks.latency, key, sent, result_ttl=0)

    rq = str(BIN / "rq")
    base = ["--url", REDIS_URL, "--worker-class", worker_class, "--quiet"]
    name = "rq" if worker_class == "rq.Worker" else "rq-simple"
    results: dict[str, float] = {}
    _reset()
    _enqueue_row(results, "enqueue_no_result_per_s", enqueue, args.tasks)
    _reset()
    # One `rq worker` process per executor: RQ has one job at a time per worker.
    worker = [rq, "worker", *base, rq_tasks.QUEUE]
    _drain_row(results, "drain_no_result_per_s", name, enqueue, args.tasks,
               [(worker, _env())] * args.concurrency, args)
    _reset()
    results.update(latency_ms(name, enqueue_latency, args,
                                      [rq, "worker", *base, rq_tasks.QUEUE], _env()))
    _reset()
    return results


def peer_rq_simple(args) -> dict:
    """RQ with SimpleWorker: no fork per job, RQ's fastest worker."""
    return peer_rq(args, worker_class="rq.SimpleWorker")


def peer_huey(args) -> dict:
    from benchmarks.peerapps import huey_tasks

    consumer = [str(BIN / "huey_consumer"), "benchmarks.peerapps.huey_tasks.huey", "--quiet"]
    results: dict[str, float] = {}
    huey_tasks.huey.flush()
    _reset()
    _enqueue_row(results, "enqueue_no_result_per_s", huey_tasks.noop, args.tasks)
    _reset()
    _drain_row(results, "drain_no_result_per_s", "huey", huey_tasks.noop, args.tasks,
               [([*consumer, "-w", str(args.concurrency), "-k", "process"], _env())], args)
    _reset()
    results.update(latency_ms("huey", huey_tasks.latency, args,
                                      [*consumer, "-w", "1", "-k", "thread"], _env()))
    _reset()
    return results


def peer_dramatiq(args) -> dict:
    from benchmarks.peerapps import dramatiq_tasks

    def cli(processes: int) -> list[str]:
        return [str(BIN / "dramatiq"), "benchmarks.peerapps.dramatiq_tasks",
                "-p", str(processes), "-t", "1", "-Q", dramatiq_tasks.QUEUE]

    env = _env(dramatiq_queue_prefetch=str(args.prefetch))
    results: dict[str, float] = {}
    _reset()
    _enqueue_row(results, "enqueue_no_result_per_s", dramatiq_tasks.noop.send, args.tasks)
    _reset()
    _drain_row(results, "drain_no_result_per_s", "dramatiq", dramatiq_tasks.noop.send,
               args.tasks, [(cli(args.concurrency), env)], args)
    _reset()
    results.update(latency_ms("dramatiq", dramatiq_tasks.latency.send, args, cli(1), env))
    _reset()
    return results


def _celery_worker(app: str, queue: str, concurrency: int, prefetch: int) -> list[str]:
    return [str(BIN / "celery"), "-A", app, "worker", "-P", "prefork", "-c", str(concurrency),
            "--prefetch-multiplier", str(prefetch), "-Q", queue, "-l", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def peer_celery(args) -> dict:
    from benchmarks.peerapps import celery_tasks

    app = "benchmarks.peerapps.celery_tasks"
    results: dict[str, float] = {}
    _reset()
    _enqueue_row(results, "enqueue_no_result_per_s", celery_tasks.noop.delay, args.tasks)
    _reset()
    _drain_row(results, "drain_no_result_per_s", "celery", celery_tasks.noop.delay, args.tasks,
               [(_celery_worker(app, celery_tasks.QUEUE, args.concurrency, args.prefetch),
                 _env())], args)
    _reset()
    results.update(latency_ms(
        "celery", celery_tasks.latency.delay, args,
        _celery_worker(app, celery_tasks.QUEUE, 1, args.prefetch), _env()))
    _reset()
    return results


def _ensure_schema(settings_module: str = "celery_db_settings") -> None:
    import psycopg

    settings = importlib.import_module(f"benchmarks.peerapps.{settings_module}")

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"],
                         dbname=db["NAME"], autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.PEERS_SCHEMA}"')


def peer_celery_db(args) -> dict:
    """Celery + django-celery-results: drain with every result stored in PostgreSQL."""
    _ensure_schema()
    # Imported first: it sets up Django, which the two imports below need.
    celery_db_tasks = importlib.import_module("benchmarks.peerapps.celery_db_tasks")
    from django.core.management import call_command
    from django_celery_results.models import TaskResult

    call_command("migrate", "django_celery_results", verbosity=0)
    n = args.tasks // 2  # as run.py's drain_results_in_postgres_per_s
    app = "benchmarks.peerapps.celery_db_tasks"
    results: dict[str, float] = {}
    TaskResult.objects.all().delete()
    _reset()
    _drain_row(results, "drain_results_in_postgres_per_s", "celery-db",
               celery_db_tasks.noop_stored.delay, n,
               [(_celery_worker(app, celery_db_tasks.QUEUE, args.concurrency, args.prefetch),
                 _env())], args)
    results["results_stored"] = TaskResult.objects.count() - WARM_TASKS
    TaskResult.objects.all().delete()
    _reset()
    return results


def peer_django_tasks_db(args) -> dict:
    """django-tasks + django-tasks-db: every task's row is its result, in PostgreSQL.

    Drain: two ``db_worker`` processes (one task at a time each); latency:
    one; each polling every ``--tasks-db-interval`` seconds when idle (it has
    no wake-up: an idle worker sleeps that long between looks).
    """
    _ensure_schema("django_tasks_db_settings")
    # Imported first: it sets up Django, which the imports below need.
    tasks_db = importlib.import_module("benchmarks.peerapps.django_tasks_db_tasks")
    from django.core.management import call_command
    from django.db import transaction
    from django_tasks_db.models import DBTaskResult

    call_command("migrate", "django_tasks_database", verbosity=0)
    env = _env(DJANGO_SETTINGS_MODULE="benchmarks.peerapps.django_tasks_db_settings")

    def worker(worker_id: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "django", "db_worker", "--queue-name", tasks_db.QUEUE,
                "--no-startup-delay", "--no-reload", "--verbosity", "0",
                "--worker-id", worker_id, *extra]

    def clear() -> None:
        DBTaskResult.objects.filter(queue_name=tasks_db.QUEUE).delete()
        _reset()

    results: dict[str, float] = {}
    clear()
    # Its enqueue always writes the task's row, which is also its result:
    # the same work as djtasks' enqueue with a PENDING row.
    _enqueue_row(results, "enqueue_with_result_row_per_s", tasks_db.noop.enqueue,
                 args.tasks // 4)
    clear()

    def in_transaction(counter: str) -> None:
        with transaction.atomic():
            for _ in range(args.tasks):
                tasks_db.noop.enqueue(counter)

    # As measure.py's: N enqueues inside one transaction.atomic(), its commit included.
    with Row("enqueue_in_transaction_per_s"):
        started = time.perf_counter()
        in_transaction("peers:enqueue")
        results["enqueue_in_transaction_per_s"] = args.tasks / (time.perf_counter() - started)
    clear()
    n = args.tasks // 2  # as run.py's drain_results_in_postgres_per_s
    interval = ["--interval", str(args.tasks_db_interval)]
    _drain_row(results, "drain_results_in_postgres_per_s", "django-tasks-db",
               tasks_db.noop.enqueue, n,
               [(worker(f"drain-{i}", *interval), env) for i in range(args.concurrency)], args)
    results["results_stored"] = DBTaskResult.objects.filter(
        queue_name=tasks_db.QUEUE, status="SUCCESSFUL").count() - WARM_TASKS
    clear()
    results.update(latency_ms(
        "django-tasks-db", tasks_db.latency.enqueue, args,
        worker("latency", *interval), env))
    clear()
    return results


PEERS: dict[str, tuple[str, Callable[[argparse.Namespace], dict]]] = {
    # name: (distribution whose import decides the skip, function)
    "rq": ("rq", peer_rq),
    "rq-simple": ("rq", peer_rq_simple),
    "huey": ("huey", peer_huey),
    "dramatiq": ("dramatiq", peer_dramatiq),
    "celery": ("celery", peer_celery),
    "celery-db": ("django_celery_results", peer_celery_db),
    "django-tasks-db": ("django_tasks_db", peer_django_tasks_db),
}

REQUIRES = {
    "rq": ["rq", "redis"],
    "rq-simple": ["rq", "redis"],
    "huey": ["huey", "redis"],
    "dramatiq": ["dramatiq", "redis"],
    "celery": ["celery", "redis"],
    "celery-db": ["celery", "redis", "django", "django_celery_results", "psycopg"],
    "django-tasks-db": ["redis", "django", "django_tasks", "django_tasks_db", "psycopg"],
}


def _importable(name: str) -> str | None:
    """None if every module the peer needs imports, else the reason it does not."""
    for module in REQUIRES[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import-time failure means: skip this peer
            return f"cannot import {module}: {exc.__class__.__name__}: {exc}"
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "?"


VERSIONS = {  # what each peer's version string is made of
    "celery-db": ["celery", "django_celery_results"],
    "django-tasks-db": ["django_tasks", "django_tasks_db"],
}


def _versions(name: str, dist: str) -> str:
    dists = VERSIONS.get(name, [dist])
    return " + ".join(f"{d.replace('_', '-')} {_version(d)}" if len(dists) > 1 else _version(d)
                      for d in dists)


def measure_here(name: str, args: argparse.Namespace) -> dict:
    """Measure ``name`` ``args.repeat`` times in this process: medians and runs."""
    runs, others = [], []
    for _ in range(args.repeat):
        Row.others = {}
        runs.append(PEERS[name][1](args))
        others.append(Row.others)
    figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    # The most any of the runs saw, so a loaded run is never hidden by the median.
    most = {key: max(o.get(key, 0.0) for o in others) for key in others[0]}
    return {"figures": figures, "runs": runs, "others_cpu": most}


def measure_in_child(name: str, args: argparse.Namespace) -> dict:
    """Measure ``name`` in a child process (``--in-process --only name``).

    Raises PeerError if it fails; on SIGTERM or Ctrl-C the child is told to
    stop its workers, and waited for."""
    out = LOG_DIR / f"{name}.json"
    argv = [sys.executable, __file__, "--in-process", "--only", name, "--json", str(out),
            "--tasks", str(args.tasks), "--concurrency", str(args.concurrency),
            "--prefetch", str(args.prefetch), "--latency-samples", str(args.latency_samples),
            "--cold-samples", str(args.cold_samples), "--drain-timeout",
            str(args.drain_timeout), "--repeat", str(args.repeat),
            "--tasks-db-interval", str(args.tasks_db_interval)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env(PEERS_LOG_DIR=str(LOG_DIR)))
    try:
        proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        raise
    if not out.exists():
        raise PeerError(f"its child process exited {proc.returncode} without results")
    got = json.loads(out.read_text())
    if name in got["errors"]:
        raise PeerError(got["errors"][name])
    return {"figures": got["peers"][name], "runs": got["runs"][name],
            "others_cpu": got["others_cpu"][name]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--prefetch", type=int, default=32,
                        help="prefetch per executor where the peer has one (Dramatiq, Celery)")
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="hot latency probes, each 2 ms after the one before ran")
    parser.add_argument("--cold-samples", type=int, default=200,
                        help="cold latency probes, each after U(0, 100 ms) idle")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per peer; figures are their medians")
    parser.add_argument("--tasks-db-interval", type=float, default=0.1,
                        help="seconds django-tasks-db's latency worker sleeps between looks "
                             "when idle (db_worker --interval; its default is 1)")
    parser.add_argument("--drain-timeout", type=float, default=300,
                        help="seconds one drain may take before the peer is given up")
    parser.add_argument("--only", action="append", choices=sorted(PEERS),
                        help="measure only this peer (repeatable)")
    parser.add_argument("--in-process", action="store_true",
                        help="measure the peers in this process rather than one child each")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    global REDIS_URL
    if not REDIS_URL:  # run alone: a private redis-server, which the children inherit
        server = PrivateRedis().__enter__()
        atexit.register(server.__exit__)
        REDIS_URL = os.environ["PEERS_REDIS_URL"] = server.url
        os.environ["PEERS_REDIS_PID"] = str(server.pid)

    out: dict[str, dict] = {"peers": {}, "runs": {}, "others_cpu": {}, "skipped": {},
                            "errors": {},
                            "versions": {},
                            "config": {"tasks": args.tasks, "concurrency": args.concurrency,
                                       "prefetch": args.prefetch,
                                       "latency_samples": args.latency_samples,
                                       "cold_samples": args.cold_samples,
                                       "cold_gap_s": [0.0, COLD_GAP],
                                       "repeat": args.repeat,
                                       "tasks_db_interval": args.tasks_db_interval,
                                       "redis": REDIS_URL, "logs": str(LOG_DIR)}}
    try:
        redis_client().ping()
    except Exception as exc:  # no Redis: nothing can be measured
        sys.exit(f"peers: Redis at {REDIS_URL} unreachable: {exc}")
    try:
        for name, (dist, _) in PEERS.items():
            if args.only and name not in args.only:
                continue
            reason = _importable(name)
            if reason:
                print(f"peers: skipping {name}: {reason}", flush=True)
                out["skipped"][name] = reason
                continue
            out["versions"][name] = _versions(name, dist)
            if not args.in_process:
                print(f"peers: measuring {name} {out['versions'][name]} ...", flush=True)
            started = time.monotonic()
            try:
                got = (measure_here if args.in_process else measure_in_child)(name, args)
                out["peers"][name], out["runs"][name] = got["figures"], got["runs"]
                out["others_cpu"][name] = got["others_cpu"]
            except PeerError as exc:
                out["errors"][name] = str(exc)
            except Exception as exc:  # one broken peer must not stop the others
                out["errors"][name] = f"{exc.__class__.__name__}: {exc}"
            finally:
                _reset()
            if not args.in_process:
                if name in out["errors"]:
                    print(f"peers: {name} failed: {out['errors'][name]}", flush=True)
                for key, value in out["peers"].get(name, {}).items():
                    print(f"{name:15s} {key:34s} {value:10.1f}", flush=True)
                print(f"peers: {name} took {time.monotonic() - started:.0f}s", flush=True)
    finally:
        # Written even when interrupted: a parent reads what was measured.
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM from `timeout`: workers are stopped
        sys.exit(f"peers: interrupted ({exc or 'SIGINT'}); workers stopped")
