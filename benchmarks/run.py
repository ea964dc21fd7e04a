#!/usr/bin/env python
"""djtasks' benchmark: enqueue rate, drain rate, enqueue-to-start latency.

    python benchmarks/run.py [--broker redis|db-postgres|db-sqlite|all]
                             [--tasks N] [--repeat R] [--json FILE]
                             [--peers PYTHON [--peers-only NAME]]

Each broker is measured by benchmarks/measure.py in a process of its own,
with ``BENCH_BROKER`` set so that benchmarks/settings.py, and the real
``runworker -c C --burst`` subprocesses, use that broker and database:

* ``redis``: the local Redis (db 14), results in PostgreSQL;
* ``db-postgres``: ``db://default`` on the benchmark's PostgreSQL;
* ``db-sqlite``: ``db://default`` on a SQLite file in a temporary directory.

The tasks' counters are in Redis whatever the broker. With ``--repeat R``
the brokers are measured in turn R times (broker by broker within a round)
and every figure is the median of its R runs. Figures are tasks per second
(higher is better) and milliseconds. ``--peers PYTHON`` then runs
benchmarks/peers.py with that interpreter (a virtualenv holding the peers,
see benchmarks/README.md) on the same services and prints the ratios;
quote ratios, not absolute figures (DESIGN.md section 6).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BROKERS = ["redis", "db-postgres", "db-sqlite"]

# Rates are better high, latencies better low: every ratio is > 1 where djtasks is ahead.
PEER_METRICS = [
    ("enqueue_no_result_per_s", "rate"),
    ("enqueue_with_result_row_per_s", "rate"),
    ("drain_no_result_per_s", "rate"),
    ("drain_results_in_postgres_per_s", "rate"),
    ("latency_p50_ms", "latency"),
    ("latency_p99_ms", "latency"),
    ("latency_cold_p50_ms", "latency"),
    ("latency_cold_p99_ms", "latency"),
]


def _broker_env(broker: str, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "BENCH_BROKER": broker,
           "DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    if broker == "db-sqlite":
        env["BENCH_SQLITE_PATH"] = str(tmp / "bench.sqlite3")
    return env


def measure(broker: str, tmp: Path, args: argparse.Namespace) -> dict:
    """One run of benchmarks/measure.py on ``broker``: its figures and config."""
    out = tmp / f"{broker}.json"
    out.unlink(missing_ok=True)
    sys.stdout.flush()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "measure.py"), "--tasks", str(args.tasks),
         "--concurrency", str(args.concurrency), "--latency-samples",
         str(args.latency_samples), "--cold-samples", str(args.cold_samples),
         "--json", str(out)],
        cwd=ROOT, env=_broker_env(broker, tmp), timeout=args.run_timeout,
    )
    if proc.returncode or not out.exists():
        raise SystemExit(f"run.py: measuring {broker} failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run_peers(python: str, args: argparse.Namespace) -> dict:
    """Run benchmarks/peers.py with `python` on the same workload; return its JSON."""
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="djtasks-bench-") as tmp:
        out = Path(tmp) / "peers.json"
        only = [arg for name in args.peers_only or [] for arg in ("--only", name)]
        proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "peers.py"), "--tasks", str(args.tasks),
             "--concurrency", str(args.concurrency), "--latency-samples",
             str(args.latency_samples), "--cold-samples", str(args.cold_samples),
             "--repeat", str(args.repeat), *only,
             "--json", str(out)],
            cwd=ROOT, env={k: v for k, v in os.environ.items()
                           if k not in ("DJANGO_SETTINGS_MODULE", "BENCH_BROKER")},
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


def print_figures(figures: dict[str, dict[str, float]]) -> None:
    brokers = list(figures)
    print()
    print(f"djtasks {'metric':34s}" + "".join(f" {b:>12s}" for b in brokers))
    for key in figures[brokers[0]]:
        print(f"djtasks {key:34s}" + "".join(f" {figures[b].get(key, 0):12.1f}"
                                             for b in brokers))


def print_ratios(djtasks: dict[str, dict[str, float]], peers: dict) -> None:
    print()
    print("djtasks vs peers, same run (ratio > 1: djtasks ahead; rates djtasks/peer, "
          "latency peer/djtasks)")
    print(f"{'metric':34s} {'broker':12s} {'peer':15s} {'peer':>10s} {'djtasks':>10s} "
          f"{'ratio':>7s}")
    for metric, kind in PEER_METRICS:
        for broker, figures in djtasks.items():
            ours = figures.get(metric)
            for name, theirs_all in peers.get("peers", {}).items():
                theirs = theirs_all.get(metric)
                if theirs is None or ours is None:
                    continue
                ratio = ours / theirs if kind == "rate" else theirs / ours
                print(f"{metric:34s} {broker:12s} {name:15s} {theirs:10.1f} {ours:10.1f} "
                      f"{ratio:7.2f}")
    for name, reason in {**peers.get("skipped", {}), **peers.get("errors", {})}.items():
        print(f"{name}: not measured: {reason.splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=[*BROKERS, "all"], default="redis",
                        help="the broker to measure djtasks on; all: each in turn")
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--cold-samples", type=int, default=0,
                        help="latency probes sent after 0.25-0.5 s idle each, so the worker "
                             "is waiting when they arrive (0: none)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per broker (and per peer); figures are their medians")
    parser.add_argument("--run-timeout", type=float, default=1800,
                        help="seconds one broker's run may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peers", metavar="PYTHON",
                        help="after djtasks, measure the peers with benchmarks/peers.py "
                             "run by this interpreter (its environment holds the peers)")
    parser.add_argument("--peers-only", action="append", metavar="NAME",
                        help="measure only this peer (repeatable; peers.py --only)")
    parser.add_argument("--peers-timeout", type=float, default=3600,
                        help="seconds the whole peers run may take")
    args = parser.parse_args()
    brokers = BROKERS if args.broker == "all" else [args.broker]
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in brokers}
    configs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="djtasks-bench-") as tmp:
        for round_ in range(args.repeat):
            for broker in brokers:
                print(f"djtasks: measuring {broker} (run {round_ + 1}/{args.repeat}) ...",
                      flush=True)
                got = measure(broker, Path(tmp), args)
                runs[broker].append(got["figures"])
                configs[broker] = got["config"]
    figures = {b: medians(r) for b, r in runs.items()}
    print_figures(figures)
    output: dict = {"djtasks": figures, "runs": runs,
                    "config": {"tasks": args.tasks, "concurrency": args.concurrency,
                               "latency_samples": args.latency_samples,
                               "cold_samples": args.cold_samples,
                               "repeat": args.repeat, "brokers": configs}}
    if args.peers:
        peers = run_peers(args.peers, args)
        print_ratios(figures, peers)
        output["peers"] = peers
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
