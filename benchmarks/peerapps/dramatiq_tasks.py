"""Dramatiq: RedisBroker on the private server, default middleware, no Results middleware."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peerapps.common import REDIS_URL, incr, record_latency

QUEUE = "peers-dramatiq"
broker = RedisBroker(url=REDIS_URL, namespace="peers-dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(counter: str) -> None:
    incr(counter)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def latency(key: str, sent: float) -> None:
    record_latency(key, sent)
