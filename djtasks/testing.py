"""Capture the tasks a project's code enqueues in its tests, through the real
enqueue door, assert on them and run them in-process on a memory broker
(docs/testing.md). ``pytest_plugins = ["djtasks.testing"]`` gives the
``djtasks_capture`` fixture; importing this module reads no settings or models.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db import connections

from . import codec
from .message import Message, dump_envelope, utc_datetime

if TYPE_CHECKING:
    from .brokers.memory import MemoryBroker
    from .task import Task

__all__ = ["CapturedTasks", "capture_tasks"]

BROKER_URL = "memory://djtasks.testing"
_FIELDS = {f.name for f in dataclasses.fields(Message)} - {
    "task", "args", "kwargs", "encoded_args", "encoded_kwargs"}


@contextmanager
def capture_tasks() -> Iterator[CapturedTasks]:
    """Capture what is enqueued in the block on a fresh memory broker.

    ``DJTASKS`` is overridden (``override_settings``, restored after) with
    ``BROKER_URL`` ``memory://djtasks.testing``, a ``KEY_PREFIX`` of this
    capture's own and ``ALWAYS_EAGER`` False; the broker is forgotten after
    the block. Assertions work after it, runs only inside it. A message
    waiting for a commit is captured only if the commit happens in the block.
    """
    from django.conf import settings
    from django.test.utils import override_settings

    from .brokers import get_broker
    from .brokers.memory import MemoryBroker, discard_shared_broker
    from .signals import after_task_publish

    prefix = f"djtasks-testing-{uuid.uuid4().hex[:12]}"
    overrides = {**(getattr(settings, "DJTASKS", None) or {}), "BROKER_URL": BROKER_URL,
                 "KEY_PREFIX": prefix, "ALWAYS_EAGER": False}
    try:
        with override_settings(DJTASKS=overrides):
            broker = get_broker()
            assert isinstance(broker, MemoryBroker)
            captured = CapturedTasks(broker, name=prefix)
            after_task_publish.connect(captured._published, weak=False)
            try:
                yield captured
            finally:
                after_task_publish.disconnect(captured._published)
                captured._open = False
    finally:
        discard_shared_broker(BROKER_URL, prefix)


class CapturedTasks:
    """What a ``capture_tasks()`` block enqueued, and its memory broker.

    ``messages``: every message published while the block is open (by the
    code under test, or by tasks run here), decoded as a worker decodes it,
    in order. Retries are not listed; ``run_*`` return them.
    """

    def __init__(self, broker: MemoryBroker, *, name: str) -> None:
        from .worker.inline import InlineClock

        self.broker = broker
        self.messages: list[Message] = []
        self._name = name
        self._queues: dict[str, None] = {}  # every queue published to, in first-use order
        self._open = True
        self._clock = broker.clock = InlineClock()

    def _published(self, sender: str, body: dict[str, Any], **kwargs: Any) -> None:
        from .brokers import get_broker

        if get_broker() is not self.broker:  # an inner capture's
            return
        message = Message.decode(dump_envelope(body))
        self._queues.setdefault(message.queue, None)
        if message.retries == 0:
            self.messages.append(message)

    # -- assertions ------------------------------------------------------------

    def for_task(self, task: Task | str) -> list[Message]:
        """The captured messages of ``task`` (a ``Task`` or its name), in order."""
        name = _task_name(task)
        return [m for m in self.messages if m.task == name]

    def assert_enqueued(self, task: Task | str, args: Sequence[Any] | None = None,
                        kwargs: dict[str, Any] | None = None, *, times: int | None = None,
                        **fields: Any) -> Message:
        """Assert ``task`` (a ``Task`` or name) was enqueued (``times`` times, if
        given) with ``args``/``kwargs`` (left out: any; compared as a worker
        sees them, tuples as lists) and message ``fields`` (``queue="reports"``);
        return the first match. The ``AssertionError`` lists what was enqueued
        and what waits for a commit; an unknown field is a ``TypeError``.
        """
        if times == 0:
            raise TypeError("assert_enqueued(times=0): use assert_not_enqueued")
        found = self._matching(task, args, kwargs, fields)
        if found and (times is None or len(found) == times):
            return found[0]
        wanted = _call(_task_name(task), args, kwargs, fields)
        problem = (f"{wanted} was enqueued {_times(len(found))}, not {_times(times or 0)}"
                   if found else f"{wanted} was not enqueued")
        raise AssertionError(self._report(problem))

    def assert_not_enqueued(self, task: Task | str, args: Sequence[Any] | None = None,
                            kwargs: dict[str, Any] | None = None, **fields: Any) -> None:
        """Assert no message of ``task`` matching ``args``/``kwargs``/``fields``
        (see ``assert_enqueued``) was enqueued."""
        found = self._matching(task, args, kwargs, fields)
        if found:
            wanted = _call(_task_name(task), args, kwargs, fields)
            raise AssertionError(self._report(f"{wanted} was enqueued {_times(len(found))}"))

    def _matching(self, task: Task | str, args: Sequence[Any] | None,
                  kwargs: dict[str, Any] | None, fields: dict[str, Any]) -> list[Message]:
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            raise TypeError(f"a message has no field {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(_FIELDS))})")
        want = {**fields}
        if args is not None:
            want["args"] = codec.decode(codec.encode(list(args)))
        if kwargs is not None:
            want["kwargs"] = codec.decode(codec.encode(dict(kwargs)))
        return [m for m in self.for_task(task)
                if all(getattr(m, k) == v for k, v in want.items())]

    def _report(self, problem: str) -> str:
        lines = [f"{problem}; {_count(self.messages, 'was', 'were')} enqueued"
                 + (":" if self.messages else ".")]
        lines += [f"  {i}. {_describe(m)}" for i, m in enumerate(self.messages, 1)]
        waiting = _waiting_for_commit()
        if waiting:
            lines.append(f"{_count(waiting, 'waits', 'wait')} for a transaction to commit (in "
                         "a TestCase, enqueue under captureOnCommitCallbacks(execute=True)):")
            lines += [f"  - {_describe(m)}" for m in waiting]
        return "\n".join(lines)

    # -- running ---------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the broker's clock ``seconds`` ahead (for good): messages whose
        eta it passes are due. Tasks and expiry still see the real time."""
        self._clock.offset += seconds

    def run_one(self, *, include_scheduled: bool = False,
                queues: Sequence[str] | None = None) -> Message | None:
        """Run the next due message (with ``include_scheduled``, the earliest
        scheduled one if none is due); return it, or None if there was none.
        A retry it asks for waits in the broker."""
        ran = self._run(only=None, most=1, include_scheduled=include_scheduled, queues=queues)
        return ran[0] if ran else None

    def run_all(self, *, include_scheduled: bool = False,
                queues: Sequence[str] | None = None) -> list[Message]:
        """Run the messages captured so far that are due, and their retries as
        they fall due; return the runs in order (a retry is a run of its own).

        What those tasks enqueue waits for the next call. ``include_scheduled``
        runs messages waiting for an eta (a countdown, a retry's delay) too,
        earliest first, as if it had come. ``queues``: only these (default:
        every queue a message went to).
        """
        only = {m.id for m in self.messages}
        return self._run(only=only, most=None, include_scheduled=include_scheduled,
                         queues=queues)

    def run_until_empty(self, *, include_scheduled: bool = False,
                        queues: Sequence[str] | None = None) -> list[Message]:
        """Run messages until none is due, including those the tasks enqueue
        and their retries; see ``run_all`` for the arguments."""
        return self._run(only=None, most=None, include_scheduled=include_scheduled,
                         queues=queues)

    def _run(self, *, only: set[str] | None, most: int | None, include_scheduled: bool,
             queues: Sequence[str] | None) -> list[Message]:
        from .worker.inline import run_inline

        if not self._open:
            raise RuntimeError("run captured tasks inside the capture_tasks() block")
        return run_inline(self.broker, self._clock, name=self._name,
                          queues=(lambda: queues) if queues else (lambda: list(self._queues)),
                          only=only, most=most, include_scheduled=include_scheduled)


