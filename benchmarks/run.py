#!/usr/bin/env python
"""djtasks' benchmark: enqueue rate, drain rate, enqueue-to-start latency, PSS.

    python benchmarks/run.py [--broker redis|db-postgres|db-sqlite|all]
                             [--tasks N] [--repeat R] [--json FILE]
                             [--peers PYTHON [--peers-only NAME]]

The run starts a private ``redis-server`` on a free port (never the shared
6379) and stops it at the end: the Redis broker's keys, the tasks' counters
and the peers' brokers live there. Each broker is measured by
benchmarks/measure.py in a process of its own, with ``BENCH_BROKER`` set so
that benchmarks/settings.py, and the real ``runworker`` subprocesses, use
that broker and database:

* ``redis``: the private Redis, results in PostgreSQL;
* ``db-postgres``: ``db://default`` on the benchmark's PostgreSQL;
* ``db-sqlite``: ``db://default`` on a SQLite file in a temporary directory.

djtasks runs at its defaults (``BENCH_PREFETCH`` overrides the prefetch
multiplier). With ``--repeat R`` the run makes R rounds, each measuring
every broker and then (with ``--peers PYTHON``, benchmarks/peers.py run by
that interpreter, a virtualenv holding the peers) every peer once, so that
djtasks and its peers alternate; every figure is the median of its R runs.
Each row also records the CPU other processes on the machine used while it
ran (the most of any run); above 0.1 core the row is marked ``*``.
Figures are tasks per second (higher is better), milliseconds and KiB;
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
sys.path.insert(0, str(ROOT))

from benchmarks.machine import LOADED, PrivateRedis  # noqa: E402

BROKERS = ["redis", "db-postgres", "db-sqlite"]

# Rates are better high, latencies better low: every ratio is > 1 where djtasks is ahead.
PEER_METRICS = [
    ("enqueue_no_result_per_s", "rate"),
    ("enqueue_in_transaction_per_s", "rate"),
    ("enqueue_with_result_row_per_s", "rate"),
    ("drain_no_result_per_s", "rate"),
    ("drain_results_in_postgres_per_s", "rate"),
    ("latency_p50_ms", "latency"),
    ("latency_p99_ms", "latency"),
    ("latency_cold_p50_ms", "latency"),
    ("latency_cold_p99_ms", "latency"),
    ("worker_pss_kib_c1", "latency"),
    ("worker_pss_kib_c2", "latency"),
]
# The others_cpu row each figure was measured in.
ROW_OF = {"latency_p50_ms": "latency", "latency_p99_ms": "latency",
          "latency_cold_p50_ms": "latency_cold", "latency_cold_p99_ms": "latency_cold",
          "worker_pss_kib_c1": "memory", "worker_pss_kib_c2": "memory"}  # not timed: no mark


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


def most(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = {key for run in runs for key in run}
    return {key: max(run.get(key, 0.0) for run in runs) for key in sorted(keys)}


def run_peers(python: str, args: argparse.Namespace) -> dict:
    """Run benchmarks/peers.py once (``--repeat 1``) with `python` on the same
    workload; return its JSON."""
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="djtasks-bench-") as tmp:
        out = Path(tmp) / "peers.json"
        only = [arg for name in args.peers_only or [] for arg in ("--only", name)]
        proc = subprocess.Popen(
            [python, str(ROOT / "benchmarks" / "peers.py"), "--tasks", str(args.tasks),
             "--concurrency", str(args.concurrency), "--latency-samples",
             str(args.latency_samples), "--cold-samples", str(args.cold_samples),
             "--repeat", "1", *only,
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


def loaded(others: dict[str, float], metric: str) -> str:
    """"*" if other processes used more than LOADED cores during ``metric``'s row."""
    return "*" if others.get(ROW_OF.get(metric, metric), 0.0) > LOADED else " "


