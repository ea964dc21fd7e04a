"""What a custom ``Task`` class may override, with Celery's names and arguments.

``Task`` inherits ``Handlers``; a project writes ``class MyTask(Task)`` and
``@shared_task(base=MyTask)``. The executor (djtasks/execute.py) calls the
handlers in Celery's order (docs/migrating-from-celery.md#task-classes):

1. ``task_prerun`` signal, 2. ``before_start``, 3. the body (through an
overridden ``__call__`` if the class has one), 4. ``on_success``,
``on_failure`` or ``on_retry``, 5. the ``task_success``/``task_failure``/
``task_retry`` signal, 6. ``after_return``, 7. ``task_postrun`` signal.

An exception raised by ``before_start`` fails the task, as in Celery; one
raised by a later handler is logged and does not change how the task ended.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import states

if TYPE_CHECKING:
    from inspect import Signature

    from .execute import Outcome
    from .message import Message
    from .request import Request
    from .result import AsyncResult

logger = logging.getLogger("djtasks.worker")

# Call options a caller may pass to ``delay`` by mistake (they are ``apply_async``'s).
_CALL_WORDS = ("countdown", "eta", "expires", "queue", "priority", "task_id", "on_commit",
               "using", "time_limit", "soft_time_limit", "ignore_result", "headers")


class ExceptionInfo:
    """Celery's ``einfo``: the exception, its type and its formatted traceback.

    ``str(einfo)`` is the traceback text, as Celery's ``ExceptionInfo``.
    """

    def __init__(self, exception: BaseException, traceback: str) -> None:
        self.exception = exception
        self.type = type(exception)
        self.traceback = traceback

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


HANDLER_NAMES = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


class Handlers:
    """The overridable part of ``Task``; every handler does nothing by default.

    Arguments follow Celery's ``Task``: ``task_id`` is the id of the run,
    ``args``/``kwargs`` its arguments (as the message carried them),
    ``einfo`` an ``ExceptionInfo``.
    """

    name: str
    bind: bool
    typing: bool
    _signature: Signature
    _custom_call = False  # the class overrides __call__ (Task.__init_subclass__)
    _overridden: frozenset[str] = frozenset()  # the handlers it overrides

    @property
    def request(self) -> Request:
        raise NotImplementedError  # Task's

    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Called in the worker just before the body runs (Celery 5.2's ``before_start``)."""

    def on_success(self, retval: Any, task_id: str, args: list[Any],
                   kwargs: dict[str, Any]) -> None:
        """Called in the worker after the body returned ``retval``."""

    def on_failure(self, exc: BaseException, task_id: str, args: list[Any],
                   kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """Called in the worker when the run ended FAILURE with ``exc``."""

    def on_retry(self, exc: BaseException, task_id: str, args: list[Any],
                 kwargs: dict[str, Any], einfo: ExceptionInfo) -> None:
        """Called in the worker when the run ended RETRY; ``exc`` is the
        error that caused it (or the ``Retry``)."""

    def after_return(self, status: str, retval: Any, task_id: str, args: list[Any],
                     kwargs: dict[str, Any], einfo: ExceptionInfo | None) -> None:
        """Called in the worker after every run that did not ``Ignore`` or
        ``Reject``: ``status`` is SUCCESS, FAILURE or RETRY, ``retval`` the
        return value or the exception. ``einfo`` is None, as Celery passes it."""

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """The result of run ``task_id`` of this task (Celery's ``Task.AsyncResult``)."""
        from .result import AsyncResult

        return AsyncResult(task_id, task_name=self.name)

    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None) -> None:
        """Store ``state`` (a built-in state or any name, e.g. ``"PROGRESS"``)
        with ``meta`` for the running task, or for ``task_id``. Follows
        Celery's ``Task.update_state``: ``AsyncResult(id).state`` and
        ``.info`` show it at once.

        ``meta`` must be JSON data the codec can encode (``TypeError``
        otherwise); a state name is 1 to 64 characters. A custom state
        follows STARTED and may be followed by any state but STARTED
        (states.FOLLOWS). In a worker the row is written by the executor's
        result writer, outside the task's own transaction. Nothing is
        stored for a task whose result is ignored or that runs eagerly.
        """
        store_state(self, task_id, state, meta)

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming the task and the argument unless
        ``args``/``kwargs`` bind to the task's signature (Celery's
        ``Task.typing``; ``apply_async`` calls it when ``typing`` is True)."""
        if _binds_simply(self, args, kwargs):
            return
        try:
            if self.bind:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            hint = ""
            for word in kwargs:
                close = difflib.get_close_matches(word, _CALL_WORDS, n=1)
                if word in _CALL_WORDS or close:
                    option = word if word in _CALL_WORDS else close[0]
                    hint = (f"; {option} is an apply_async option, not an argument: "
                            f"{self.name.rsplit('.', 1)[-1]}.apply_async(args, kwargs, "
                            f"{option}=...)")
                    break
            raise TypeError(f"{self.name}(): {exc}{hint}") from None

    def _autoretry(self, exc: BaseException, retries: int) -> None:
        """Retry for an ``autoretry_for`` exception, as Celery's autoretry:
        ``dont_autoretry_for`` re-raises, ``retry_kwargs`` are passed on,
        ``retry_backoff`` sets the countdown. Always raises."""
        if isinstance(exc, getattr(self, "dont_autoretry_for", ())):
            raise exc
        options = dict(getattr(self, "retry_kwargs", {}))
        if getattr(self, "retry_backoff", False) or "countdown" not in options:
            options["countdown"] = self.backoff_countdown(retries)
        raise self.retry(exc=exc, **options)

    # Task's; declared for the methods above.
    def retry(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def backoff_countdown(self, retries: int) -> float:
        raise NotImplementedError


def _binds_simply(task: Handlers, args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """True if ``args``/``kwargs`` surely bind to a plain signature (only
    positional-or-keyword parameters): ``Signature.bind`` costs about a
    third of building a message, and most tasks look like this. False
    means "ask ``Signature.bind``", which also words the error."""
    spec = task.__dict__.get("_plain_parameters", False)
    if spec is False:
        params = list(task._signature.parameters.values())[1 if task.bind else 0:]
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        required = sum(1 for p in params if p.default is p.empty)
        ordered = all(p.default is not p.empty for p in params[required:])
        spec = (tuple(p.name for p in params), required) if plain and ordered else None
        task.__dict__["_plain_parameters"] = spec  # the signature never changes
    if spec is None:
        return False
    names, required = spec
    given = len(args)
    if given > len(names):
        return False
    if not kwargs:  # delay(*args): no generator to build
        return given >= required
    rest = names[given:]
    if any(k not in rest for k in kwargs):
        return False
    return all(name in kwargs for name in rest[:max(required - given, 0)])


def store_state(task: Handlers, task_id: str | None, state: str | None, meta: Any) -> None:
    """``Task.update_state``'s work (see there)."""
    from . import codec

    if not isinstance(state, str) or not 1 <= len(state) <= 64 or not state.isprintable():
        raise TypeError(f"update_state needs a state name of 1 to 64 characters, not {state!r}")
    try:
        encoded = codec.encode(meta, ("meta",))
    except codec.UnencodableValue as exc:
        raise TypeError(f"{task.name}: update_state meta cannot be stored: "
                        f"{codec.describe_unencodable(exc.value, exc.path)}") from None
    req = task.request
    if task_id is None or task_id == req.id:
        if req.state_writer is not None:
            req.state_writer(state, encoded)
        return
    from .models import TaskResult

    TaskResult.objects.filter(task_id=task_id).reported(state, encoded)


