"""Result writes from the worker, batched: one upsert per flush, not per state."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from django.db import DatabaseError, close_old_connections

from .. import codec, states
from ..brokers import Broker
from ..message import Message
from ..models import TaskResult

logger = logging.getLogger("djtasks.worker")

# On conflict (the caller's PENDING row exists) these are overwritten; the
# insert path also fills task_name, args, kwargs and created.
UPDATE_FIELDS = [
    "status", "queue", "priority", "result", "exception_type", "exception_message",
    "traceback", "worker", "retries", "eta", "expires", "started", "finished",
]


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _exception_type(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class ResultWriter:
    """Collects ``TaskResult`` states and writes them in one upsert per ``flush()``.

    The last state added for a task id wins within a flush. After the
    database write, the broker's done notices go out for the tasks that
    reached a ready state.
    """

    def __init__(self, broker: Broker, worker: str) -> None:
        self.broker = broker
        self.worker = worker
        self._rows: dict[str, TaskResult] = {}

    def __bool__(self) -> bool:
        return bool(self._rows)

    def add(
        self,
        message: Message,
        status: str,
        *,
        started: float | None = None,
        finished: float | None = None,
        result: object = None,
        exception: BaseException | None = None,
        traceback: str = "",
    ) -> None:
        self._rows[message.id] = TaskResult(
            task_id=message.id,
            task_name=message.task,
            queue=message.queue,
            priority=message.priority,
            status=status,
            args=codec.encode(message.args),
            kwargs=codec.encode(message.kwargs),
            result=result,
            exception_type=_exception_type(exception) if exception is not None else "",
            exception_message=str(exception) if exception is not None else "",
            traceback=traceback,
            worker=self.worker,
            retries=message.retries,
            eta=_dt(message.eta),
            expires=_dt(message.expires),
            created=_dt(message.created),
            started=_dt(started),
            finished=_dt(finished),
        )

    def flush(self) -> None:
        """Write the collected rows (one query), then send done notices.

        A database error is retried once on a fresh connection, then logged
        with the task ids; the rows are dropped rather than blocking the
        worker, and the tasks' previous states stay in the table.
        """
        if not self._rows:
            return
        rows = list(self._rows.values())
        self._rows.clear()
        for attempt in (1, 2):
            try:
                TaskResult.objects.bulk_create(
                    rows, update_conflicts=True, unique_fields=["task_id"],
                    update_fields=UPDATE_FIELDS,
                )
                break
            except DatabaseError:
                if attempt == 2:
                    logger.exception(
                        "could not store results of tasks %s", ", ".join(r.task_id for r in rows)
                    )
                    return
                close_old_connections()
        done = [r.task_id for r in rows if r.status in states.READY_STATES]
        if done:
            self.broker.notify_done(done)
