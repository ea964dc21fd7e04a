"""Celery: Redis broker on the private server, ignore_result, prefetch multiplier 32."""

from __future__ import annotations

from celery import Celery

from benchmarks.peerapps.common import REDIS_URL, incr, record_latency

QUEUE = "peers-celery"
app = Celery("peers_celery", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=32,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(ignore_result=True)
def noop(counter: str) -> None:
    incr(counter)


@app.task(ignore_result=True)
def latency(key: str, sent: float) -> None:
    record_latency(key, sent)
