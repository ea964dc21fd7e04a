"""One exception tree for djtasks.

Everything djtasks raises on purpose derives from ``DjtasksError``, except
where Python's own hierarchy says more: argument errors are ``TypeError``
(``TaskArgumentError``), configuration errors are Django's
``ImproperlyConfigured``, and ``Retry``, ``Ignore`` and ``Reject`` are
control-flow signals.
"""

from __future__ import annotations

import builtins
from typing import Any


class DjtasksError(Exception):
    """Base class of every djtasks error."""


class TaskArgumentError(DjtasksError, TypeError):
    """A task was called with an argument that cannot travel in a message.

    Raised in the caller, before anything is written or published. The message
    names the task, the argument's path (``kwargs['items'][2]``) and the fix.
    """


class NotRegistered(DjtasksError, KeyError):
    """No task is registered under the given name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyRegistered(DjtasksError):
    """Two different functions were registered under one task name."""


class BrokerError(DjtasksError):
    """The broker could not be reached or refused an operation."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached (down, restarting, a network fault): worth
    waiting for, unlike a refusal such as a wrong password."""


class MessageError(DjtasksError):
    """A message could not be decoded; the worker dead-letters it."""


# Named like the builtin it extends, as Celery names its own.
class TimeoutError(DjtasksError, builtins.TimeoutError):
    """``AsyncResult.get(timeout=...)`` ran out of time (seconds)."""


class TaskError(DjtasksError):
    """A task failed and the original exception class could not be rebuilt.

    ``AsyncResult.get()`` re-raises the original exception type when it is
    importable and takes a message; otherwise it raises this, with
    ``exc_type`` holding the dotted name of the original class.
    """

    def __init__(self, message: str, exc_type: str = "") -> None:
        super().__init__(message)
        self.exc_type = exc_type


class TaskRevokedError(DjtasksError):
    """The task was revoked before it ran (``AsyncResult.get()``)."""


class Retry(Exception):  # Celery's name, not ...Error: it is a signal
    """Raised by ``Task.retry()`` to tell the worker to run the task again.

    It carries only intent: ``when`` (Unix timestamp, seconds) the next run
    is due, new ``retry_args``/``retry_kwargs`` (None: the same ones) and
    ``exc``, the exception that caused it. The worker builds the next
    attempt from the message it ran (``Message.next_attempt``).

    It stands outside ``DjtasksError`` on purpose: it is not an error but a
    control-flow signal, like ``StopIteration``, and a task's broad
    ``except DjtasksError`` must not swallow it.
    """

    def __init__(self, reason: str = "", exc: BaseException | None = None,
                 when: float | None = None, *, retry_args: list[Any] | None = None,
                 retry_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.exc = exc
        self.when = when
        self.retry_args = retry_args
        self.retry_kwargs = retry_kwargs


# Ignore and Reject, like Retry, stand outside DjtasksError: they are not
# errors but a task telling the worker how its run ends, and a task's broad
# ``except DjtasksError`` must not swallow them. Celery's names and meanings.


class Ignore(Exception):
    """Raised by a task to end its run without a state of its own (Celery's ``Ignore``).

    Nothing more is written if the task stored a ready state itself
    (``update_state(state=FAILURE, meta=...)``); otherwise its row becomes
    REVOKED with "ignored", so no row waits in STARTED for ever. No
    ``on_*`` handler or ``after_return`` runs; ``task_postrun`` is sent.
    """


class Reject(Exception):
    """Raised by a task to hand its message back to the broker (Celery's ``Reject``).

    ``requeue=True`` puts the message back on its queue to run again (the
    same id and retries); ``requeue=False`` moves it to the dead-letter
    store with ``reason`` and ends its row FAILURE: nothing is dropped.
    """

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        super().__init__(reason, requeue)
        self.reason = reason
        self.requeue = requeue

    def __str__(self) -> str:
        return f"rejected: {self.reason}" if self.reason is not None else "rejected"


class MaxRetriesExceededError(DjtasksError):
    """``Task.retry()`` was called after ``max_retries`` retries, with no exception to re-raise."""


class SoftTimeLimitExceeded(DjtasksError):
    """Raised inside a task when its ``soft_time_limit`` (seconds) has passed.

    The task may catch it to clean up; Celery's name and meaning.
    """


class TimeLimitExceeded(DjtasksError):
    """The task ran past its hard ``time_limit`` and its executor was killed."""


class WorkerLostError(DjtasksError):
    """The worker running the task died before the task ended (Celery's name)."""
