"""The executor's part in ``update_state``, ``Ignore`` and ``Reject`` (Celery's).

A mixin of ``Executor`` (djtasks/worker/executor.py), kept apart so the
executor's loop reads as the common path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import enqueue, states, workflow
from ..brokers import Consumer, Delivery
from ..exceptions import Reject, TaskRevokedError
from ..models import TaskResult

if TYPE_CHECKING:
    from ..execute import Outcome
    from ..message import Message
    from ..task import Task
    from .results import ResultWriter

logger = logging.getLogger("djtasks.worker")


class IgnoredRuns:
    """``Executor``'s handling of a task's own state reports and of runs
    that ended IGNORED or REJECTED."""

    name: str
    consumer: Consumer
    results: ResultWriter | None
    _acks: list[str]
    _reported: tuple[str, str] | None = None  # (task id, state) of the last update_state

    def _publish_retry(self, message: Message, attempt: enqueue.Outgoing) -> None:
        raise NotImplementedError  # Executor's

    def _store_state(self, message: Message, started: float, state: str, meta: Any) -> None:
        """Store the running task's ``update_state`` through the result writer
        and wait until it is written, so ``AsyncResult`` shows it at once
        and the task's own transaction does not hold it."""
        assert self.results is not None
        finished = time.time() if state in states.READY_STATES else None
        self.results.add(TaskResult.from_message(
            message, state, worker=self.name, started=started, finished=finished, result=meta))
        self.results.sync()
        self._reported = (message.id, state)

    def _ignored(self, task: Task, delivery: Delivery, message: Message, outcome: Outcome,
                 store: bool) -> None:
        """Settle a run that raised ``Ignore`` or ``Reject``.

        ``Ignore``: the row keeps a ready state the task stored itself;
        otherwise it becomes REVOKED "ignored" (no row waits for ever).
        ``Reject(requeue=True)``: the message goes back on its queue (the same
        id and retries). ``Reject(requeue=False)``: the message is dead-lettered
        with its reason and the row ends FAILURE. Either way a chord member
        ends its chord FAILURE, as a revoked one does (it would wait for ever).
        """
        assert self.results is not None
        exc = outcome.exception
        late_ack = message.id if task.acks_late else None
        reported = self._reported[1] if self._reported and self._reported[0] == message.id else ""
        self._reported = None
        if isinstance(exc, Reject) and exc.requeue:
            logger.info("task %s[%s] rejected and requeued: %s", message.task, message.id, exc)
            # This run is acked before its copy is published, so its ack
            # cannot take the copy, which has the same id; it is settled only
            # after, so a worker that dies in between leaves its row to the
            # reaper (FAILURE, WorkerLostError) instead of STARTED for ever.
            # A new ``created`` makes the copy a new message to the broker's dedupe.
            self.results.sync()
            acks, self._acks = self._acks + ([late_ack] if late_ack else []), []
            self.consumer.ack(acks)
            again = replace(message, created=time.time())
            self._publish_retry(message, enqueue.prepare(task, again))
            self.consumer.ack([], settled=[message.id])
            return
        row = None
        if isinstance(exc, Reject):
            reason = f"rejected by the task: {exc.reason}"
            logger.warning("task %s[%s] %s; dead-lettered", message.task, message.id, reason)
            self.consumer.dead_letter(delivery, reason)
            row = TaskResult.from_message(message, states.FAILURE, worker=self.name,
                                          started=outcome.started, finished=outcome.finished,
                                          exception=exc)
        else:
            logger.info("task %s[%s] ignored: %s", message.task, message.id, exc or "Ignore()")
            exc = TaskRevokedError(f"ignored: {exc}" if str(exc) else "ignored")
            if reported not in states.READY_STATES:
                row = TaskResult.from_message(
                    message, states.REVOKED, worker=self.name, started=outcome.started,
                    finished=outcome.finished, exception=exc)
        then = workflow.after_revoked(message, exc)  # None outside a chord
        if store and row is not None:
            self.results.add(row, late_ack=late_ack, then=then)
        else:
            if then is not None:
                workflow.run_all([then])
            if late_ack is not None:
                self._acks.append(late_ack)
