#!/usr/bin/env python
"""djtasks' benchmark: enqueue rate, drain rate, enqueue-to-start latency.

    python benchmarks/run.py [--tasks N] [--concurrency C] [--json FILE]
                             [--peers PYTHON]

Runs against the local Redis (db 14) and PostgreSQL; the worker is a real
``runworker -c C --burst`` subprocess. Figures are tasks per second (higher
is better) and milliseconds. Peers, where installed, are measured in the
same run by benchmarks/peers.py on the same services; quote ratios, not
absolute figures (DESIGN.md section 6). ``--peers PYTHON`` runs
benchmarks/peers.py with that interpreter (a virtualenv holding the peers,
see benchmarks/README.md) after djtasks' own figures, and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from benchmarks.benchapp import tasks  # noqa: E402
from djtasks.brokers import get_broker  # noqa: E402
from djtasks.models import TaskResult  # noqa: E402


def _reset() -> None:
    client = tasks.client()
    keys = list(client.scan_iter(match="*djtasks-bench*", count=1000))
    keys += list(client.scan_iter(match="bench:*", count=1000))
    if keys:
        client.delete(*keys)
    TaskResult.objects.all().delete()


def enqueue_rate(task, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        task.delay("bench:enqueue")
    return n / (time.perf_counter() - started)


def drain_rate(task, n: int, concurrency: int) -> float:
    """Enqueue n tasks, then time a burst worker from its first task to the last."""
    counter = "bench:drain"
    for _ in range(n):
        task.delay(counter)
    client = tasks.client()
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", "-c", str(concurrency),
         "--burst", "--loglevel", "WARNING"],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL,
    )
    while int(client.get(counter) or 0) == 0:
        time.sleep(0.0005)
    first = time.perf_counter()
    while int(client.get(counter) or 0) < n:
        time.sleep(0.001)
    last = time.perf_counter()
    worker.wait(60)
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


_worker_rss: list[int] = []


def latency_ms(samples: int) -> tuple[float, float]:
    """Enqueue-to-start latency with one idle executor: p50 and p99 in ms.

    Also records the worker's resident memory (supervisor + executor, KiB)
    after the samples ran, in ``_worker_rss``.
    """
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runworker", "-c", "1", "--loglevel",
         "WARNING"],
        cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL,
    )
    client = tasks.client()
    key = "bench:latency"
    try:
        time.sleep(2)  # worker start-up
        for _ in range(samples):
            tasks.latency.delay(key, time.time())
            deadline = time.monotonic() + 5
            while client.llen(key) < _ + 1 and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(0.002)
        _worker_rss.append(rss_kib(worker.pid))
    finally:
        worker.terminate()
        worker.wait(30)
    values = sorted(float(v) * 1000 for v in client.lrange(key, 0, -1))
    return statistics.median(values), values[int(len(values) * 0.99) - 1]


# Rates are better high, latencies better low: every ratio is > 1 where djtasks is ahead.
PEER_METRICS = [
    ("enqueue_no_result_per_s", "rate"),
    ("drain_no_result_per_s", "rate"),
    ("drain_results_in_postgres_per_s", "rate"),
    ("latency_p50_ms", "latency"),
    ("latency_p99_ms", "latency"),
]


def run_peers(python: str, args: argparse.Namespace) -> dict:
    """Run benchmarks/peers.py with `python` on the same workload; return its JSON."""
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="djtasks-bench-") as tmp:
        out = Path(tmp) / "peers.json"
        proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "peers.py"), "--tasks", str(args.tasks),
             "--concurrency", str(args.concurrency), "--latency-samples",
             str(args.latency_samples), "--json", str(out)],
            cwd=ROOT, env={k: v for k, v in os.environ.items()
                           if k != "DJANGO_SETTINGS_MODULE"},
        )
        try:
            proc.wait(args.peers_timeout)
        except subprocess.TimeoutExpired:
            print(f"peers: still running after {args.peers_timeout:.0f}s, stopping it",
                  file=sys.stderr)
            proc.send_signal(signal.SIGTERM)  # peers.py stops its workers on SIGTERM
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        if not out.exists():
            return {"peers": {}, "errors": {"peers.py": f"exit {proc.returncode}, no JSON"}}
        return json.loads(out.read_text())


def print_ratios(djtasks: dict[str, float], peers: dict) -> None:
    print()
    print("djtasks vs peers, same run (ratio > 1: djtasks ahead; rates djtasks/peer, "
          "latency peer/djtasks)")
    print(f"{'metric':34s} {'peer':10s} {'peer':>10s} {'djtasks':>10s} {'ratio':>7s}")
    for metric, kind in PEER_METRICS:
        ours = djtasks.get(metric)
        for name, figures in peers.get("peers", {}).items():
            theirs = figures.get(metric)
            if theirs is None or ours is None:
                continue
            ratio = ours / theirs if kind == "rate" else theirs / ours
            print(f"{metric:34s} {name:10s} {theirs:10.1f} {ours:10.1f} {ratio:7.2f}")
    for name, reason in {**peers.get("skipped", {}), **peers.get("errors", {})}.items():
        print(f"{name}: not measured: {reason.splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peers", metavar="PYTHON",
                        help="after djtasks, measure the peers with benchmarks/peers.py "
                             "run by this interpreter (its environment holds the peers)")
    parser.add_argument("--peers-timeout", type=float, default=3600,
                        help="seconds the whole peers run may take")
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
    results["drain_no_result_per_s"] = drain_rate(tasks.noop, n, args.concurrency)
    _reset()
    results["drain_results_in_postgres_per_s"] = drain_rate(tasks.noop_stored, n // 2,
                                                            args.concurrency)
    _reset()
    p50, p99 = latency_ms(args.latency_samples)
    results["latency_p50_ms"], results["latency_p99_ms"] = p50, p99
    if _worker_rss:
        results["worker_rss_kib_c1"] = float(_worker_rss[-1])
    _reset()
    for key, value in results.items():
        print(f"djtasks {key:34s} {value:10.1f}")
    output: dict = {"djtasks": results}
    if args.peers:
        peers = run_peers(args.peers, args)
        print_ratios(results, peers)
        output["peers"] = peers
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
