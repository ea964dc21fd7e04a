"""Tasks written as Celery projects write them: custom Task classes, progress
states, Ignore/Reject, headers. Imported by tests/app/tasks.py, so a worker
finds them. Calls are logged in Redis lists (``journal`` keys) so a test
sees them across processes, in order."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from djtasks import Ignore, Reject, Task, current_task, shared_task, states

from .tasks import _redis, bump


def note(key: str, *entry: Any) -> None:
    _redis().rpush(key, json.dumps(list(entry)))


def journal(key: str) -> list[list[Any]]:
    return [json.loads(x) for x in _redis().lrange(key, 0, -1)]


class JournalTask(Task):
    """Writes every handler call to the Redis list its first argument names."""

    max_retries = 1
    default_retry_delay = 0
    acks_late = True

    def before_start(self, task_id, args, kwargs):
        note(args[0], "before_start", task_id, self.request.id)

    def on_success(self, retval, task_id, args, kwargs):
        note(args[0], "on_success", retval, task_id)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note(args[0], "on_failure", type(exc).__name__, str(exc), task_id,
             einfo.type.__name__, "Traceback" in str(einfo))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        note(args[0], "on_retry", type(exc).__name__, task_id, self.request.retries)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note(args[0], "after_return", status, repr(retval), einfo)


@shared_task(base=JournalTask)
def journaled(key: str, outcome: str) -> str:
    note(key, "run", current_task.request.id)
    if outcome == "fail":
        raise ValueError("as asked")
    if outcome == "retry-then-succeed" and current_task.request.retries == 0:
        raise current_task.retry()
    return f"did {outcome}"


class WrappingTask(Task):
    """Overrides ``__call__`` to wrap every run, as 4 of the 37 projects do."""

    def __call__(self, *args, **kwargs):
        note(args[0], "enter", self.request.id, self.request.called_directly)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            note(args[0], "exit")


@shared_task(base=WrappingTask, bind=True)
def wrapped(self, key: str) -> str:
    note(key, "body", self.request.id, self.request.called_directly)
    return "wrapped"


class RetryingTask(Task):
    autoretry_for = (LookupError,)
    dont_autoretry_for = (KeyError,)
    retry_kwargs = {"max_retries": 2, "countdown": 0}
    throws = (PermissionError,)


@shared_task(base=RetryingTask)
def lookup_fails(counter: str, error: str) -> None:
    bump(counter)
    raise {"index": IndexError, "key": KeyError, "perm": PermissionError}[error](error)


@shared_task(bind=True, max_retries=0, default_retry_delay=0)
def retry_up_to(self, counter: str, limit: int) -> int:
    n = bump(counter)
    if n <= limit:
        raise self.retry(max_retries=limit)
    return n


@shared_task(bind=True)
def progress(self, key: str, steps: int, pause: float) -> str:
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"done": i + 1, "total": steps})
        note(key, "reported", i + 1)
        time.sleep(pause)
    return "finished"


@shared_task(bind=True)
def fail_by_hand(self) -> None:
    """Celery's pattern: store a FAILURE with meta, then Ignore."""
    self.update_state(state=states.FAILURE, meta={"why": "bad input"})
    raise Ignore()


@shared_task
def ignore_me(counter: str) -> None:
    bump(counter)
    raise Ignore()


@shared_task(bind=True)
def reject_me(self, counter: str, requeue: bool) -> None:
    n = bump(counter)
    if requeue and n >= 2:
        return None
    raise Reject("not today", requeue=requeue)


@shared_task(bind=True)
def show_headers(self) -> dict:
    return self.request.headers


@shared_task
def one_arg(x: int) -> int:
    return x


@shared_task(bind=True)
def bound_two(self, a: int, b: int = 0) -> int:
    return a + b


@shared_task(typing=False)
def untyped(x: int) -> int:
    return x


@shared_task
def process_pid(counter: str) -> int:
    bump(counter)
    return os.getpid()


# Receivers a worker subprocess connects when a test asks (DJTASKS_TEST_SIGNALS
# names a Redis list each writes to), so its signals can be seen from the test.
_SIGNAL_KEY = os.environ.get("DJTASKS_TEST_SIGNALS")
if _SIGNAL_KEY:
    from djtasks import signals

    @signals.worker_init.connect
    def _worker_init(sender, **kwargs):
        note(_SIGNAL_KEY, "worker_init", os.getpid())

    @signals.worker_process_init.connect
    def _process_init(sender, **kwargs):
        note(_SIGNAL_KEY, "worker_process_init", os.getpid())

    @signals.worker_shutting_down.connect()
    def _shutting_down(sender, sig, how, exitcode, **kwargs):
        note(_SIGNAL_KEY, "worker_shutting_down", sig, how, exitcode)

    if os.environ.get("DJTASKS_TEST_SETUP_LOGGING"):
        @signals.setup_logging.connect
        def _setup_logging(sender, loglevel, logfile, format, colorize, **kwargs):
            note(_SIGNAL_KEY, "setup_logging", loglevel)


# A Celery project's proj/celery.py, with only its imports changed.
from djtasks import Celery  # noqa: E402

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task
def app_plain(x: int) -> int:
    return x * 2


@app.task(bind=True, max_retries=4)
def app_bound(self) -> str:
    return self.request.id


class AppBase(app.Task):
    def on_success(self, retval, task_id, args, kwargs):
        note(f"app-base:{task_id}", "on_success", retval)


@app.task(base=AppBase)
def app_based(x: int) -> int:
    return x + 1
