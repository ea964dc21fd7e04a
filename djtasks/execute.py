"""Run one message's task body and say how it ended: shared by worker and ``apply``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from . import codec, handlers, signals, states
from .exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from .message import Message, utc_datetime
from .request import Request, request_scope

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("djtasks.worker")


@dataclass(slots=True)
class Outcome:
    """How a run ended. Times are Unix timestamps in seconds.

    ``result`` is the codec-encoded return value (JSON data) on SUCCESS;
    ``retry`` is the task's ``Retry`` (its intent) when it asked to run again.
    """

    status: str
    started: float
    finished: float
    value: Any = None
    result: Any = None
    exception: BaseException | None = None
    traceback: str = ""
    retry: Retry | None = None


def make_request(message: Message, *, hostname: str, eager: bool = False) -> Request:
    return Request(
        id=message.id, task=message.task, args=message.args, kwargs=message.kwargs,
        retries=message.retries, queue=message.queue, priority=message.priority,
        eta=utc_datetime(message.eta), expires=utc_datetime(message.expires), hostname=hostname,
        parent_id=message.parent_id, root_id=message.root_id, is_eager=eager,
        called_directly=False, message=message, headers=message.options.get("headers") or {},
    )


def _send(sig: Signal, **kwargs: Any) -> None:
    """Send a task signal; a receiver that raises is logged, never the task's fault.
    With no receiver connected (the usual case), nothing is sent."""
    if not sig.receivers:
        return
    for receiver, response in sig.send_robust(**kwargs):
        if isinstance(response, Exception):
            logger.error("receiver %r of a djtasks signal raised: %r", receiver, response,
                         exc_info=response)


def execute(task: Task, message: Message, *, hostname: str, eager: bool = False,
            soft_time_limit: float | None = None,
            state_writer: Callable[[str, Any], None] | None = None) -> Outcome:
    """Run ``task`` for ``message`` with ``task.request`` set; never raises an ``Exception``.

    ``autoretry_for`` exceptions become retries with ``Task.backoff_countdown``
    (a ``Retry`` the task raised itself is never one of them, as in Celery);
    a return value that cannot be encoded is a FAILURE saying so, and so is
    a ``SystemExit`` the task raised (it must not stop the worker). With
    ``soft_time_limit`` (seconds; main thread only) ``SoftTimeLimitExceeded``
    is raised in the task body once it has run that long. Sends the
    ``task_prerun``/``task_postrun``/``task_success``/``task_failure``/
    ``task_retry`` signals (djtasks.signals), with the task as ``sender``; a
    receiver that raises is logged. The task class's handlers run in
    Celery's order (djtasks/handlers.py); an ``Ignore`` or ``Reject`` ends
    the run IGNORED or REJECTED with neither handlers nor those signals.
    ``state_writer(state, encoded_meta)`` stores the task's ``update_state``.
    """
    request = make_request(message, hostname=hostname, eager=eager)
    request.state_writer = state_writer
    with request_scope(request):
        _send(signals.task_prerun, sender=task, task_id=message.id, task=task,
              args=message.args, kwargs=message.kwargs)
        outcome = _run(task, message, soft_time_limit)
        if outcome.status not in (states.IGNORED, states.REJECTED):
            handlers.after_run(task, message, outcome)
        einfo = handlers.einfo_of(outcome)
        if outcome.status == states.SUCCESS:
            _send(signals.task_success, sender=task, result=outcome.value)
        elif outcome.status == states.FAILURE:
            _send(signals.task_failure, sender=task, task_id=message.id,
                  exception=outcome.exception, args=message.args, kwargs=message.kwargs,
                  traceback=outcome.traceback, einfo=einfo)
        elif outcome.status == states.RETRY:
            _send(signals.task_retry, sender=task, request=request,
                  reason=outcome.exception, einfo=einfo)
        if outcome.status not in (states.IGNORED, states.REJECTED):
            handlers.after_return(task, message, outcome)
        _send(signals.task_postrun, sender=task, task_id=message.id, task=task,
              args=message.args, kwargs=message.kwargs,
              retval=outcome.value if outcome.exception is None else outcome.exception,
              state=outcome.status)
    return outcome


def _raise_soft_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")


_loops = threading.local()


def event_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for ``async def`` tasks: made on first use and
    kept, so an executor runs every coroutine of its life on one loop (no
    new loop per task: connections and caches bound to it survive)."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def run_coroutine(coro: Any, soft_time_limit: float | None = None) -> Any:
    """Run an ``async def`` task's coroutine to its end on ``event_loop()``.

    ``soft_time_limit`` (seconds) cancels it once passed (the task sees
    ``CancelledError`` at its ``await`` and may clean up) and raises
    ``SoftTimeLimitExceeded``. In a thread whose own loop is running (an
    eager call from async code) it runs through asgiref's ``async_to_sync``.
    """

    async def guarded() -> Any:
        if not soft_time_limit:
            return await coro
        limit = asyncio.timeout(soft_time_limit)
        try:
            async with limit:
                return await coro
        except TimeoutError:
            if limit.expired():
                raise SoftTimeLimitExceeded("soft time limit exceeded") from None
            raise

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return event_loop().run_until_complete(guarded())
    from asgiref.sync import async_to_sync

    return async_to_sync(guarded)()


def _run(task: Task, message: Message, soft_time_limit: float | None = None) -> Outcome:
    started = time.time()
    # A coroutine's soft limit is the event loop's; a function's, SIGALRM's.
    is_async = inspect.iscoroutinefunction(task.fn)
    alarm = bool(soft_time_limit) and not is_async
    try:
        try:
            if alarm:
                previous = signal.signal(signal.SIGALRM, _raise_soft_limit)
                signal.setitimer(signal.ITIMER_REAL, soft_time_limit)  # type: ignore[arg-type]
            try:
                value = handlers.call_body(task, message)
                if inspect.iscoroutine(value):
                    value = run_coroutine(value, soft_time_limit)
            finally:
                # Disarmed inside the handlers below: an alarm landing here is
                # still the task's SoftTimeLimitExceeded, a FAILURE.
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
        except (Retry, Ignore, Reject):
            raise
        except task.autoretry_for as exc:
            task._autoretry(exc, message.retries)
    except Ignore as exc:
        return Outcome(states.IGNORED, started, time.time(), exception=exc)
    except Reject as exc:
        return Outcome(states.REJECTED, started, time.time(), exception=exc)
    except Retry as retry:
        return Outcome(states.RETRY, started, time.time(), exception=retry.exc or retry,
                       traceback=tb.format_exc(), retry=retry)
    except (Exception, SystemExit) as exc:
        return Outcome(states.FAILURE, started, time.time(), exception=exc,
                       traceback=tb.format_exc())
    finished = time.time()
    if task.result_ignored(message):
        return Outcome(states.SUCCESS, started, finished, value=value)
    try:
        result = codec.encode(value, ("result",))
    except (codec.UnencodableValue, RecursionError) as exc:
        why = (codec.describe_unencodable(exc.value, exc.path)
               if isinstance(exc, codec.UnencodableValue) else "it contains itself")
        error = TypeError(f"{task.name} returned a value that cannot be stored as its result: "
                          f"{why}")
        return Outcome(states.FAILURE, started, finished, exception=error,
                       traceback=f"TypeError: {error}")
    return Outcome(states.SUCCESS, started, finished, value=value, result=result)
