"""``@django.tasks.task`` functions for tests/test_django_tasks.py (Django 6+
only: nothing imports this module on Django 5.2)."""

import asyncio

import redis
from django.conf import settings
from django.tasks import TaskContext, task


@task
def add(x, y):
    return x + y


@task
def fail(message):
    raise ValueError(message)


@task
def return_an_object():
    return object()


@task(takes_context=True)
def context_of(context: TaskContext, label):
    result = context.task_result
    return {"id": result.id, "attempt": context.attempt, "status": result.status,
            "worker_ids": result.worker_ids, "args": result.args,
            "started": result.started_at is not None}


@task
async def async_add(x, y):
    await asyncio.sleep(0)
    return x + y


@task(queue_name="other")
def append(key, value):
    """RPUSH ``value`` to Redis list ``key``: the order in which tasks ran."""
    redis.Redis.from_url(settings.DJTASKS["BROKER_URL"]).rpush(key, value)
