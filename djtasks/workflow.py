"""What a worker does once a task of a workflow has ended: its links, a
chain's next task, a chord's count and callback, errbacks (docs/canvas.md).

``after()`` is asked by the executor for every final outcome; it returns
None for a task that belongs to no workflow (the common case costs one
dict lookup), else a callable the result writer runs once the task's row
is stored and before its ``acks_late`` message is acked. So a worker that
dies in between runs the task again (acks_late), and the follow-ups, whose
ids were fixed when the workflow was applied, are claimed by their rows
and enqueued once (``enqueue.follow``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import router, transaction

from . import codec, enqueue, states
from .brokers import get_broker
from .canvas import Signature, signature
from .models import TaskResult, exception_type
from .plan import Lineage, attach_rest, from_wire, message_for, plan, tasks_in
from .request import Request

if TYPE_CHECKING:
    from .exceptions import TaskArgumentError
    from .execute import Outcome
    from .message import Message
    from .task import Task

logger = logging.getLogger("djtasks.worker")

CHORD_TTL = 7 * 86400.0  # seconds a chord's count is kept after its last member, at most
_WORKFLOW_KEYS = frozenset(("link", "link_error", "chain", "chord"))
_REQUEST_FIELDS = ("id", "task", "args", "kwargs", "retries", "queue", "priority",
                   "parent_id", "root_id", "hostname")


@dataclass(slots=True)
class FollowUp:
    """What a workflow's task left to do once its row is stored."""

    message: Message
    status: str
    value: Any = None
    exception: BaseException | None = None
    traceback: str = ""


def after(task: Task, message: Message, outcome: Outcome) -> FollowUp | None:
    """The follow-ups of ``message``'s final ``outcome``, for ``run_all``
    once its row is stored; None if there are none (no workflow, or a RETRY)."""
    if not _WORKFLOW_KEYS.intersection(message.options):
        return None
    if outcome.status == states.SUCCESS:
        return FollowUp(message, states.SUCCESS, value=outcome.value)
    if outcome.status == states.FAILURE:
        return FollowUp(message, states.FAILURE, exception=outcome.exception,
                        traceback=outcome.traceback)
    return None


def after_revoked(message: Message, exc: BaseException) -> FollowUp | None:
    """A revoked or expired chord member ends its chord FAILURE (else the
    chord would wait for ever); a revoked chain link stops its chain
    silently, as in Celery."""
    if "chord" not in message.options:
        return None
    return FollowUp(message, states.FAILURE, exception=exc)


def resume(task_ids: Sequence[str], lost: Mapping[str, BaseException]) -> None:
    """The follow-ups a dead executor owed, run by the supervisor that
    settled its tasks (``settle_lost``). A task in ``lost`` was settled
    FAILURE with that ``WorkerLostError`` while it ran: its chord ends
    FAILURE and its errbacks are called, as for a raised error. Another
    whose final row was stored may have died before its follow-ups ran:
    they are run again, and each, claimed by its row or counted by its
    member id, still runs once. Tasks of no workflow cost one query."""
    from .outbox import message_from_row
    from .result import _rebuild_exception

    follow_ups = []
    for row in TaskResult.objects.filter(task_id__in=list(task_ids),
                                         status__in=(states.SUCCESS, states.FAILURE)):
        if not _WORKFLOW_KEYS.intersection(row.options or {}):
            continue
        message = message_from_row(row)
        if row.status == states.SUCCESS:
            follow_ups.append(FollowUp(message, states.SUCCESS, value=codec.decode(row.result)))
        else:
            exc = lost.get(row.task_id) or _rebuild_exception(row.exception_type,
                                                              row.exception_message)
            follow_ups.append(FollowUp(message, states.FAILURE, exception=exc,
                                       traceback=row.traceback))
    run_all(follow_ups)


