"""``@shared_task`` and ``Task``: options, ``delay``/``apply_async``/``apply``, ``retry``.

Names, options and semantics follow Celery's ``Task``; the differences are
that the registry is explicit (no proxies, no "current app") and that
every option is checked against one table (djtasks/options.py).
"""

from __future__ import annotations

import fnmatch
import inspect
import random
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import update_wrapper
from types import ModuleType
from typing import TYPE_CHECKING, Any, overload

from django.conf import settings as django_settings
from django.utils import timezone

from . import codec
from .conf import get_settings
from .exceptions import MaxRetriesExceededError, Retry, TaskArgumentError
from .handlers import HANDLER_NAMES, Handlers
from .message import Message
from .options import MESSAGE_OPTIONS, OPTIONS, call_options, check_seconds, parse_rate, task_options
from .registry import registry
from .request import Request, current_request, request_scope

if TYPE_CHECKING:
    from .canvas import Signature
    from .result import AsyncResult, EagerResult

_TASK_ID_RE = re.compile(r"^[\x21-\x7e]{1,255}\Z")  # what the broker's frame allows
_FROM_SETTINGS = ("acks_late", "ignore_result", "track_started")  # None: read at use
_CARRIED = tuple(sorted(MESSAGE_OPTIONS))  # the order of a message's options
_enqueue: ModuleType | None = None


def _door() -> ModuleType:
    """The enqueue module. Imported at the first call, not at import time:
    it needs the models, and ``djtasks/__init__`` imports this module before
    Django's apps are ready."""
    global _enqueue
    if _enqueue is None:
        from . import enqueue

        _enqueue = enqueue
    return _enqueue


