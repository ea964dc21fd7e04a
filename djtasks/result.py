"""``AsyncResult``: a task's state and result, read from the ``TaskResult`` row."""

from __future__ import annotations

import time
from datetime import datetime
from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import codec, states
from .exceptions import TaskError, TaskRevokedError
from .exceptions import TimeoutError as ResultTimeout
from .message import utc_datetime

if TYPE_CHECKING:
    from .execute import Outcome
    from .models import TaskResult

_POLL_CAP = 1.0  # seconds between database reads while waiting, at most


def _import_qualified(path: str) -> object:
    """The object named by ``module.Qualname`` (``shop.models.Report.DoesNotExist``):
    the longest importable module prefix, then attributes along the rest. A bare
    name (rows written before types carried their module) is looked up in builtins.

    Raises ``ImportError`` or ``AttributeError`` when nothing by that name exists.
    """
    parts = path.split(".")
    if len(parts) == 1:
        parts = ["builtins", *parts]
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: object = import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module in {path!r}")


def _rebuild_exception(exc_type: str, message: str) -> BaseException:
    """The original exception class with its message, nested classes included
    (``Report.DoesNotExist``), or ``TaskError`` if that fails."""
    try:
        cls = _import_qualified(exc_type)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception:  # a class that will not rebuild falls back to TaskError
        pass
    return TaskError(f"{exc_type}: {message}", exc_type)


