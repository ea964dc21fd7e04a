"""What every peer's task module shares: the Redis (the private server peers.py
or run.py started, ``PEERS_REDIS_URL``) and the counter client."""

from __future__ import annotations

import os
import time

import redis

REDIS_URL = os.environ.get("PEERS_REDIS_URL", "")

_client: redis.Redis | None = None


def client() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def incr(counter: str) -> None:
    client().incr(counter)


def record_latency(key: str, sent: float) -> None:
    client().rpush(key, time.time() - sent)
