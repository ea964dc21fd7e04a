"""Tasks the tests run. Executions are counted in Redis (``counter`` keys),
so a test can see exactly how often a task ran, across processes."""

import os
import time

import redis

from djtasks import shared_task

from .models import Item


def _redis() -> redis.Redis:
    # The shared test Redis, whatever the broker of the test is.
    return redis.Redis.from_url(os.environ.get("DJTASKS_TEST_REDIS_URL",
                                               "redis://127.0.0.1:6379/15"))


def bump(counter: str) -> int:
    return _redis().incr(counter)


def count(counter: str) -> int:
    return int(_redis().get(counter) or 0)


@shared_task
def add(x, y):
    return x + y


@shared_task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@shared_task
def record(counter: str) -> int:
    """INCR ``counter``; returns the new count."""
    return bump(counter)


@shared_task
def record_and_sleep(counter: str, seconds: float) -> int:
    """Count a start, then sleep: for kill -9 and shutdown tests."""
    n = bump(counter)
    time.sleep(seconds)
    bump(counter + ":done")
    return n


@shared_task(acks_late=True)
def record_and_sleep_late(counter: str, seconds: float) -> int:
    n = bump(counter)
    time.sleep(seconds)
    bump(counter + ":done")
    return n


@shared_task
def fail(message: str) -> None:
    raise ValueError(message)


@shared_task(ignore_result=True)
def fire_and_forget(counter: str) -> None:
    bump(counter)


@shared_task(bind=True)
def whoami(self) -> dict:
    r = self.request
    return {"id": r.id, "task": r.task, "retries": r.retries, "queue": r.queue,
            "hostname": r.hostname, "args": r.args, "kwargs": r.kwargs,
            "eta": r.eta, "called_directly": r.called_directly}


@shared_task(bind=True, max_retries=2, default_retry_delay=0)
def flaky(self, counter: str, succeed_on: int) -> int:
    n = bump(counter)
    if n < succeed_on:
        raise self.retry(exc=OSError(f"attempt {n} failed"), countdown=0)
    return n


@shared_task(autoretry_for=(OSError,), max_retries=1, default_retry_delay=0)
def always_oserror(counter: str) -> None:
    bump(counter)
    raise OSError("disk on fire")


@shared_task
def create_item(name: str) -> int:
    return Item.objects.create(name=name).pk


@shared_task
def get_item(pk: int) -> str:
    return Item.objects.get(pk=pk).name


@shared_task
def pid() -> int:
    return os.getpid()


@shared_task(queue="other")
def on_other_queue(counter: str) -> int:
    return bump(counter)


@shared_task
def unencodable_result() -> object:
    return {1, 2, 3}


@shared_task(soft_time_limit=0.3)
def soft_limited(counter: str) -> str:
    from djtasks.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        bump(counter + ":cleanup")
        return "cleaned up"
    return "slept"


@shared_task(acks_late=True)
def kill_my_executor(counter: str) -> None:
    """A poison message: the executor running it dies, every time."""
    import signal

    bump(counter)
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(acks_late=True, reject_on_worker_lost=False)
def sleep_no_redelivery(counter: str, seconds: float) -> None:
    bump(counter)
    time.sleep(seconds)


_hog: list[bytearray] = []


@shared_task
def hog_memory(mib: int) -> int:
    _hog.append(bytearray(mib * 1024 * 1024))
    return os.getpid()


@shared_task
def log_something(text: str) -> None:
    from djtasks.utils import get_task_logger

    get_task_logger(__name__).warning("task says %s", text)


@shared_task(rate_limit="5/s", ignore_result=True)
def rate_limited(key: str) -> None:
    _redis().rpush(key, time.time())


@shared_task
def sleep_then_record(counter: str, seconds: float) -> int:
    time.sleep(seconds)
    return bump(counter)


from . import reloadme  # noqa: E402,F401 - watched by the --reload test


@shared_task(bind=True, max_retries=1, default_retry_delay=0)
def retry_with_bad_args(self) -> None:
    raise self.retry(args=[{1, 2}], countdown=0)


@shared_task(bind=True, max_retries=1, default_retry_delay=0)
def retry_once_report_limits(self) -> dict:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return dict(self.request.message.options)


@shared_task(bind=True, autoretry_for=(Exception,), max_retries=2, default_retry_delay=30)
def retry_with_new_args(self, x: int) -> int:
    """Asks for a retry with new args; autoretry_for must not swallow that Retry."""
    if self.request.retries == 0:
        raise self.retry(args=[x + 100], countdown=0)
    return x


@shared_task(bind=True, max_retries=1, default_retry_delay=0)
def retry_with_big_args(self) -> None:
    raise self.retry(args=["x" * 2 * 1024 * 1024], countdown=0)


@shared_task(bind=True, max_retries=1, default_retry_delay=0, track_started=False,
             time_limit=1)
def retry_then_hang(self, counter: str) -> None:
    """Attempt 0 asks for a retry; attempt 1 hangs past its hard time limit."""
    bump(counter)
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    time.sleep(30)


@shared_task
def exit_the_process(code: int) -> None:
    raise SystemExit(code)


@shared_task
async def async_add(x: int, y: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return x + y


@shared_task
async def async_loop_id() -> int:
    """The id of the loop it ran on: one loop per executor, not one per task."""
    import asyncio

    return id(asyncio.get_running_loop())


@shared_task(soft_time_limit=0.3)
async def async_soft_limited(counter: str) -> str:
    import asyncio

    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        bump(counter + ":cleanup")
        raise
    return "slept"


@shared_task(time_limit=1)
async def async_hangs(counter: str) -> None:
    import asyncio

    bump(counter)
    await asyncio.sleep(30)


@shared_task(bind=True, max_retries=1, default_retry_delay=0)
async def async_retry_once(self) -> int:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return self.request.retries


@shared_task(soft_time_limit=0.1)
def nap_past_soft_limit(seconds: float) -> str:
    """Sleeps past its 0.1 s soft limit: "slept" where soft limits are not enforced."""
    time.sleep(seconds)
    return "slept"


@shared_task
def sigterm_my_process() -> None:
    """Begin a warm shutdown of the worker running it (in-process solo tests)."""
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


@shared_task(bind=True, max_retries=1)
def retry_in_30s(self) -> None:
    raise self.retry(countdown=30)


@shared_task
def log_record_process_name() -> str:
    """The processName a log record made in this task carries."""
    import logging

    return logging.makeLogRecord({}).processName or ""


@shared_task(bind=True)
def record_tick(self, counter: str) -> str:
    """HINCRBY the hash ``counter`` at this run's ``request.scheduled_for``."""
    tick = self.request.scheduled_for.isoformat()
    _redis().hincrby(counter, tick, 1)
    return tick


def _stall_one_beat_publish(sender, body, **kwargs):
    """In a beat runner subprocess started with DJTASKS_TEST_BEAT_STALL=<file>:
    the first publish writes that file and hangs, so the test can SIGKILL the
    runner mid-tick (inside the claim's transaction with the database broker;
    after its commit, before the publish, with Redis)."""
    marker = os.environ["DJTASKS_TEST_BEAT_STALL"]
    if not body["options"].get("scheduled_for") or os.path.exists(marker):
        return
    with open(marker, "w") as f:
        f.write(body["id"])
    time.sleep(600)


if os.environ.get("DJTASKS_TEST_BEAT_STALL"):
    from djtasks.signals import before_task_publish

    before_task_publish.connect(_stall_one_beat_publish, weak=False)

# The canvas tests' and the Celery-style tests' tasks, registered with these.
from . import canvas_tasks, celery_tasks  # noqa: E402,F401
