"""The one door every message enters by: its body, the size check, the
publish signals, the PENDING row, on-commit publishing, the eager switch and
retries (docs/delivery.md, "How a task is enqueued").

- ``enqueue`` (``apply_async``): the PENDING row in the caller's
  transaction; the message published at commit (the messages of one
  transaction together, ``CommitBatch``), or at once.
- ``retry``: the next attempt of a message a worker (or an eager run) ran,
  under the same checks, published by ``publish``.
- ``apply``: run a message in this process.

``before_task_publish`` is sent once a message is sure to be published
(its size checked, its transaction committed; with the database broker,
just before its row and its PENDING row join the caller's transaction),
``after_task_publish`` once the broker has it (with the database broker, at
the commit).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback as tb
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, router, transaction

from . import signals, states
from .brokers import get_broker
from .conf import get_settings
from .exceptions import TaskArgumentError
from .execute import Outcome, execute
from .message import Message, dump_envelope
from .models import TaskResult, TaskResultQuerySet
from .result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("djtasks.publish")

# Messages per broker call when many go at once (a transaction's batch, a
# group's members): bounds how long one call (one Lua script on Redis)
# holds the broker.
PUBLISH_BATCH = 1000


@dataclass(slots=True)
class Outgoing:
    """A message ready for the broker: its envelope (JSON data) and signed body."""

    message: Message
    envelope: dict[str, Any]
    body: bytes


def prepare(task: Task, message: Message) -> Outgoing:
    """Encode and sign ``message``; raise ``TaskArgumentError`` if an argument
    cannot travel or the body is over ``MAX_MESSAGE_BYTES``."""
    envelope = task.encode_message(message)
    body = dump_envelope(envelope)
    limit = get_settings().MAX_MESSAGE_BYTES
    if len(body) > limit:
        raise TaskArgumentError(
            f"{message.task.rsplit('.', 1)[-1]}(...): the message is {len(body):,} bytes, "
            f"more than DJTASKS['MAX_MESSAGE_BYTES'] ({limit:,}); pass ids or a storage "
            "path instead of large data"
        )
    return Outgoing(message, envelope, body)


def publish(outgoing: Sequence[Outgoing]) -> None:
    """Hand messages to the broker in one call, with the publish signals.
    Raises ``BrokerError`` (then ``after_task_publish`` is not sent)."""
    for out in outgoing:
        _before_publish(out)
    get_broker().publish([(out.message, out.body) for out in outgoing])
    for out in outgoing:
        _after_publish(out)


def _before_publish(out: Outgoing) -> None:
    # An empty receivers list is send()'s own first test: skip building its arguments.
    if not signals.before_task_publish.receivers:
        return
    signals.before_task_publish.send(
        sender=out.message.task, body=out.envelope, exchange="", routing_key=out.message.queue,
        headers=out.message.options.get("headers") or {}, properties={}, declare=[],
        retry_policy=None,
    )


def _after_publish(out: Outgoing) -> None:
    if not signals.after_task_publish.receivers:
        return
    signals.after_task_publish.send(sender=out.message.task, body=out.envelope, exchange="",
                                    routing_key=out.message.queue,
                                    headers=out.message.options.get("headers") or {})


class CommitBatch:
    """The messages enqueued one after another in one transaction: one
    on-commit callback publishes them all, ``PUBLISH_BATCH`` per broker
    call, instead of one callback and one broker call each.

    A message joins the batch only while the batch is the last on-commit
    callback registered on that connection, in the same savepoint scope
    (``_join_batch``), so it is discarded by exactly the rollbacks that
    would have discarded its own callback, and callbacks still run in the
    order they were registered.
    """

    __slots__ = ("items", "done")

    def __init__(self, first: Outgoing) -> None:
        self.items = [first]
        self.done = False

    def __call__(self) -> None:
        self.done = True  # a callback run by a test's capture is not joined again
        _publish_after_commit(self.items)


def _join_batch(out: Outgoing, using: str) -> None:
    """Publish ``out`` when the transaction on ``using`` commits, in the
    batch registered last if it is still joinable, else in a new one."""
    conn = transaction.get_connection(using)
    # Django's own on-commit state (BaseDatabaseWrapper.on_commit appends
    # (savepoint ids, callback, robust); a savepoint rollback or the end of
    # the transaction replaces the list). Whatever does not look exactly
    # like a joinable batch starts a new one: never joins a discarded one.
    hooks = getattr(conn, "run_on_commit", None)
    savepoints = getattr(conn, "savepoint_ids", None)
    if hooks and savepoints is not None:
        last = hooks[-1]
        if (isinstance(last, tuple) and len(last) == 3 and isinstance(last[1], CommitBatch)
                and not last[1].done and last[0] == set(savepoints)):
            last[1].items.append(out)
            return
    transaction.on_commit(CommitBatch(out), using=using)


def _waits_for_commit(on_commit: bool, using: str) -> bool:
    """Whether to act when the transaction on ``using`` commits. Asked here
    rather than by ``on_commit()``, which opens a connection outside one."""
    return on_commit and transaction.get_connection(using).in_atomic_block


def enqueue(task: Task, message: Message, *, on_commit: bool | None,
            using: str | None) -> AsyncResult | EagerResult:
    """Send ``message`` to run ``task``; return its result at once.

    Writes the PENDING row (unless ``ignore_result``). Inside
    ``transaction.atomic()`` on ``using`` with ``on_commit`` (default
    ``ENQUEUE_ON_COMMIT``), the message is published when the transaction
    commits; a rollback removes the row and nothing is published. A broker
    error at commit time is logged with the task id; the row stays PENDING
    and a worker publishes it later (``outbox.sweep``). Publishing at once
    re-raises any error (the broker's, a publish signal receiver's) and
    removes the row.
    With a broker whose ``publish`` joins the transaction on ``using`` (the
    database broker), the message is written with the row, whatever
    ``on_commit`` says. With ``ALWAYS_EAGER`` the task runs in this process
    instead (on commit, with ``on_commit``), through the same body checks.
    Raises ``TaskArgumentError`` before anything is written.
    """
    s = get_settings()
    out = prepare(task, message)
    using = using or router.db_for_write(TaskResult)
    waits = _waits_for_commit(s.ENQUEUE_ON_COMMIT if on_commit is None else on_commit, using)
    if s.ALWAYS_EAGER:
        result = EagerResult(message.id)
        run = partial(_run_eager, task, Message.decode(out.body), result)
        if waits:
            transaction.on_commit(run, using=using)
        else:
            run()
        return result
    broker = get_broker()
    if broker.atomic_with == using:
        # The message row joins the caller's transaction (the database
        # broker): the PENDING row and the message are written together (on
        # PostgreSQL in one statement, so outside a transaction that is the
        # only round trip), and a rollback leaves neither. Inside the
        # caller's transaction a savepoint keeps a failed enqueue from
        # dooming it. ``after_task_publish`` waits for the commit.
        pending = [] if task.result_ignored(message) else [message]
        inside = transaction.get_connection(using).in_atomic_block
        _before_publish(out)
        with transaction.atomic(using=using) if inside else contextlib.nullcontext():
            broker.publish_with_rows([(message, out.body)], pending)
        transaction.on_commit(partial(_after_publish, out), using=using)
        return AsyncResult(message.id, task_name=message.task)
    if not task.result_ignored(message):
        rows = TaskResult.objects.using(using)
        if not waits and rows.commits_alone():
            _publish_beside_row(out, rows)
            return AsyncResult(message.id, task_name=message.task)
        rows.enqueued(message)
    if waits:
        _join_batch(out, using)
    else:
        try:
            publish([out])
        except Exception:
            # The caller gets the error (the broker's, or a publish signal
            # receiver's); a PENDING row would claim a task exists, and the
            # outbox would publish it.
            TaskResult.objects.using(using).filter(task_id=message.id).delete()
            raise
    return AsyncResult(message.id, task_name=message.task)




def _publish_beside_row(out: Outgoing, rows: TaskResultQuerySet) -> None:
    """Publish ``out`` at once while its PENDING row is written, outside a
    transaction on PostgreSQL: the message is sent first and the row
    written while the broker takes it (``Broker.publish_begin``), so the
    caller waits for the longer of the two round trips, not their sum.

    The broker's reply is the caller's promise, as with the row's relaxed
    commit (``TaskResultQuerySet.commits_alone``): if the broker refused,
    the row is removed and the error raised; if only the row failed, the
    task exists all the same, the error is logged and the worker's first
    write makes the row. A worker that writes first keeps its row
    (``enqueued`` does not take back a row of the same message). Anything
    else raised while the row is written (a soft time limit, a
    ``KeyboardInterrupt``) is raised as it is: the message may be out, and
    the broker's next call does not take its unread reply for its own.
    """
    message = out.message
    _before_publish(out)
    reply = get_broker().publish_begin([(message, out.body)])  # raises before any row
    try:
        rows.enqueued(message, alone=True)
    except DatabaseError as exc:
        reply()  # the broker's error, if it refused too, is the caller's
        logger.warning("task %s[%s] is published, but its PENDING row could not be written; "
                       "the worker's first write makes it: %s", message.task, message.id, exc)
        _after_publish(out)
        return
    try:
        reply()
        _after_publish(out)
    except Exception:
        rows.filter(task_id=message.id).delete()  # as enqueue(): no row claims a task
        raise


def _publish_batched(outgoing: Sequence[Outgoing]) -> None:
    for start in range(0, len(outgoing), PUBLISH_BATCH):
        publish(outgoing[start:start + PUBLISH_BATCH])


def enqueue_many(items: Sequence[tuple[Task, Message]], *, on_commit: bool | None,
                 using: str | None) -> None:
    """``enqueue`` for the first messages of a workflow (a group's members,
    a chain's first task): checked first, all of them, then the PENDING rows
    in one statement per 500 and the messages in one broker call per
    ``PUBLISH_BATCH``,
    with ``enqueue``'s transaction rules. With ``ALWAYS_EAGER`` each runs
    here. Raises ``TaskArgumentError`` before anything is written."""
    s = get_settings()
    if s.ALWAYS_EAGER or len(items) == 1:
        for task, message in items:
            enqueue(task, message, on_commit=on_commit, using=using)
        return
    outs = [prepare(task, message) for task, message in items]
    using = using or router.db_for_write(TaskResult)
    rows = [m for t, m in items if not t.result_ignored(m)]
    broker = get_broker()
    if broker.atomic_with == using:
        with transaction.atomic(using=using):
            TaskResult.objects.using(using).enqueued_many(rows)
            for out in outs:
                _before_publish(out)
            for start in range(0, len(outs), PUBLISH_BATCH):
                broker.publish([(o.message, o.body) for o in outs[start:start + PUBLISH_BATCH]])
            transaction.on_commit(partial(_after_publish_all, outs), using=using)
        return
    TaskResult.objects.using(using).enqueued_many(rows)
    waits = _waits_for_commit(s.ENQUEUE_ON_COMMIT if on_commit is None else on_commit, using)
    if waits:
        transaction.on_commit(partial(_publish_after_commit, outs), using=using)
        return
    try:
        _publish_batched(outs)
    except Exception:
        # As enqueue(): the caller gets the error and no row claims a task exists.
        TaskResult.objects.using(using).filter(task_id__in=[m.id for m in rows]).delete()
        raise


def _after_publish_all(outs: list[Outgoing]) -> None:
    for out in outs:
        _after_publish(out)


def prepare_each(items: Sequence[tuple[Task, Message]]
                 ) -> tuple[list[tuple[Task, Outgoing]], list[tuple[Message, TaskArgumentError]]]:
    """``prepare`` each of a worker's follow-ups on its own: those that can
    be sent, and those that cannot, each with its ``TaskArgumentError``
    (the result it would carry is over ``MAX_MESSAGE_BYTES``, say), so one
    of them cannot stop the others."""
    ready: list[tuple[Task, Outgoing]] = []
    refused: list[tuple[Message, TaskArgumentError]] = []
    for task, message in items:
        try:
            ready.append((task, prepare(task, message)))
        except TaskArgumentError as exc:
            refused.append((message, exc))
    return ready, refused


def follow(items: Sequence[tuple[Task, Outgoing]]) -> list[str]:
    """Enqueue a worker's follow-ups of a finished task (links, errbacks, a
    chain's next task, a chord's callback), whose ids the workflow fixed
    when it was applied, prepared by ``prepare_each``; return the ids
    enqueued now.

    A follow-up whose row exists already was enqueued before (by an earlier
    run of the same task, or by another member of the same chord) and is
    skipped: its PENDING row is claimed first (``TaskResultQuerySet.claim``),
    in one transaction with the message on the database broker; on Redis
    the message is published after, and if the worker dies in between the
    outbox publishes it from its row. Follow-ups of tasks with
    ``ignore_result`` have no row to claim; the Redis broker's idempotent
    publish (same id and ``created``) keeps them single. Raises
    ``BrokerError``.
    """
    if not items:
        return []
    using = router.db_for_write(TaskResult)
    broker = get_broker()
    tracked = [o.message for t, o in items if not t.result_ignored(o.message)]
    with transaction.atomic(using=using):
        claimed = TaskResult.objects.using(using).claim(tracked)
        todo = [o for t, o in items if t.result_ignored(o.message) or o.message.id in claimed]
        if broker.atomic_with == using:
            _publish_batched(todo)
            return [o.message.id for o in todo]
    _publish_batched(todo)
    return [o.message.id for o in todo]


def _publish_after_commit(outgoing: Sequence[Outgoing]) -> None:
    for start in range(0, len(outgoing), PUBLISH_BATCH):
        batch = outgoing[start:start + PUBLISH_BATCH]
        try:
            publish(batch)
        except Exception as exc:  # the broker's, or a publish signal receiver's
            # The commit has happened; failing the caller now would not undo it.
            _log_unpublished(batch, exc)


def _log_unpublished(outgoing: Sequence[Outgoing], exc: Exception) -> None:
    for out in outgoing:
        logger.error(
            "could not publish task %s[%s] after commit; its TaskResult row stays "
            "PENDING and a worker publishes it once the broker is back (the outbox): %s",
            out.message.task, out.message.id, exc,
        )


def retry(task: Task, message: Message, outcome: Outcome) -> Outgoing | None:
    """The next attempt of ``message``, whose run ended RETRY in ``outcome``.

    Built from the message it ran (``Message.next_attempt``) and the
    intent ``Retry`` carries, under ``prepare``'s checks. If it cannot
    travel (new arguments the codec refuses, a body over the limit), the
    task ends there: ``outcome`` becomes a FAILURE with that
    ``TaskArgumentError`` and None is returned.
    """
    intent = outcome.retry
    assert intent is not None
    attempt = message.next_attempt(args=intent.retry_args, kwargs=intent.retry_kwargs,
                                   eta=intent.when, now=time.time())
    try:
        return prepare(task, attempt)
    except TaskArgumentError as exc:
        outcome.status, outcome.retry = states.FAILURE, None
        outcome.exception, outcome.traceback = exc, "".join(tb.format_exception(exc))
        return None


def apply(task: Task, message: Message) -> EagerResult:
    """Run ``message`` in this process now (``Task.apply``): through JSON as a
    worker sees it, without the size limit on the first run (its retries are
    checked as a worker's are); no row is written."""
    result = EagerResult(message.id)
    _run_eager(task, Message.decode(dump_envelope(task.encode_message(message))), result)
    return result


def _run_eager(task: Task, message: Message, result: EagerResult) -> None:
    """Run until the task stops asking for retries (each runs at once), then
    fill ``result``; re-raise with ``EAGER_PROPAGATES``. A workflow's links
    or errbacks run here too (``workflow.after_eager``)."""
    from . import workflow

    message = workflow.unpack_errback(message)
    while True:
        outcome = execute(task, message, hostname="eager", eager=True)
        if outcome.retry is None:
            break
        attempt = retry(task, message, outcome)
        if attempt is None:
            break
        message = Message.decode(attempt.body)
    result._settle(outcome)
    if message.options:
        workflow.after_eager(message, outcome)
    # Ignore and Reject are how a run ended, not an error to propagate.
    if outcome.status == states.FAILURE and get_settings().EAGER_PROPAGATES:
        assert outcome.exception is not None
        raise outcome.exception