def run_all(follow_ups: list[FollowUp]) -> None:
    """Run the follow-ups of a batch of stored rows: their links and next
    steps claimed and enqueued together (``enqueue.follow``), their chord
    members recorded in one broker call per chord. An error is logged,
    never raised into the worker: what was claimed and not published is
    published by the outbox."""
    if not follow_ups:
        return
    items: list[tuple[Task, Message]] = []
    chords: dict[str, list[Message]] = {}
    for f in follow_ups:
        try:
            if f.status == states.SUCCESS:
                items += _succeeded(f.message, f.value)
                if "chord" in f.message.options:
                    chords.setdefault(f.message.options["chord"]["id"], []).append(f.message)
            else:
                assert f.exception is not None
                _failed(f.message, f.exception, f.traceback)
        except Exception:
            logger.exception("could not enqueue the workflow follow-ups of task %s",
                             f.message.id)
    try:
        _follow(_unique(items))
    except Exception:
        logger.exception("could not enqueue the workflow follow-ups of %d task(s)",
                         len(follow_ups))
    for members in chords.values():
        try:
            _chord_members_done(members)
        except Exception:
            logger.exception("could not record %d member(s) of chord %s as done",
                             len(members), members[0].options["chord"]["id"])


def after_eager(message: Message, outcome: Outcome) -> None:
    """With ``ALWAYS_EAGER`` (or ``apply()``): the links or errbacks of
    ``message`` run here at once, as Celery's eager mode does. Chains,
    groups and chords applied eagerly run through ``Signature.apply``."""
    opts = message.options
    if outcome.status == states.SUCCESS:
        for wire in opts.get("link") or ():
            from_wire(wire).clone([outcome.value]).apply()
    elif outcome.status == states.FAILURE and outcome.exception is not None:
        for wire in opts.get("link_error") or ():
            call = _errback_call(from_wire(wire), message, outcome.exception, outcome.traceback)
            task, errback = message_for(call, [], _lineage(message), [])
            enqueue.apply(task, errback)


def _lineage(message: Message) -> Lineage:
    return Lineage(message.id, message.root_id or message.id, message.created)


def _succeeded(message: Message, value: Any) -> list[tuple[Task, Message]]:
    opts = message.options
    lineage = _lineage(message)
    items = []
    for wire in opts.get("link") or ():
        items += plan(from_wire(wire), [value], lineage)
    steps = opts.get("chain") or []
    if steps:
        following = from_wire(steps[0])
        if steps[1:]:
            attach_rest(following, [from_wire(w) for w in steps[1:]])
        items += plan(following, [value], lineage)
    return items


def _follow(items: list[tuple[Task, Message]]) -> list[str]:
    """``enqueue.follow`` for the follow-ups that can be sent; each one that
    cannot fails as a task that raised would (``_refused``)."""
    ready, refused = enqueue.prepare_each(items)
    try:
        return enqueue.follow(ready)
    finally:  # the others go first, whatever becomes of these
        if refused:
            try:
                _refused(refused)
            except Exception:
                logger.exception("could not record %d follow-up(s) that could not be sent",
                                 len(refused))


def _refused(refused: list[tuple[Message, TaskArgumentError]]) -> None:
    """Follow-ups that cannot be sent (``enqueue.prepare_each``): each one's
    row is FAILURE with its error, and what it stops (the rest of its
    chain, its chord) fails with it and calls its errbacks, once: only the
    ones whose row is claimed here."""
    for message, exc in refused:
        logger.error("follow-up %s[%s] not sent: %s", message.task, message.id, exc)
    using = router.db_for_write(TaskResult)
    rows = TaskResult.objects.using(using)
    now = time.time()
    with transaction.atomic(using=using):  # never a claimed row left PENDING
        claimed = rows.claim([message for message, _ in refused])
        rows.write([TaskResult.from_message(message, states.FAILURE, exception=exc,
                                            finished=now)
                    for message, exc in refused if message.id in claimed])
    for message, exc in refused:
        if message.id in claimed:
            try:
                _failed(message, exc, "")
            except Exception:
                logger.exception("could not fail the workflow of follow-up %s", message.id)


def _chord_members_done(members: list[Message]) -> None:
    """Record members of one chord as done; enqueue its callback if that completed it."""
    state = members[0].options["chord"]
    broker = get_broker()
    if not broker.chord_members_done(state["id"], [m.id for m in members], state["size"],
                                     CHORD_TTL):
        return
    results = chord_results(state["id"], state["size"])
    body = from_wire(state["body"])
    root = members[0].root_id or members[0].id
    enqueued = _follow(plan(body, [results], Lineage(state["id"], root,
                                                             state["created"])))
    if enqueued:
        logger.info("chord %s: all %d members done, callback %s enqueued", state["id"],
                    state["size"], body.id)
    broker.forget_chord(state["id"])


