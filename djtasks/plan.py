"""A workflow into messages: every id in it fixed first (``freeze``), then
the messages that start it, carrying the rest as options (docs/canvas.md).

Used when a workflow is applied (``canvas``) and by the worker when a task
of one has ended (``workflow``).
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import codec
from .canvas import MESSAGE_KEYS, Signature, _as_list, _copy, chain, chord, group, signature
from .exceptions import TaskArgumentError
from .request import current_request

if TYPE_CHECKING:
    from .message import Message
    from .task import Task


# -- the wire ------------------------------------------------------------------


def to_wire(sig: Signature, where: str = "link") -> dict[str, Any]:
    """``sig`` as JSON data for a message's options (arguments through the codec).
    Raises ``TaskArgumentError`` if an argument cannot travel."""
    try:
        return codec.encode(dict(sig), (where,))  # type: ignore[no-any-return,unused-ignore]
    except codec.UnencodableValue as exc:
        raise TaskArgumentError(
            f"{sig.task}: an argument of a signature in {where} cannot travel: {exc.hint} "
            f"(at {codec.path_name(exc.path)})") from None


def from_wire(data: Any) -> Signature:
    """The signature ``to_wire`` wrote."""
    return signature(codec.decode(data))


def wire_list(value: Any, where: str = "link") -> list[dict[str, Any]] | None:
    """``link``/``link_error`` for a message: each signature frozen (a task
    id fixed now, on a copy) and on the wire; None if there are none."""
    sigs = [freeze(signature(s)) for s in _as_list(value)]
    return [to_wire(s, where) for s in sigs] or None


# -- applying a workflow: every id fixed first, then the first messages -------


def freeze(sig: Signature) -> Signature:
    """A copy of ``sig`` with every task id in it fixed (``task_id``), and
    every group's and chord's id, recursively. Follow-ups enqueued later by
    a worker use these ids, so enqueuing one twice is seen and skipped."""
    sig = _copy(sig)
    sig["options"].setdefault("task_id", str(uuid.uuid4()))
    for key in ("link", "link_error"):
        if key in sig["options"]:
            sig["options"][key] = [freeze(signature(s)) for s in _as_list(sig.options[key])]
    if isinstance(sig, chain | group):
        sig["kwargs"]["tasks"] = [freeze(t) for t in sig.tasks]
    elif isinstance(sig, chord):
        sig["kwargs"]["header"] = [freeze(t) for t in sig.tasks]
        sig["kwargs"]["body"] = freeze(sig.body) if sig.body is not None else None
    return sig


class Lineage:
    """Where a workflow's first messages hang: parent and root task ids, and
    the ``created`` time (seconds) they carry. A worker's follow-ups use the
    finished task's id and its message's ``created``, the same on a rerun,
    so the broker sees a second publish as the same message."""

    def __init__(self, parent_id: str | None, root_id: str | None, created: float) -> None:
        self.parent_id, self.root_id, self.created = parent_id, root_id, created

    @classmethod
    def here(cls) -> Lineage:
        # To the microsecond, as build_message's: the outbox rebuilds
        # ``created`` from the row, and the broker matches it exactly.
        now = timezone.now().timestamp()
        parent = current_request()
        if parent is None or parent.id is None:
            return cls(None, None, now)
        return cls(parent.id, parent.root_id or parent.id, now)


def plan(sig: Signature, prefix: list[Any], lineage: Lineage,
         errbacks: list[Signature] | None = None) -> list[tuple[Task, Message]]:
    """The messages that start frozen ``sig`` now, with ``prefix`` prepended
    to its arguments (a parent's result); ``errbacks`` are inherited from
    an enclosing chain and attached to every task in it."""
    errbacks = errbacks or []
    if isinstance(sig, chain):
        steps = sig.tasks
        first, rest = steps[0], steps[1:]
        own = [*errbacks, *[signature(e) for e in _as_list(sig.options.get("link_error"))]]
        if sig.options.get("link"):
            last = steps[-1] if rest else first
            for cb in _as_list(sig.options["link"]):
                last.link(signature(cb))
        if rest:
            attach_rest(first, [_with_errbacks(s, own) for s in rest])
        return plan(_inherit(first, sig), prefix, lineage, own)
    if isinstance(sig, group):
        gid = sig.options["task_id"]
        own = [*errbacks, *[signature(e) for e in _as_list(sig.options.get("link_error"))]]
        items = []
        for i, member in enumerate(sig.tasks):
            member.options.update(group_id=gid, group_index=i)
            items += plan(_inherit(member, sig), prefix, lineage, own)
        return items
    if isinstance(sig, chord):
        return _plan_chord(sig, prefix, lineage, errbacks)
    return [message_for(sig, prefix, lineage, errbacks)]


def _inherit(target: Signature, parent: Signature) -> Signature:
    """``target`` with the message options (``queue``, ``countdown``...) given
    to the chain, group or chord it starts, unless it has its own (Celery
    passes a chain's options to its first task, a group's to each member)."""
    for key in MESSAGE_KEYS:
        if key != "task_id" and key in parent.options:
            target.options.setdefault(key, parent.options[key])
    return target


def _with_errbacks(sig: Signature, errbacks: list[Signature]) -> Signature:
    """``sig`` with the chain's errbacks added to each task in it."""
    for target in tasks_in(sig):
        have = {e.get("options", {}).get("task_id") for e in _as_list(target.options.get(
            "link_error"))}
        for e in errbacks:
            if e.options.get("task_id") not in have:
                target.link_error(e)
    if isinstance(sig, chord):
        sig["kwargs"]["header"] = sig.tasks  # the members were edited as copies
    return sig


def tasks_in(sig: Signature) -> list[Signature]:
    if isinstance(sig, chord):
        body = sig.body
        assert body is not None
        header = sig.tasks
        sig["kwargs"]["header"], sig["kwargs"]["body"] = header, body
        return [*header, *tasks_in(body)]
    if isinstance(sig, chain | group):
        tasks = sig.tasks
        sig["kwargs"]["tasks"] = tasks
        return list(itertools.chain.from_iterable(tasks_in(t) for t in tasks))
    return [sig]


def attach_rest(sig: Signature, rest: list[Signature]) -> None:
    """Make ``rest`` (the chain after ``sig``) follow ``sig``."""
    if isinstance(sig, chord):
        body = sig.body
        assert body is not None
        attach_rest(body, rest)
        sig["kwargs"]["body"] = body
    elif isinstance(sig, group):
        raise TypeError("a group in a chain is followed by a chord, not by more tasks")
    else:
        sig["options"]["chain"] = [*_as_list(sig.options.get("chain")), *rest]


def _plan_chord(sig: chord, prefix: list[Any], lineage: Lineage,
                errbacks: list[Signature]) -> list[tuple[Task, Message]]:
    body = sig.body
    assert body is not None
    header = sig.tasks
    for e in [*errbacks, *[signature(x) for x in _as_list(sig.options.get("link_error"))]]:
        body.link_error(e)
    if not header:  # Celery runs the callback at once with no results
        return plan(body, [[]], lineage, errbacks)
    for member in header:
        if member.type.ignore_result:
            raise TypeError(f"{member.task} has ignore_result; a chord's members need "
                            "their results")
    cid = sig.options["task_id"]
    state = {"id": cid, "size": len(header), "body": to_wire(body, "chord"),
             "created": lineage.created}
    items = []
    for i, member in enumerate(header):
        _inherit(member, sig)
        member.options.update(group_id=cid, group_index=i, chord=state)
        items.append(message_for(member, prefix, lineage, errbacks))
    return items


def message_for(sig: Signature, prefix: list[Any], lineage: Lineage,
             errbacks: list[Signature]) -> tuple[Task, Message]:
    task = sig.type
    opts = dict(sig.options)
    args = sig.args if sig.immutable else [*prefix, *sig.args]
    call = {k: opts[k] for k in MESSAGE_KEYS if k in opts}
    if errbacks:
        have = {signature(e).options.get("task_id") for e in _as_list(opts.get("link_error"))}
        opts["link_error"] = [*_as_list(opts.get("link_error")),
                              *[e for e in errbacks if e.options.get("task_id") not in have]]
    message = task.build_message(args, sig.kwargs, **call, link=opts.get("link"),
                                 link_error=opts.get("link_error"))
    message.parent_id = lineage.parent_id
    message.root_id = lineage.root_id
    message.created = lineage.created
    if opts.get("chain"):
        message.options["chain"] = [to_wire(freeze(signature(s)), "chain")
                                    for s in opts["chain"]]
    for key in ("chord", "group_id", "group_index", "errback"):
        if key in opts:
            message.options[key] = opts[key]
    return task, message


def apply(sig: Signature) -> Any:
    """Freeze ``sig``, enqueue its first messages through the door, and
    return its result (Celery's): a group's ``GroupResult``, a chain's last
    task's result with ``parent`` links, a chord's callback's result."""
    from .enqueue import enqueue_many

    opts = sig.options
    on_commit, using = opts.pop("on_commit", None), opts.pop("using", None)
    frozen = freeze(sig)
    lineage = Lineage.here()
    items = plan(frozen, [], lineage)
    if lineage.root_id is None and items:
        root = items[0][1].id
        for _, message in items:
            message.root_id = root
    enqueue_many(items, on_commit=on_commit, using=using)
    return result_of(frozen)


def result_of(sig: Signature, parent: Any = None) -> Any:
    """The result object of frozen ``sig`` (no database read)."""
    from .result import AsyncResult, GroupResult

    if isinstance(sig, chain):
        result = None
        for step in sig.tasks:
            result = result_of(step, result)
        return result
    if isinstance(sig, group):
        res = GroupResult(sig.options["task_id"], [result_of(t) for t in sig.tasks])
        res.parent = parent
        return res
    if isinstance(sig, chord):
        header = GroupResult(sig.options["task_id"], [result_of(t) for t in sig.tasks])
        header.parent = parent
        assert sig.body is not None
        return result_of(sig.body, header)
    result = AsyncResult(sig.options["task_id"], task_name=sig.task)
    result.parent = parent
    return result
