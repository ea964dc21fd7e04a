"""django-tasks + django-tasks-db: every task is a row, which is also its result.

The ``manage.py db_worker`` of django-tasks-db runs these; a task's row keeps
its status and return value (there is no way to keep no result).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.peerapps.django_tasks_db_settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django_tasks import task  # noqa: E402

from benchmarks.peerapps.common import incr, record_latency  # noqa: E402

QUEUE = settings.QUEUE


@task(queue_name=QUEUE)
def noop(counter: str) -> None:
    incr(counter)


@task(queue_name=QUEUE)
def latency(key: str, sent: float) -> None:
    record_latency(key, sent)