def print_figures(figures: dict[str, dict[str, float]],
                  others: dict[str, dict[str, float]]) -> None:
    brokers = list(figures)
    print()
    print(f"djtasks {'metric':34s}" + "".join(f" {b:>13s}" for b in brokers))
    for key in figures[brokers[0]]:
        print(f"djtasks {key:34s}" + "".join(
            f" {figures[b].get(key, 0):12.1f}{loaded(others[b], key)}" for b in brokers))
    print(f"(*: other processes used more than {LOADED} core during that row)")


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
                mark = loaded(peers["others_cpu"].get(name, {}), metric)
                print(f"{metric:34s} {broker:12s} {name:15s} {theirs:10.1f}{mark}"
                      f"{ours:10.1f} {ratio:7.2f}")
    for name, reason in {**peers.get("skipped", {}), **peers.get("errors", {})}.items():
        print(f"{name}: not measured: {reason.splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=[*BROKERS, "all"], default="redis",
                        help="the broker to measure djtasks on; all: each in turn")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=200,
                        help="hot latency probes, each 2 ms after the one before ran")
    parser.add_argument("--cold-samples", type=int, default=200,
                        help="cold latency probes, each after U(0, 100 ms) idle")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds (each broker, then each peer); figures are medians")
    parser.add_argument("--run-timeout", type=float, default=1800,
                        help="seconds one broker's run may take")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--peers", metavar="PYTHON",
                        help="measure the peers too, with benchmarks/peers.py run by this "
                             "interpreter (its environment holds the peers)")
    parser.add_argument("--peers-only", action="append", metavar="NAME",
                        help="measure only this peer (repeatable; peers.py --only)")
    parser.add_argument("--peers-timeout", type=float, default=3600,
                        help="seconds one round of the peers may take")
    args = parser.parse_args()
    brokers = BROKERS if args.broker == "all" else [args.broker]
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in brokers}
    others: dict[str, list[dict[str, float]]] = {b: [] for b in brokers}
    configs: dict[str, dict] = {}
    peer_rounds: list[dict] = []
    with PrivateRedis() as server, tempfile.TemporaryDirectory(prefix="djtasks-bench-") as tmp:
        # djtasks on db 0, the peers on db 1: both on the run's own redis-server.
        os.environ.update(BENCH_REDIS_URL=server.url, BENCH_REDIS_PID=str(server.pid),
                          PEERS_REDIS_URL=server.url[:-1] + "1",
                          PEERS_REDIS_PID=str(server.pid))
        print(f"run.py: private redis-server on port {server.port}", flush=True)
        for round_ in range(args.repeat):
            for broker in brokers:
                print(f"djtasks: measuring {broker} (round {round_ + 1}/{args.repeat}) ...",
                      flush=True)
                got = measure(broker, Path(tmp), args)
                runs[broker].append(got["figures"])
                others[broker].append(got["others_cpu"])
                configs[broker] = got["config"]
            if args.peers:
                print(f"peers: round {round_ + 1}/{args.repeat} ...", flush=True)
                peer_rounds.append(run_peers(args.peers, args))
    figures = {b: medians(r) for b, r in runs.items()}
    loads = {b: most(o) for b, o in others.items()}
    print_figures(figures, loads)
    output: dict = {"djtasks": figures, "others_cpu": loads, "runs": runs,
                    "config": {"tasks": args.tasks, "concurrency": args.concurrency,
                               "latency_samples": args.latency_samples,
                               "cold_samples": args.cold_samples,
                               "repeat": args.repeat, "brokers": configs}}
    if args.peers:
        peers = merge_peer_rounds(peer_rounds)
        print_ratios(figures, peers)
        output["peers"] = peers
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))


def merge_peer_rounds(rounds: list[dict]) -> dict:
    """One peers.py JSON from R rounds: each figure the median of its runs,
    each row's others_cpu the most any run saw."""
    out: dict = {"peers": {}, "runs": {}, "others_cpu": {}, "skipped": {}, "errors": {},
                 "versions": {}, "config": rounds[0].get("config", {}) if rounds else {}}
    names = {name for r in rounds for name in r.get("peers", {})}
    for name in sorted(names):
        got = [r["peers"][name] for r in rounds if name in r.get("peers", {})]
        out["peers"][name] = medians(got)
        out["runs"][name] = got
        out["others_cpu"][name] = most([r["others_cpu"][name] for r in rounds
                                        if name in r.get("others_cpu", {})])
    for r in rounds:
        out["skipped"].update(r.get("skipped", {}))
        out["errors"].update(r.get("errors", {}))
        out["versions"].update(r.get("versions", {}))
    return out


if __name__ == "__main__":
    main()
