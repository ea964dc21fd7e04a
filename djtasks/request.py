"""The request context: what ``self.request`` shows in a running task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import Message


@dataclass
class Request:
    """The context of the running task, as ``self.request`` with ``bind=True``.

    Field names follow Celery's ``Task.request``. ``eta`` and ``expires`` are
    aware datetimes or None; ``called_directly`` is True for a plain call;
    ``scheduled_for`` is the tick of a periodic task's run.
    """

    id: str | None = None
    task: str = ""
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    queue: str | None = None
    priority: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    hostname: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    is_eager: bool = False
    called_directly: bool = True
    message: Message | None = None
    headers: dict[str, Any] = field(default_factory=dict)  # apply_async(headers=...)
    # Set by the executor: stores an ``update_state`` (state, encoded meta) for this run.
    state_writer: Callable[[str, Any], None] | None = field(default=None, repr=False)
    # Set just before the worker calls an overridden ``Task.__call__``, which
    # then runs the body under this request instead of a plain call's.
    _via_worker: bool = field(default=False, repr=False)

    @property
    def scheduled_for(self) -> datetime | None:
        """The tick a beat run stands for (an aware UTC datetime), else None.
        Catch-up runs carry the tick they stand for (docs/periodic.md)."""
        ts = self.message.options.get("scheduled_for") if self.message else None
        return None if ts is None else datetime.fromtimestamp(ts, UTC)


_current = threading.local()  # the request of the task running in this thread


def current_request() -> Request | None:
    """The request of the task running in this thread, if any."""
    stack = getattr(_current, "stack", None)
    return stack[-1] if stack else None


class _RequestScope:
    def __init__(self, request: Request) -> None:
        self.request = request

    def __enter__(self) -> Request:
        stack = getattr(_current, "stack", None)
        if stack is None:
            stack = _current.stack = []
        stack.append(self.request)
        return self.request

    def __exit__(self, *exc: object) -> None:
        _current.stack.pop()


def request_scope(request: Request) -> _RequestScope:
    """Make ``request`` the current one while the ``with`` block runs."""
    return _RequestScope(request)


class _CurrentTask:
    """``djtasks.current_task``: the task running in this thread (Celery's
    ``current_task``), for code that cannot take ``self`` (``bind=True``).

    A stand-in, not a copy, because ``from djtasks import current_task``
    binds once at import time while the running task changes: attributes
    are the running task's (``current_task.request.id``,
    ``current_task.update_state(...)``); it is falsy outside a task, where
    an attribute raises ``RuntimeError``. The one proxy in djtasks, for
    Celery's name.
    """

    def _get(self) -> Any:
        from .registry import registry

        req = current_request()
        if req is None or not req.task:
            return None
        return registry.get(req.task) if req.task in registry else None

    def __bool__(self) -> bool:
        return self._get() is not None

    def __getattr__(self, name: str) -> Any:
        task = self._get()
        if task is None:
            raise RuntimeError(f"current_task.{name}: no task is running in this thread")
        return getattr(task, name)

    def __repr__(self) -> str:
        return f"<current_task: {self._get()!r}>"


current_task = _CurrentTask()