def chord_results(chord_id: str, size: int) -> list[Any]:
    """The results of a chord's members, in header order (None for a member
    whose row is gone). Reads each row's result and index, not its options."""
    results: list[Any] = [None] * size
    rows = (TaskResult.objects.filter(group_id=chord_id)
            .values_list("result", "options__group_index"))
    for result, index in rows.iterator(chunk_size=2000):
        if index is not None and 0 <= int(index) < size:
            results[int(index)] = codec.decode(result)
    return results


def _failed(message: Message, exc: BaseException, traceback: str) -> None:
    opts = message.options
    lineage = _lineage(message)
    errbacks = [from_wire(w) for w in opts.get("link_error") or ()]
    stopped: list[Signature] = [from_wire(w) for w in opts.get("chain") or ()]
    state = opts.get("chord")
    if state is not None:
        body = from_wire(state["body"])
        errbacks += [s for s in (body.options.get("link_error") or [])]
        stopped.append(body)
    items = []
    for errback in errbacks:
        items += plan(_errback_call(errback, message, exc, traceback), [], lineage)
    try:
        _fail_stopped(stopped, exc, traceback, lineage)
    finally:  # the errbacks go whatever became of those rows
        _follow(_unique(items))
    if state is not None:
        get_broker().forget_chord(state["id"])
        logger.info("chord %s failed: member %s raised %r", state["id"], message.id, exc)


def _fail_stopped(stopped: list[Signature], exc: BaseException, traceback: str,
                  lineage: Lineage) -> None:
    """Rows of the tasks that will not run because ``exc`` stopped their
    workflow (a chain's rest, a chord's callback): FAILURE with that error,
    so waiting on them raises it instead of waiting for ever."""
    rows = []
    now = time.time()
    todo = list(stopped)
    while todo:
        for task_sig in tasks_in(todo.pop(0)):
            todo += [signature(s) for s in task_sig.options.get("chain") or ()]
            try:
                _, msg = message_for(task_sig, [], lineage, [])
            except Exception:  # a task this worker does not know: no row to write
                logger.exception("cannot write the row of %s, stopped by a failure", task_sig)
                continue
            rows.append(TaskResult.from_message(msg, states.FAILURE, finished=now,
                                                exception=exc, traceback=traceback))
    if rows:
        TaskResult.objects.write(rows)


def _errback_call(errback: Any, message: Message, exc: BaseException,
                  traceback: str) -> Signature:
    """The errback with its arguments, Celery's way: a task that takes three
    or more arguments is called ``errback(request, exc, traceback)`` (the
    worker rebuilds the request and the exception, ``unpack_errback``);
    one that takes fewer gets the failed task's id, ``errback(task_id)``.
    An immutable errback (``.si()``) gets neither."""
    sig = signature(errback)
    if sig.immutable:
        return sig
    if not _takes_request(sig):
        return sig.clone([message.id])
    request = {k: getattr(message, k, None) for k in _REQUEST_FIELDS if hasattr(message, k)}
    request["group_id"] = message.options.get("group_id")
    error = {"type": exception_type(exc), "message": str(exc)}
    return sig.clone([request, error, traceback], errback=True)


def _takes_request(sig: Signature) -> bool:
    task = sig.type
    params = list(inspect.signature(task.fn).parameters.values())
    if task.bind:
        params = params[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) - len(sig.args) >= 3


def unpack_errback(message: Message) -> Message:
    """Before an errback called Celery's new way runs: its first three
    arguments become a ``Request``, the exception (its class rebuilt) and
    the traceback text. Other messages are returned as they are."""
    if not message.options.get("errback") or len(message.args) < 3:
        return message
    from .result import _rebuild_exception

    raw, error, traceback = message.args[:3]
    fields = {f.name for f in dataclasses.fields(Request)}
    request = Request(**{k: v for k, v in raw.items() if k in fields}, called_directly=False)
    request.group = raw.get("group_id")  # type: ignore[attr-defined]
    exc = _rebuild_exception(error.get("type", ""), error.get("message", ""))
    message.args = [request, exc, traceback, *message.args[3:]]
    return message


def _unique(items: list[tuple[Task, Message]]) -> list[tuple[Task, Message]]:
    """One of each follow-up id (a chain's errback is attached to each task in it)."""
    seen: set[str] = set()
    out = []
    for task, message in items:
        if message.id not in seen:
            seen.add(message.id)
            out.append((task, message))
    return out
