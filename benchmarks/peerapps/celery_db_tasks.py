"""Celery storing results in PostgreSQL through django-celery-results."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.peerapps.celery_db_settings")

import django

django.setup()

from celery import Celery  # noqa: E402

from benchmarks.peerapps.common import REDIS_URL, incr  # noqa: E402

QUEUE = "peers-celerydb"
app = Celery("peers_celerydb", broker=REDIS_URL)
app.conf.update(
    result_backend="django-db",
    task_ignore_result=False,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=32,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def noop_stored(counter: str) -> None:
    incr(counter)
