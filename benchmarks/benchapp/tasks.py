"""The benchmark's no-op tasks: the body INCRs a Redis counter (DESIGN.md section 6)."""

import time

import redis
from django.conf import settings

from djtasks import shared_task

_client = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.BENCH_REDIS_URL)
    return _client


@shared_task(ignore_result=True)
def noop(counter: str) -> None:
    client().incr(counter)


@shared_task
def noop_stored(counter: str) -> None:
    client().incr(counter)


@shared_task(ignore_result=True)
def latency(key: str, sent: float) -> None:
    client().rpush(key, time.time() - sent)