def _waiting_for_commit() -> list[Message]:
    """Messages whose publishing waits for a commit, on any connection."""
    from .enqueue import CommitBatch

    return [out.message for c in connections.all(initialized_only=True)
            for _, func, _ in c.run_on_commit
            if isinstance(func, CommitBatch) and not func.done for out in func.items]


def _task_name(task: Task | str) -> str:
    return task if isinstance(task, str) else task.name


def _count(items: Sequence[Any], one: str, many: str) -> str:
    return f"1 task {one}" if len(items) == 1 else f"{len(items) or 'no'} tasks {many}"


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _call(name: str, args: Sequence[Any] | None, kwargs: dict[str, Any] | None,
          fields: dict[str, Any] | None = None) -> str:
    shown = [] if args is None else [repr(a) for a in args]
    shown += [] if kwargs is None else [f"{k}={v!r}" for k, v in kwargs.items()]
    if args is None or kwargs is None:
        shown.append("...")
    text = f"{name}({', '.join(shown)})"
    return text + "".join(f" [{k}={v!r}]" for k, v in (fields or {}).items())


def _describe(m: Message) -> str:
    eta = utc_datetime(m.eta)
    when = f", eta {eta.isoformat()}" if eta else ""
    return f"{_call(m.task, m.args, m.kwargs)} [queue {m.queue!r}{when}, id {m.id}]"


try:
    import pytest
except ImportError:  # the context manager works without pytest
    pass
else:

    @pytest.fixture
    def djtasks_capture() -> Iterator[CapturedTasks]:
        """``capture_tasks()`` around one test (docs/testing.md)."""
        with capture_tasks() as captured:
            yield captured