class AsyncResult:
    """The state of task ``id`` (Celery's ``AsyncResult``), read from ``TaskResult``.

    Each property reads the row afresh until the task is ready; an unknown id
    is PENDING, as in Celery.
    """

    def __init__(self, id: str, *, task_name: str | None = None) -> None:
        self.id = id
        self.task_id = id
        self.task_name = task_name
        self._row: TaskResult | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _fetch(self) -> TaskResult | None:
        from .models import TaskResult

        # SUCCESS and FAILURE are final; REVOKED is re-read (a terminate or a
        # run that had already started may still write the row).
        if self._row is not None and self._row.status in (states.SUCCESS, states.FAILURE):
            return self._row
        self._row = TaskResult.objects.filter(task_id=self.id).first()
        return self._row

    @property
    def status(self) -> str:
        row = self._fetch()
        return row.status if row else states.PENDING

    state = status

    @property
    def result(self) -> Any:
        """The return value on SUCCESS; the exception on FAILURE/RETRY; the
        ``meta`` of the task's last ``update_state`` (a custom state, or a
        state it set with no exception); else None."""
        row = self._fetch()
        if row is None:
            return None
        if row.status == states.SUCCESS:
            return codec.decode(row.result)
        if row.exception_type:
            return _rebuild_exception(row.exception_type, row.exception_message)
        return codec.decode(row.result) if row.result is not None else None

    info = result

    @property
    def traceback(self) -> str | None:
        row = self._fetch()
        return row.traceback or None if row else None

    @property
    def date_done(self) -> Any:
        row = self._fetch()
        return row.finished if row else None

    def ready(self) -> bool:
        return self.status in states.READY_STATES

    def successful(self) -> bool:
        return self.status == states.SUCCESS

    def failed(self) -> bool:
        return self.status == states.FAILURE

    def revoke(self, terminate: bool = False, signal: str = "SIGKILL") -> None:
        """Stop the task from running; see ``djtasks.revoke``.

        ``signal`` is accepted for Celery compatibility and not used: a
        terminated task's executor always gets SIGKILL.
        """
        revoke(self.id, terminate=terminate)

    def forget(self) -> None:
        """Delete the result row."""
        from .models import TaskResult

        TaskResult.objects.filter(task_id=self.id).delete()
        self._row = None

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None) -> Any:
        """Wait until the task is ready and return its result.

        Waits up to ``timeout`` seconds (None: forever), then raises
        ``djtasks.exceptions.TimeoutError`` (also a builtin ``TimeoutError``).
        It sleeps on the broker's done notice rather than polling the
        database; it reads the row when woken, and at least every second.
        With ``propagate`` (default) a FAILURE re-raises the task's error as
        its original type and message (``TaskError`` if that class cannot be
        rebuilt) and REVOKED raises ``TaskRevokedError``. ``interval`` is
        accepted for Celery compatibility and ignored.
        """
        from .brokers import get_broker

        deadline = None if timeout is None else time.monotonic() + timeout
        with get_broker().listen_done(self.id) as listener:
            while not self.ready():
                remaining = _POLL_CAP if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise ResultTimeout(
                        f"task {self.id} is still {self.status} after {timeout} seconds"
                    )
                listener.wait(min(remaining, _POLL_CAP))
        return self._value(propagate)

    wait = get

    # -- the workflow (djtasks/canvas.py) ------------------------------------

    @property
    def parent(self) -> AsyncResult | GroupResult | None:
        """The result of the task (or group) that came before this one: set by
        the canvas when it applies a workflow, else read from the row's
        ``parent_id`` (Celery's ``AsyncResult.parent``)."""
        if "_parent" in self.__dict__:
            return self.__dict__["_parent"]  # type: ignore[no-any-return,unused-ignore]
        row = self._fetch()
        if row is None or not row.parent_id:
            return None
        return _result_for_id(row.parent_id)

    @parent.setter
    def parent(self, value: AsyncResult | GroupResult | None) -> None:
        self.__dict__["_parent"] = value

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        """Results of the tasks this task sent, from their rows' ``parent_id``;
        members of one group come as one ``GroupResult`` (Celery's ``children``)."""
        from .models import TaskResult

        out: list[AsyncResult | GroupResult] = []
        seen: set[str] = set()
        rows = (TaskResult.objects.filter(parent_id=self.id).order_by("created", "pk")
                .values_list("task_id", "group_id"))
        for task_id, group_id in rows:
            if not group_id:
                out.append(AsyncResult(task_id))
            elif group_id not in seen:
                seen.add(group_id)
                out.append(GroupResult.restore(group_id) or GroupResult(group_id))
        return out

    def collect(self, timeout: float | None = None) -> Any:
        """Yield ``(result, value)`` for this task and then, depth first, each
        of its children, waiting for each (Celery's ``collect``)."""
        yield self, self.get(timeout=timeout)
        for child in self.children:
            yield from child.collect(timeout=timeout)

    def _value(self, propagate: bool) -> Any:
        row = self._fetch()
        assert row is not None
        if row.status == states.SUCCESS:
            return codec.decode(row.result)
        if not propagate:
            return self.result
        if row.status == states.REVOKED:
            raise TaskRevokedError(f"task {self.id} was revoked: {row.exception_message}")
        raise _rebuild_exception(row.exception_type, row.exception_message)


def revoke(task_id: str | list[str], *, terminate: bool = False) -> None:
    """Revoke tasks: a queued or scheduled task never starts, on any worker,
    also one that starts later (revocations are kept in the broker for a day, and a day past a
    scheduled task's eta).

    The task's row becomes REVOKED at once unless it has already finished.
    ``terminate=True`` also kills it where it is running, on the prefork
    pool (its executor gets SIGKILL and is replaced; the row says
    "terminated"). Follows Celery's ``revoke``; unlike Celery, it holds for
    workers that start after the call.
    """
    from .brokers import get_broker
    from .models import TaskResult

    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    # A running task (not terminated) ends as it ends: only idle ones are REVOKED now.
    idle = get_broker().revoke(ids, terminate=terminate)
    TaskResult.objects.filter(task_id__in=idle).waiting().move_to(
        states.REVOKED, exc=TaskRevokedError("revoked"))
    get_broker().notify_done(ids)


