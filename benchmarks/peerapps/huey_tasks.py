"""Huey: RedisHuey on the private server with results off (a no-op returns None anyway)."""

from __future__ import annotations

from huey import RedisHuey

from benchmarks.peerapps.common import REDIS_URL, incr, record_latency

huey = RedisHuey("peers-bench", url=REDIS_URL, results=False)


@huey.task()
def noop(counter: str) -> None:
    incr(counter)


@huey.task()
def latency(key: str, sent: float) -> None:
    record_latency(key, sent)