class Task(Handlers):
    """A registered task: call it, ``delay()`` it, ``apply_async()`` it.

    A project's subclass (``@shared_task(base=MyTask)``) may override the
    handlers of djtasks/handlers.py (``on_success``, ``on_failure``,
    ``on_retry``, ``after_return``, ``before_start``) and ``__call__``, and
    give option defaults as class attributes (``max_retries = 5``).

    Options (keyword-only, Celery's names and defaults; each is declared in
    djtasks/options.py with its check, and docs/celery.md lists them):

    - ``name``: registry name, default ``module.function``.
    - ``bind``: pass the task as first argument, for ``self.request`` and
      ``self.retry``.
    - ``queue``, ``priority`` (0 lowest to 9 highest): where the message goes.
    - ``max_retries`` (3; None retries forever), ``default_retry_delay``
      (seconds, 180), ``autoretry_for`` (exception classes that retry
      automatically), ``retry_backoff`` (False, True, or a base in seconds:
      countdown = base * 2**retries), ``retry_backoff_max`` (seconds, 600),
      ``retry_jitter`` (True: a random countdown between 0 and the backoff).
    - ``acks_late``: ack after the task ran instead of before (at least once
      instead of at most once; docs/delivery.md). Default from
      ``DJTASKS['ACKS_LATE']``.
    - ``reject_on_worker_lost``: with ``acks_late``, whether a task whose
      executor died runs again (None or True) or ends FAILURE (False).
    - ``time_limit`` (seconds, hard: the executor is killed and replaced, the
      task ends FAILURE with ``TimeLimitExceeded``; prefork pool only) and
      ``soft_time_limit`` (seconds: ``SoftTimeLimitExceeded`` is raised in
      the task; prefork and solo pools). Per call too; the worker's
      ``--time-limit``/``--soft-time-limit`` are the defaults.
    - ``rate_limit``: ``"10/s"``, ``"100/m"``, ``"1000/h"`` (or a number per
      second), enforced across all workers together.
    - ``ignore_result``: write no ``TaskResult`` row at all.
    - ``track_started``: record STARTED when a worker begins it.
    - ``expires``: seconds after publishing (or a datetime) after which a
      task that has not started is not run and ends REVOKED.
    - ``dont_autoretry_for`` (exception classes ``autoretry_for`` does not
      retry), ``retry_kwargs`` (``countdown``/``max_retries`` for automatic
      retries), ``throws`` (expected errors: logged at INFO without a
      traceback; the run is still a FAILURE), ``typing`` (True: arguments
      are bound to the signature in ``apply_async``). Celery's names.

    Raises ``TypeError`` for an unknown option or a bad value.
    """

    # The option values (declared, with defaults and checks, in options.py).
    queue: str | None
    priority: int | None
    max_retries: int | None
    default_retry_delay: float
    autoretry_for: tuple[type[BaseException], ...]
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool
    reject_on_worker_lost: bool | None
    expires: float | datetime | None
    time_limit: float | None
    soft_time_limit: float | None
    rate_limit: str | float | None
    dont_autoretry_for: tuple[type[BaseException], ...]
    retry_kwargs: dict[str, Any]
    throws: tuple[type[BaseException], ...]
    typing: bool

    # Plain class attributes of a subclass for these options are moved here
    # (``__init_subclass__``): the properties below must keep reading the
    # setting when an option is None, and a class attribute would hide them.
    _setting_defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Decided once per class, so the worker's per-task path stays short.
        cls._custom_call = cls.__call__ is not Task.__call__
        cls._overridden = frozenset(
            name for name in HANDLER_NAMES if getattr(cls, name) is not getattr(Handlers, name))
        cls._setting_defaults = dict(cls._setting_defaults)
        for key in _FROM_SETTINGS:
            value = cls.__dict__.get(key)
            if value is not None and not isinstance(value, property):
                cls._setting_defaults[key] = value
                delattr(cls, key)

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, bind: bool = False,
                 **options: Any) -> None:
        if not callable(fn):
            raise TypeError(f"@shared_task needs a function, not {fn!r}")
        self.fn = fn
        self.qualname = f"{fn.__module__}.{fn.__qualname__}"
        self.name = name or f"{fn.__module__}.{fn.__name__}"
        if not isinstance(self.name, str) or not self.name or "\n" in self.name:
            raise TypeError(f"task name must be a non-empty string, not {self.name!r}")
        self.bind = bind
        self.options = task_options(options, self._class_default)
        for key, value in self.options.items():
            if key not in _FROM_SETTINGS:
                setattr(self, key, value)
        self.rate_per_second = parse_rate(self.rate_limit)
        self._signature = inspect.signature(fn)
        update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    @classmethod
    def _class_default(cls, key: str, default: Any) -> Any:
        """A subclass's class attribute is the default of an option not given
        (the properties below read the setting instead)."""
        if key in cls._setting_defaults:
            return cls._setting_defaults[key]
        value = getattr(cls, key, default)
        return default if isinstance(value, property) else value

    # Options whose default is a setting are read at use, so override_settings works.
    def _from_settings(self, key: str) -> Any:
        value = self.options[key]
        if value is None:
            return getattr(get_settings(), OPTIONS[key].setting or "")
        return value

    @property
    def acks_late(self) -> bool:
        return bool(self._from_settings("acks_late"))

    @property
    def ignore_result(self) -> bool:
        return bool(self._from_settings("ignore_result"))

    @property
    def track_started(self) -> bool:
        return bool(self._from_settings("track_started"))

    @property
    def request(self) -> Request:
        """The current request of this task (Celery's ``Task.request``)."""
        req = current_request()
        if req is None or req.task != self.name:
            return Request(task=self.name)
        return req

    # -- running -------------------------------------------------------------

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body in this process, with no request context."""
        if self.bind:
            return self.fn(self, *args, **kwargs)
        return self.fn(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A plain call runs inline, as in Celery (``called_directly`` is True).

        A subclass that overrides it and calls ``super().__call__`` wraps
        the worker's run too: the worker calls the task then, and the body
        sees the worker's request."""
        req = current_request()
        if req is not None and req._via_worker and req.task == self.name:
            req._via_worker = False  # only the worker's own call; nested calls are plain
            return self.run(*args, **kwargs)
        with request_scope(Request(task=self.name, args=list(args), kwargs=kwargs)):
            return self.run(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | EagerResult:
        """Shortcut for ``apply_async(args, kwargs)`` (Celery's ``delay``)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        on_commit: bool | None = None,
        using: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        ignore_result: bool | None = None,
        headers: dict[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
    ) -> AsyncResult | EagerResult:
        """Publish a message to run this task in a worker; return its result at once.

        ``countdown`` (seconds) or ``eta`` (a datetime; naive means the current
        Django time zone) delay the run; ``expires`` (seconds from now, or a
        datetime) drops it if it has not started by then; ``time_limit`` and
        ``soft_time_limit`` (seconds) override the task's. ``on_commit``
        (default ``DJTASKS['ENQUEUE_ON_COMMIT']``) publishes when the
        transaction on ``using`` commits, so a rollback leaves no trace.
        ``task_id`` may name a task that exists: the new run takes over its
        row (docs/delivery.md). ``ignore_result`` overrides the task's for
        this call; ``headers`` (a dict of JSON values) travel in the message
        and show as ``self.request.headers``.

        With ``typing`` (the default), ``args``/``kwargs`` are bound to the
        task's signature first and a mismatch raises ``TypeError`` naming
        the task and the argument (Celery's ``Task.typing``).
        Raises ``TaskArgumentError`` (a ``TypeError``) before anything is
        written if an argument cannot travel in a message, and ``TypeError``
        for a bad option. With ``ALWAYS_EAGER`` the task runs here instead
        (an ``EagerResult``). ``link``/``link_error`` are signatures (or
        lists of them) the worker enqueues after success or final failure,
        as Celery's (docs/canvas.md).
        """
        if self.typing and isinstance(args, list | tuple | None) and isinstance(
                kwargs, dict | None):
            self.check_arguments(args or (), kwargs or {})
        message = self.build_message(
            args, kwargs, countdown=countdown, eta=eta, expires=expires, queue=queue,
            priority=priority, task_id=task_id, time_limit=time_limit,
            soft_time_limit=soft_time_limit, ignore_result=ignore_result, headers=headers,
            link=link, link_error=link_error,
        )
        if django_settings.DEBUG:
            from .lint.runtime import warn_if_serialized

            warn_if_serialized(self.name, message.args, message.kwargs)
        return _door().enqueue(self, message, on_commit=on_commit, using=using)

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
    ) -> EagerResult:
        """Run the task now, in this process, and return an ``EagerResult``.

        Arguments go through the codec and JSON as they would through a
        broker, so ``apply`` refuses the arguments ``delay`` would refuse
        (``MAX_MESSAGE_BYTES`` aside) and the task sees what a worker would
        (tuples as lists). Retries run at once, without
        their countdown. Follows Celery's ``Task.apply``: the task's
        exception is re-raised if ``DJTASKS['EAGER_PROPAGATES']`` is True
        (default False, Celery's ``task_eager_propagates``), else the result
        holds it. No row is written.
        """
        return _door().apply(self, self.build_message(args, kwargs, task_id=task_id))

    # -- messages ------------------------------------------------------------

    def build_message(
        self,
        args: Sequence[Any] | None,
        kwargs: dict[str, Any] | None,
        *,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        task_id: str | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        ignore_result: bool | None = None,
        headers: dict[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
    ) -> Message:
        """The message for one run, whole; validates the options (``TypeError``)."""
        s = get_settings()
        if args is None:
            args = []
        elif not isinstance(args, list | tuple):
            raise TypeError(f"{self.name}: args must be a list or tuple, not {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise TypeError(f"{self.name}: kwargs must be a dict, not {type(kwargs).__name__}")
        if task_id is None:
            task_id = str(uuid.uuid4())
        elif not isinstance(task_id, str) or not _TASK_ID_RE.match(task_id):
            raise TypeError(
                "task_id must be 1 to 255 printable ASCII characters without spaces "
                f"(a UUID, a slug): {task_id!r}"
            )
        options: dict[str, Any] = {}
        # delay() gives none of these: then there is nothing to check or carry.
        if not (queue is None and priority is None and expires is None and time_limit is None
                and soft_time_limit is None and ignore_result is None and headers is None
                and link is None and link_error is None):
            per_call = {"queue": queue, "priority": priority, "expires": expires,
                        "time_limit": time_limit, "soft_time_limit": soft_time_limit,
                        "ignore_result": ignore_result, "headers": headers,
                        "link": link, "link_error": link_error}
            call_options(per_call)
            if link is not None or link_error is not None:
                from .plan import wire_list

                per_call["link"], per_call["link_error"] = wire_list(link), wire_list(link_error)
            options = {k: v for k in _CARRIED if (v := per_call.get(k)) is not None}
        now = timezone.now().timestamp()
        if countdown is not None and eta is not None:
            raise TypeError("pass countdown or eta, not both")
        eta_ts: float | None = None
        if countdown is not None:
            check_seconds("countdown", countdown)
            eta_ts = now + countdown
        elif eta is not None:
            eta_ts = _timestamp("eta", eta)
        if expires is None:
            expires = self.expires
        expires_ts: float | None = None
        if isinstance(expires, datetime):
            expires_ts = _timestamp("expires", expires)
        elif expires is not None:
            expires_ts = now + expires
        # The call's, else the task's, else ROUTES', else the defaults.
        queue = queue or self.queue
        if priority is None:
            priority = self.priority
        if not queue or priority is None:
            routed_queue, routed_priority = self._routed(s)
            queue = queue or routed_queue
            if priority is None:
                priority = routed_priority
        parent = current_request()
        return Message(
            id=task_id,
            task=self.name,
            args=list(args),
            kwargs=kwargs,
            queue=queue,
            priority=priority,
            eta=eta_ts,
            expires=expires_ts,
            parent_id=parent.id if parent else None,
            root_id=(parent.root_id or parent.id) if parent and parent.id else None,
            created=now,
            options=options,
        )

    def result_ignored(self, message: Message) -> bool:
        """Whether no row is written for ``message``: its ``apply_async(ignore_result=...)``
        if given, else the task's ``ignore_result``."""
        per_call = message.options.get("ignore_result")
        return self.ignore_result if per_call is None else bool(per_call)

    def _routed(self, s: Any) -> tuple[str, int]:
        """The queue and priority of a message that names neither, where this
        task names neither: from ``ROUTES``, else the defaults. Kept per
        settings object, so ``override_settings`` is seen at once."""
        cached = self.__dict__.get("_routed_for")
        if cached is None or cached[0] is not s:
            route = self._route(s)
            priority = route.get("priority")
            cached = (s, route.get("queue") or s.DEFAULT_QUEUE,
                      s.DEFAULT_PRIORITY if priority is None else priority)
            self.__dict__["_routed_for"] = cached
        return cached[1], cached[2]

    def _route(self, s: Any) -> dict[str, Any]:
        """The first ``ROUTES`` entry matching this task (exact names before globs)."""
        routes = s.ROUTES
        if self.name in routes:
            return dict(routes[self.name])
        for pattern, route in routes.items():
            if fnmatch.fnmatchcase(self.name, pattern):
                return dict(route)
        return {}

    def encode_message(self, message: Message) -> dict[str, Any]:
        """``message.envelope()``, turning a codec error into ``TaskArgumentError``."""
        try:
            return message.envelope()
        except codec.UnencodableValue as exc:
            raise self._argument_error(exc) from None
        except RecursionError:
            raise TaskArgumentError(
                f"{self.name}: the arguments are nested too deeply or contain themselves"
            ) from None

    def _argument_error(self, exc: codec.UnencodableValue) -> TaskArgumentError:
        short = self.name.rsplit(".", 1)[-1]
        where, *rest = exc.path  # where is "args" or "kwargs"
        if not rest:
            return TaskArgumentError(f"{short}(): {where}: {exc.hint}")
        head, *tail = rest
        if where == "args":
            head = self._param_name(head)
        friendly = (head, *tail)
        hint = exc.hint
        if not hint.startswith("a dict key"):
            hint = codec.describe_unencodable(exc.value, friendly)
        shown = f"{codec.path_name(friendly)}={_short_repr(exc.value)}"
        location = where + "".join(f"[{p!r}]" for p in rest)
        return TaskArgumentError(f"{short}({shown}): {hint} (at {location})")

    def _param_name(self, index: int) -> str:
        """The parameter name of positional argument ``index``, or ``args[index]``."""
        params = [
            p for p in self._signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if self.bind:
            params = params[1:]
        return params[index].name if index < len(params) else f"args[{index}]"

    # -- the canvas (djtasks/canvas.py) --------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with partial ``args``/``kwargs`` (Celery's ``Task.s``)."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a parent's result is not prepended (Celery's ``Task.si``)."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, immutable=True)

    def signature(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
                  **options: Any) -> Signature:
        """``Signature(self, args, kwargs, **options)`` (Celery's ``Task.signature``)."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, options)

    def map(self, it: Any) -> Signature:
        """One task that calls this one for each item (Celery's ``Task.map``)."""
        from .canvas import xmap

        return xmap(self, it)

    def starmap(self, it: Any) -> Signature:
        """One task that calls this one with each item's arguments (``Task.starmap``)."""
        from .canvas import xstarmap

        return xstarmap(self, it)

    def chunks(self, it: Any, n: int) -> Any:
        """``it`` in chunks of ``n`` items, one ``starmap`` task per chunk (``Task.chunks``)."""
        from .canvas import chunks

        return chunks(self, it, n)

    # -- retries -------------------------------------------------------------

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> Retry:
        """Ask the worker to run this task again; raises ``Retry`` (always).

        Semantics follow Celery's ``Task.retry``: the same task id runs again
        with ``request.retries + 1``, after ``countdown`` seconds (default
        ``default_retry_delay``) or at ``eta``, on the same queue, with new
        ``args``/``kwargs`` if given. Past ``max_retries`` it raises ``exc``
        if given, else ``MaxRetriesExceededError``. Called outside a worker
        (a plain call), it raises ``exc`` or ``Retry`` at once. The worker
        builds the next run from the message it ran; new arguments that
        cannot travel end the task FAILURE with ``TaskArgumentError``.
        """
        req = self.request
        if req.called_directly:
            raise exc if exc is not None else Retry("retry() called outside a worker")
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and req.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"{self.name}[{req.id}] retried {req.retries} times (max_retries={limit})"
            )
        if countdown is not None and eta is not None:
            raise TypeError("pass countdown or eta, not both")
        if eta is not None:
            when, reason = _timestamp("eta", eta), f"retry at {eta}"
        else:
            if countdown is None:
                countdown = self.default_retry_delay
            check_seconds("countdown", countdown)
            when, reason = timezone.now().timestamp() + countdown, f"retry in {countdown}s"
        raise Retry(reason, exc=exc, when=when,
                    retry_args=None if args is None else list(args),
                    retry_kwargs=None if kwargs is None else dict(kwargs))

    def backoff_countdown(self, retries: int) -> float:
        """Countdown (seconds) before automatic retry number ``retries + 1``."""
        if not self.retry_backoff:
            return self.default_retry_delay
        base = 1 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(self.retry_backoff_max, base * (2**retries))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)
        return countdown


def _short_repr(value: Any) -> str:
    from django.db.models import Manager, QuerySet

    if isinstance(value, QuerySet | Manager):  # repr() of a QuerySet runs a query
        return f"<{type(value).__name__} of {value.model.__name__}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _timestamp(name: str, value: Any) -> float:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value.timestamp()


@overload
def shared_task(fn: Callable[..., Any], /) -> Task: ...
@overload
def shared_task(**options: Any) -> Callable[[Callable[..., Any]], Task]: ...


def shared_task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Register a function as a task: ``@shared_task`` or ``@shared_task(**options)``.

    The options are ``Task``'s; an unknown option is a ``TypeError``.
    ``base`` is the ``Task`` subclass to make (Celery's ``base=``).
    Returns the task, which is also registered under its name.
    """
    base = options.pop("base", Task)
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise TypeError(f"@shared_task(base=...) needs a subclass of djtasks.Task, not {base!r}")

    def decorate(f: Callable[..., Any]) -> Task:
        task = base(f, **options)
        registry.register(task)
        return task

    if fn is not None:
        return decorate(fn)
    return decorate
