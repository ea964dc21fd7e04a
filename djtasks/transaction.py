"""Enqueueing: the PENDING row in the caller's transaction, publishing on commit."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import router, transaction

from . import signals, states
from .brokers import get_broker
from .conf import get_settings
from .exceptions import BrokerError, TaskArgumentError
from .message import Message, dump_envelope
from .models import TaskResult
from .result import AsyncResult, EagerResult

if TYPE_CHECKING:
    from .task import Task

logger = logging.getLogger("djtasks.publish")


def _waits_for_commit(on_commit: bool, using: str) -> bool:
    """Whether to act when the transaction on ``using`` commits. Asked here
    rather than by ``on_commit()``, which opens a connection outside one."""
    return on_commit and transaction.get_connection(using).in_atomic_block


def enqueue_eager(
    task: Task, message: Message, envelope: dict[str, Any], *, on_commit: bool,
    using: str | None,
) -> EagerResult:
    """``ALWAYS_EAGER``: run the task in this process (on commit, with
    ``on_commit``), as a worker would see it: through JSON and its size limit."""
    from .task import EagerRun

    body = dump_envelope(envelope)
    check_size(message, body)
    result = EagerResult(message.id)
    run = EagerRun(task, Message.decode(body), result)
    using = using or router.db_for_write(TaskResult)
    if _waits_for_commit(on_commit, using):
        transaction.on_commit(run, using=using)
    else:
        run()
    return result


def enqueue(
    task: Task, message: Message, envelope: dict[str, Any], *, on_commit: bool, using: str | None
) -> AsyncResult:
    """Write the PENDING row (unless ``ignore_result``) and publish the message.

    Inside ``transaction.atomic()`` on ``using`` with ``on_commit``, the
    message is published when the transaction commits; a rollback removes
    the row and nothing is published. A broker error at commit time is
    logged with the task id and the row stays PENDING. Publishing at once
    (outside a transaction, or ``on_commit=False``) raises ``BrokerError``
    and removes the row.
    """
    signals.before_task_publish.send(
        sender=message.task, body=envelope, exchange="", routing_key=message.queue,
        headers={}, properties={}, declare=[], retry_policy=None,
    )
    body = dump_envelope(envelope)
    check_size(message, body)
    using = using or router.db_for_write(TaskResult)
    if not task.ignore_result:
        TaskResult.from_message(message, states.PENDING).save(using=using, force_insert=True)
    if _waits_for_commit(on_commit, using):
        transaction.on_commit(lambda: _publish_after_commit(message, envelope, body),
                              using=using)
    else:
        try:
            _publish(message, envelope, body)
        except BrokerError:
            # The caller gets the error; a PENDING row would claim a task exists.
            TaskResult.objects.using(using).filter(task_id=message.id).delete()
            raise
    return AsyncResult(message.id, task_name=message.task)


def check_size(message: Message, body: bytes) -> None:
    """Raise ``TaskArgumentError`` if ``body`` is over ``MAX_MESSAGE_BYTES``."""
    limit = get_settings().MAX_MESSAGE_BYTES
    if len(body) > limit:
        raise TaskArgumentError(
            f"{message.task.rsplit('.', 1)[-1]}(...): the message is {len(body):,} bytes, "
            f"more than DJTASKS['MAX_MESSAGE_BYTES'] ({limit:,}); pass ids or a storage "
            "path instead of large data"
        )


def _publish(message: Message, envelope: dict[str, Any], body: bytes) -> None:
    get_broker().publish([(message, body)])
    signals.after_task_publish.send(
        sender=message.task, body=envelope, exchange="", routing_key=message.queue
    )


def _publish_after_commit(message: Message, envelope: dict[str, Any], body: bytes) -> None:
    try:
        _publish(message, envelope, body)
    except BrokerError as exc:
        # The commit has happened; failing the caller now would not undo it.
        logger.error(
            "could not publish task %s[%s] after commit; its TaskResult row stays "
            "PENDING: %s", message.task, message.id, exc,
        )
