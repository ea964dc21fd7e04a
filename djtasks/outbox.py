"""The outbox: a committed task is never lost (DESIGN.md section 3).

With a broker that publishes after the commit (Redis), the caller's PENDING
row is the record of a task. A row still PENDING after ``OUTBOX_GRACE``
seconds whose message the broker was never given (it was down at commit, or
the web process died between the commit and the publish) is published from
the row by a worker, one worker at a time (``Broker.lead``). Publishing is
idempotent (same id and created time), so a message the broker holds is
never published twice, and ``.delay()`` pays no extra round trip. Tasks
with ``ignore_result`` have no row, so the outbox cannot cover them.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from . import codec, states
from .brokers import Broker
from .enqueue import Outgoing, publish
from .message import Message, dump_envelope
from .models import TaskResult

logger = logging.getLogger("djtasks.outbox")

BATCH = 500  # rows looked at per sweep, oldest first


def message_from_row(row: TaskResult) -> Message:
    """The message the caller built for ``row`` (its PENDING row)."""
    message = Message(
        id=row.task_id, task=row.task_name, args=codec.decode(row.args),
        kwargs=codec.decode(row.kwargs), queue=row.queue, priority=row.priority,
        eta=row.eta.timestamp() if row.eta else None,
        expires=row.expires.timestamp() if row.expires else None,
        retries=row.retries, created=row.created.timestamp(), options=dict(row.options),
        parent_id=row.parent_id or None, root_id=row.root_id or None,
    )
    message.encoded_args, message.encoded_kwargs = row.args, row.kwargs
    return message


def sweep(broker: Broker, *, grace: float) -> list[str]:
    """Publish the messages of PENDING rows older than ``grace`` seconds that
    ``broker`` was never given; return their ids. Raises ``BrokerError``."""
    cutoff = timezone.now() - timedelta(seconds=grace)
    rows = TaskResult.objects.filter(status=states.PENDING, created__lt=cutoff)
    messages = []
    for row in rows.order_by("created")[:BATCH]:
        try:
            messages.append(message_from_row(row))
        except (ValueError, TypeError, KeyError) as exc:  # a row no codec reads: skip it
            logger.error("the outbox cannot rebuild task %s from its row: %s", row.task_id, exc)
    given = broker.published(messages)
    lost = [m for m in messages if m.id not in given]
    if lost:
        outgoing = []
        for message in lost:
            envelope = message.envelope()  # the row's arguments, encoded as they were
            outgoing.append(Outgoing(message, envelope, dump_envelope(envelope)))
        publish(outgoing)
        logger.warning("published %d committed task(s) the broker never had (the outbox): %s",
                       len(lost), ", ".join(m.id for m in lost[:10]))
    return [m.id for m in lost]
