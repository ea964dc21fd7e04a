"""Tasks the canvas tests run (tests/test_canvas*.py). Calls are counted in
Redis, as in tests/app/tasks.py, so a test sees how often each ran."""

import json
import time

from djtasks import shared_task

from .tasks import _redis, bump


@shared_task
def tsum(numbers, counter=None):
    """A chord callback: the sum of its members' results, counted."""
    if counter:
        bump(counter)
        _redis().rpush(counter + ":args", json.dumps(numbers))
    return sum(numbers)


@shared_task
def double(x):
    return 2 * x


@shared_task(acks_late=True)
def double_late(x, counter, seconds=0.0):
    """Counted per run; sleeps, so a test can kill its worker mid-chord."""
    bump(counter)
    time.sleep(seconds)
    return 2 * x


@shared_task
def boom(x=None):
    raise ValueError(f"boom {x}")


@shared_task
def errback_new(request, exc, traceback, counter):
    """Celery's errback form: (request, exc, traceback) of the failed task."""
    bump(counter)
    _redis().rpush(counter + ":calls", json.dumps(
        [request.id, request.task, type(exc).__name__, str(exc), "Traceback" in traceback]))


@shared_task
def errback_old(task_id, counter=None):
    """The old errback form: the failed task's id."""
    if counter:
        bump(counter)
        _redis().rpush(counter + ":calls", json.dumps(task_id))
    return task_id


@shared_task
def note(value, counter):
    """A link: records what it was given."""
    bump(counter)
    _redis().rpush(counter + ":calls", json.dumps(value))
    return value


@shared_task
def stall(x, counter, seconds=60.0):
    """Counted when it starts, then sleeps: a test kills its executor then."""
    bump(counter)
    time.sleep(seconds)
    return x