def is_expected(task: Handlers, exc: BaseException | None) -> bool:
    """Whether ``exc`` is one of the task's ``throws`` (logged without a traceback)."""
    return exc is not None and isinstance(exc, getattr(task, "throws", ()))


def call_body(task: Any, message: Message) -> Any:
    """``before_start``, then the body: through ``task(...)`` when the class
    overrides ``__call__`` (Celery calls the task itself then), else
    ``task.run(...)``."""
    if "before_start" in task._overridden:
        task.before_start(message.id, message.args, message.kwargs)
    if task._custom_call:
        task.request._via_worker = True  # Task.__call__ keeps this request
        return task(*message.args, **message.kwargs)
    return task.run(*message.args, **message.kwargs)


def after_run(task: Any, message: Message, outcome: Outcome) -> None:
    """``on_success``, ``on_failure`` or ``on_retry`` for ``outcome``."""
    handler = ("on_success" if outcome.status == states.SUCCESS else
               "on_failure" if outcome.status == states.FAILURE else "on_retry")
    if handler not in task._overridden:
        return
    einfo = einfo_of(outcome)
    _guarded(task, handler, *((outcome.value,) if einfo is None else (outcome.exception,)),
             message.id, message.args, message.kwargs, *(() if einfo is None else (einfo,)))


def after_return(task: Any, message: Message, outcome: Outcome) -> None:
    if "after_return" not in task._overridden:
        return
    retval = outcome.value if outcome.exception is None else outcome.exception
    _guarded(task, "after_return", outcome.status, retval, message.id, message.args,
             message.kwargs, None)


def einfo_of(outcome: Outcome) -> ExceptionInfo | None:
    if outcome.exception is None:
        return None
    return ExceptionInfo(outcome.exception, outcome.traceback)


def _guarded(task: Any, handler: str, *args: Any) -> None:
    try:
        getattr(task, handler)(*args)
    except Exception:
        # The run has ended and its state is decided; a handler's bug must not change it.
        logger.exception("%s.%s raised (the task's state stays as it ended)",
                         type(task).__name__, handler)
