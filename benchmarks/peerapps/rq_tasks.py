"""RQ: plain functions, enqueued with result_ttl=0 (no stored result)."""

from __future__ import annotations

from benchmarks.peerapps.common import incr, record_latency

QUEUE = "peers-rq"


def noop(counter: str) -> None:
    incr(counter)


def latency(key: str, sent: float) -> None:
    record_latency(key, sent)