class EagerResult:
    """The result of a task run in this process (``apply()``, ``ALWAYS_EAGER``).

    PENDING until the run happens (with ``on_commit``, when the transaction
    commits); then holds the outcome in memory, with the run's start and end
    (``date_started``, ``date_done``: aware datetimes). No row is written.
    """

    def __init__(self, id: str) -> None:
        self.id = self.task_id = id
        self._status = states.PENDING
        self._value: Any = None
        self._exception: BaseException | None = None
        self.traceback: str | None = None
        self.date_started: datetime | None = None
        self.date_done: datetime | None = None

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    def _settle(self, outcome: Outcome) -> None:
        self._status = outcome.status
        self._value = outcome.value
        self._exception = outcome.exception
        self.traceback = outcome.traceback or None
        self.date_started = utc_datetime(outcome.started)
        self.date_done = utc_datetime(outcome.finished)

    @property
    def status(self) -> str:
        return self._status

    state = status

    @property
    def result(self) -> Any:
        return self._exception if self._exception is not None else self._value

    def ready(self) -> bool:
        return self._status in states.READY_STATES

    def successful(self) -> bool:
        return self._status == states.SUCCESS

    def failed(self) -> bool:
        return self._status == states.FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """The return value; re-raises the task's exception with ``propagate``."""
        if not self.ready():
            raise ResultTimeout(f"eager task {self.id} has not run yet (its transaction is open)")
        if self._exception is not None and propagate:
            raise self._exception
        return self.result


def _result_for_id(task_id: str) -> AsyncResult | GroupResult:
    """A task's result, or a group's if ``task_id`` names a group (a chord
    callback's parent is its header)."""
    return GroupResult.restore(task_id) or AsyncResult(task_id)


class GroupResult:
    """The results of a group's members, in order (Celery's ``GroupResult``).

    Found again by id with ``GroupResult.restore(id)``: its members are the
    ``TaskResult`` rows whose ``group_id`` is the id, ordered by their
    ``group_index`` option, so ``save()`` has nothing to add.
    """

    def __init__(self, id: str, results: list[AsyncResult] | None = None) -> None:
        self.id = id
        self.results = list(results or [])
        self.parent: AsyncResult | GroupResult | None = None

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    @property
    def children(self) -> list[AsyncResult]:
        return self.results

    def save(self) -> GroupResult:
        """Nothing to do: the members' rows, written at enqueue, are the record."""
        return self

    @classmethod
    def restore(cls, id: str) -> GroupResult | None:
        """The group with this id, from its members' rows; None if it has none."""
        from .models import TaskResult

        rows = list(TaskResult.objects.filter(group_id=id)
                    .values_list("task_id", "task_name", "options__group_index"))
        if not rows:
            return None
        rows.sort(key=lambda r: int(r[2] or 0))
        return cls(id, [AsyncResult(task_id, task_name=name) for task_id, name, _ in rows])

    def _states(self) -> dict[str, str]:
        from .models import TaskResult

        ids = [r.id for r in self.results]
        found: dict[str, str] = {}
        for start in range(0, len(ids), 1000):
            found.update(TaskResult.objects.filter(task_id__in=ids[start:start + 1000])
                         .values_list("task_id", "status"))
        return {i: found.get(i, states.PENDING) for i in ids}

    def completed_count(self) -> int:
        """Members that succeeded (Celery's ``completed_count``)."""
        return sum(1 for s in self._states().values() if s == states.SUCCESS)

    def ready(self) -> bool:
        return all(s in states.READY_STATES for s in self._states().values())

    def successful(self) -> bool:
        return all(s == states.SUCCESS for s in self._states().values())

    def failed(self) -> bool:
        return any(s == states.FAILURE for s in self._states().values())

    def waiting(self) -> bool:
        return not self.ready()

    def revoke(self, terminate: bool = False) -> None:
        revoke([r.id for r in self.results], terminate=terminate)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def join(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's result, in order, waiting up to ``timeout`` seconds
        in all (``TimeoutError``); re-raises the first failure with ``propagate``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for r in self.results:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            values.append(r.get(timeout=left, propagate=propagate))
        return values

    get = join

    def collect(self, timeout: float | None = None) -> Any:
        for r in self.results:
            yield from r.collect(timeout=timeout)
