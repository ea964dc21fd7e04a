"""Signatures, chains, groups and chords: Celery's canvas (docs/canvas.md).

A ``Signature`` is a dict (``task``, ``args``, ``kwargs``, ``options``,
``immutable``, ``subtask_type``), as Celery's is, so it travels in a
message as JSON. Applying a workflow fixes every task id in it at once
(``freeze``); the first messages carry the rest as options (``link``,
``link_error``, ``chain``, ``chord``), and the worker enqueues each next
step after the result it depends on is stored (djtasks/workflow.py).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .conf import get_settings
from .registry import registry
from .task import shared_task

if TYPE_CHECKING:
    from .result import AsyncResult, EagerResult, GroupResult
    from .task import Task

# Options a signature passes to the message it becomes (Task.build_message's).
MESSAGE_KEYS = ("countdown", "eta", "expires", "queue", "priority", "task_id", "time_limit",
                "soft_time_limit")
# Options that act when the signature is applied (enqueue's), or after the run.
APPLY_KEYS = ("on_commit", "using")
CANVAS_KEYS = ("link", "link_error", "chain", "chord", "group_id", "group_index", "errback")
KNOWN_OPTIONS = frozenset((*MESSAGE_KEYS, *APPLY_KEYS, *CANVAS_KEYS))


class Signature(dict[str, Any]):
    """A task call to make later: name, partial arguments and options (Celery's ``Signature``).

    ``Signature(task, args=None, kwargs=None, options=None, immutable=False)``;
    ``task`` is a ``Task`` or a registered name. Calling ``apply_async(args,
    kwargs, **options)`` prepends ``args`` to the partial ones, merges
    ``kwargs`` and options (unless ``immutable``: then only options).
    Raises ``TypeError`` for an unknown option.
    """

    def __init__(self, task: Any = None, args: Sequence[Any] | None = None,
                 kwargs: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
                 *, immutable: bool = False, subtask_type: str | None = None,
                 **more_options: Any) -> None:
        name = getattr(task, "name", task)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a signature needs a task or a task name, not {task!r}")
        opts = {**(options or {}), **more_options}
        _check_options(name, opts)
        super().__init__(task=name, args=list(args or ()), kwargs=dict(kwargs or {}),
                         options=opts, immutable=bool(immutable), subtask_type=subtask_type)

    # Celery's attribute names.
    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def name(self) -> str:
        return self.task

    @property
    def args(self) -> list[Any]:
        return list(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return self["options"]  # type: ignore[no-any-return,unused-ignore]

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def type(self) -> Task:
        """The registered ``Task`` (``NotRegistered`` if there is none by that name)."""
        return registry.get(self.task)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self["args"]]
        parts += [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        return f"{'%' if self.immutable else ''}{self.task}({', '.join(parts)})"

    # -- building ------------------------------------------------------------

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` prepended (unless immutable), ``kwargs`` and
        ``options`` merged in (Celery's ``Signature.clone``)."""
        new = _copy(self)
        if not new.immutable:
            new["args"] = [*(args or ()), *new["args"]]
            new["kwargs"] = {**new["kwargs"], **(kwargs or {})}
        _check_options(new.task, options)
        new["options"].update(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (``queue``, ``countdown``, ``link``...); returns self."""
        _check_options(self.task, options)
        self["options"].update(options)
        if immutable is not None:
            self["immutable"] = bool(immutable)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: Signature) -> Signature:
        """Enqueue ``callback`` with this task's result after it succeeds; returns ``callback``."""
        self["options"]["link"] = [*_as_list(self.options.get("link")), callback]
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Enqueue ``errback`` once after this task finally fails; returns ``errback``."""
        self["options"]["link_error"] = [*_as_list(self.options.get("link_error")), errback]
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """``link_error(errback)``, returning self (Celery's ``on_error``)."""
        self.link_error(errback)
        return self

    def freeze(self, _id: str | None = None) -> AsyncResult:
        """Fix this signature's task id now (``task_id`` option); return its result."""
        from .result import AsyncResult

        self["options"].setdefault("task_id", _id or str(uuid.uuid4()))
        return AsyncResult(self["options"]["task_id"], task_name=self.task)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other)

    # -- applying ------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Send this signature's task (``Task.apply_async``'s options); return its result."""
        sig = self.clone(args, kwargs, **options)
        opts = dict(sig.options)
        if "chain" in opts or "chord" in opts or "group_id" in opts:
            raise TypeError(f"{sig.task}: chain, chord and group_id are set by the canvas")
        return sig.type.apply_async(sig.args, sig.kwargs, **opts)

    def apply(self) -> Any:
        """Run the task here, now (``Task.apply``): an ``EagerResult``."""
        return self.type.apply(self.args, self.kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now with the merged arguments (Celery's ``Signature.__call__``)."""
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)


class chain(Signature):
    """Tasks run one after another, each given the result of the one before
    (Celery's ``chain``; ``a.s() | b.s()`` makes one). A group followed by a
    task becomes a chord. ``link_error`` given to the chain is called if any
    of its tasks fails (Celery ignores it after the first task: celery#3317).
    ``apply_async`` returns the last task's result, whose ``parent`` is the
    one before."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        if len(tasks) == 1 and isinstance(tasks[0], list | tuple):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for t in tasks:
            t = signature(t)
            if isinstance(t, chain):
                flat.extend(t.tasks)
            elif flat and isinstance(flat[-1], group) and not isinstance(t, group):
                flat[-1] = chord(flat[-1].tasks, t)
            elif flat and isinstance(flat[-1], chord) and not isinstance(t, group):
                body = flat[-1].body
                assert body is not None
                flat[-1] = flat[-1].with_body(body | t)
            else:
                flat.append(t)
        if not flat:
            raise TypeError("chain() needs at least one task")
        super().__init__("djtasks.chain", (), {"tasks": flat}, options, subtask_type="chain")

    @property
    def tasks(self) -> list[Signature]:
        return [signature(t) for t in self["kwargs"]["tasks"]]

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, **self.options)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        tasks = self.tasks
        if args or kwargs:
            tasks[0] = tasks[0].clone(args, kwargs)
        return chain(*tasks, **{**self.options, **options})

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        if get_settings().ALWAYS_EAGER:
            return self.clone(args, kwargs, **options).apply()
        return _plan().apply(self.clone(args, kwargs, **options))

    def apply(self) -> EagerResult:
        """Run every task here, in order (Celery's eager chain)."""
        result: Any = None
        previous: list[Any] = []
        for step in self.tasks:
            result = _eager(step.clone(previous))
            previous = [result.get()]
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


class group(Signature):
    """Tasks run in parallel (Celery's ``group``); ``apply_async`` returns a
    ``GroupResult``. Every member's row carries the group's id (``group_id``)."""

    def __init__(self, *tasks: Any, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])  # group([sigs]) or group(generator)
        sigs = [signature(t) for t in tasks]
        super().__init__("djtasks.group", (), {"tasks": sigs}, options, subtask_type="group")

    @property
    def tasks(self) -> list[Signature]:
        return [signature(t) for t in self["kwargs"]["tasks"]]

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chord(self.tasks, other)

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        return group([t.clone(args, kwargs) for t in self.tasks], **{**self.options, **options})

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> GroupResult:
        if get_settings().ALWAYS_EAGER:
            return self.clone(args, kwargs, **options).apply()
        return _plan().apply(self.clone(args, kwargs, **options))  # type: ignore[no-any-return,unused-ignore]

    def apply(self) -> GroupResult:
        from .result import GroupResult

        gid = self.options.get("task_id") or str(uuid.uuid4())
        return GroupResult(gid, [_eager(t) for t in self.tasks])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)


class chord(Signature):
    """A group whose callback runs once with the list of their results, in
    order (Celery's ``chord(header)(callback)``). Completion is counted in
    the broker (``ChordCounters``), so no task polls for it; the callback
    runs once, also when members run twice. A member that fails ends the
    chord FAILURE with its error, and the callback's ``link_error`` is
    called once. ``apply_async`` returns the callback's result, whose
    ``parent`` is the header's ``GroupResult``."""

    def __init__(self, header: Any, body: Any = None, **options: Any) -> None:
        if isinstance(header, group):
            header = header.tasks
        elif isinstance(header, dict):
            header = [header]
        sigs = [signature(t) for t in header]
        for s in sigs:
            if s.subtask_type is not None:
                raise TypeError(f"a chord's header members must be task signatures, not {s!r}")
        kwargs = {"header": sigs, "body": None if body is None else signature(body)}
        super().__init__("djtasks.chord", (), kwargs, options, subtask_type="chord")

    @property
    def tasks(self) -> list[Signature]:
        return [signature(t) for t in self["kwargs"]["header"]]

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"]["body"]
        return None if body is None else signature(body)

    def with_body(self, body: Signature) -> chord:
        return chord(self.tasks, body, **self.options)

    def __repr__(self) -> str:
        return f"chord([{', '.join(repr(t) for t in self.tasks)}], {self.body!r})"

    def clone(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Any) -> Signature:
        return chord([t.clone(args, kwargs) for t in self.tasks], self.body,
                     **{**self.options, **options})

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return (self if body is None else self.with_body(signature(body))).apply_async(**options)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        body = options.pop("body", None)
        base = self if body is None else self.with_body(signature(body))
        sig = base.clone(args, kwargs, **options)
        if base.body is None:
            raise TypeError("a chord needs a callback: chord(header)(callback)")
        if get_settings().ALWAYS_EAGER:
            return sig.apply()
        return _plan().apply(sig)

    def apply(self) -> EagerResult:
        results = group(self.tasks).apply()
        assert self.body is not None
        return _eager(self.body.clone([results.get()]))


def _plan() -> Any:
    """The planning module (it imports this one)."""
    from . import plan

    return plan


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """A signature from a task, a name, or a signature's dict (one that travelled);
    Celery's ``signature``. ``signature("app.tasks.add", args=(2, 2), countdown=10)``."""
    if isinstance(varies, dict) and not isinstance(varies, Signature):
        kind = varies.get("subtask_type")
        if kind == "chain":
            return chain(*varies["kwargs"]["tasks"], **varies.get("options", {}))
        if kind == "group":
            return group(varies["kwargs"]["tasks"], **varies.get("options", {}))
        if kind == "chord":
            return chord(varies["kwargs"]["header"], varies["kwargs"]["body"],
                         **varies.get("options", {}))
        return Signature(varies["task"], varies.get("args"), varies.get("kwargs"),
                         varies.get("options"), immutable=bool(varies.get("immutable")))
    if isinstance(varies, Signature):
        return varies
    return Signature(varies, *args, **kwargs)


def _check_options(name: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise TypeError(f"{name}: unknown signature option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(KNOWN_OPTIONS - set(CANVAS_KEYS[2:])))}")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def _copy(sig: Signature) -> Signature:
    """A copy deep in the canvas's structure (options, nested signatures),
    shallow in the arguments' values."""
    new = signature(dict(sig, args=list(sig["args"]), kwargs=dict(sig["kwargs"]),
                         options=copy.copy(sig["options"])))
    return new


def _eager(sig: Signature) -> Any:
    return sig.apply()


# -- map, starmap, chunks -------------------------------------------------------


@shared_task(name="djtasks.map")
def _map(task: str, it: list[Any]) -> list[Any]:
    """Call ``task`` on each item, here, in one task (Celery's ``xmap``)."""
    fn = registry.get(task)
    return [fn(item) for item in it]


@shared_task(name="djtasks.starmap")
def _starmap(task: str, it: list[Any]) -> list[Any]:
    """Call ``task(*item)`` for each item, in one task (Celery's ``xstarmap``)."""
    fn = registry.get(task)
    return [fn(*item) for item in it]


def xmap(task: Task, it: Iterable[Any]) -> Signature:
    return Signature(_map, (), {"task": task.name, "it": list(it)})


def xstarmap(task: Task, it: Iterable[Any]) -> Signature:
    return Signature(_starmap, (), {"task": task.name, "it": [list(i) for i in it]})


class chunks:
    """``it`` split into parts of ``n`` items, each a ``starmap`` task
    (Celery's ``chunks``); ``group()`` gives the group, applying it returns
    its ``GroupResult`` (one list of results per chunk)."""

    def __init__(self, task: Task, it: Iterable[Any], n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TypeError(f"chunks() needs a chunk size >= 1, not {n!r}")
        self.task, self.items, self.n = task, [list(i) for i in it], n

    def group(self) -> group:
        parts = [self.items[i:i + self.n] for i in range(0, len(self.items), self.n)]
        return group([xstarmap(self.task, part) for part in parts])

    def apply_async(self, **options: Any) -> GroupResult:
        return self.group().apply_async(**options)

    def delay(self) -> GroupResult:
        return self.apply_async()

    def __call__(self, **options: Any) -> GroupResult:
        return self.apply_async(**options)
