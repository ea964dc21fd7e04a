"""The result backend: one ``TaskResult`` row per task id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from . import states
from .message import Message, utc_datetime


def exception_type(exc: BaseException) -> str:
    """The importable path of the exception's class (``builtins.ValueError``),
    which ``AsyncResult`` rebuilds the exception from and Django's ``TaskError``
    imports. Older rows name builtins without their module (``ValueError``);
    ``AsyncResult`` reads both forms."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


# What a later row of a task replaces (on conflict); task_name, args, kwargs
# and created are the caller's, written once with the PENDING row.
UPDATE_FIELDS = [
    "status", "queue", "priority", "result", "exception_type", "exception_message",
    "traceback", "worker", "retries", "eta", "expires", "started", "finished",
]


class TaskResultQuerySet(models.QuerySet["TaskResult"]):
    """Every state change of a ``TaskResult`` goes through these methods,
    which follow ``states.FOLLOWS``: no state goes backwards."""

    def ready(self) -> TaskResultQuerySet:
        return self.filter(status__in=states.READY_STATES)

    def expired(self, older_than: timedelta) -> TaskResultQuerySet:
        """Finished rows whose ``finished`` time is more than ``older_than`` ago."""
        return self.ready().filter(finished__lt=timezone.now() - older_than)

    def waiting(self) -> TaskResultQuerySet:
        """Rows of tasks queued or waiting for a retry, not running."""
        return self.filter(status__in=(states.PENDING, states.RETRY))

    def lost_by(self, worker: str) -> TaskResultQuerySet:
        """Rows a dead or killed executor ``worker`` may have left unsettled:
        not started elsewhere, and not finished."""
        return self.filter(
            models.Q(status__in=(states.PENDING, states.RETRY, states.REVOKED))
            | models.Q(status=states.STARTED, worker=worker)
        )

    def enqueued(self, message: Message) -> None:
        """Write the caller's PENDING row of ``message``.

        A ``task_id`` that has a row already (a reused id, as Celery allows)
        is taken over by the new run: every field is the new message's.
        Never raises ``IntegrityError``.
        """
        row = self.model.from_message(message, states.PENDING)
        self.bulk_create([row], update_conflicts=True, unique_fields=["task_id"],
                         update_fields=[*UPDATE_FIELDS, "task_name", "args", "kwargs",
                                        "options", "created"])

    def write(self, rows: list[TaskResult]) -> list[TaskResult]:
        """Store a worker's rows (a batch) in one transaction: each row is
        written only if ``states.may_follow`` allows it after the stored one
        (the last row of an id in ``rows`` stands for it). Returns the rows
        written; the others came too late and are dropped. Raises
        ``DatabaseError``."""
        latest = {row.task_id: row for row in rows}
        with transaction.atomic(using=self.db):
            stored = {
                task_id: (status, retries)
                for task_id, status, retries in self.select_for_update()
                .filter(task_id__in=list(latest)).order_by("task_id")
                .values_list("task_id", "status", "retries")
            }
            allowed = [
                row for task_id, row in latest.items()
                if task_id not in stored or states.may_follow(*stored[task_id], row.status,
                                                              row.retries)
            ]
            self.bulk_create(allowed, update_conflicts=True, unique_fields=["task_id"],
                             update_fields=UPDATE_FIELDS)
        return allowed

    def move_to(self, status: str, *, exc: BaseException | None = None,
                worker: str | None = None) -> int:
        """Move the rows of this QuerySet whose state may become ``status``
        (within their attempt) to it, with ``exc`` as their error, in one
        UPDATE. Returns the number of rows changed."""
        fields: dict[str, Any] = {"status": status}
        if exc is not None:
            fields.update(exception_type=exception_type(exc), exception_message=str(exc))
        if worker is not None:
            fields["worker"] = worker
        if status in states.READY_STATES:
            fields["finished"] = timezone.now()
        return self.filter(status__in=states.preceding(status)).update(**fields)


class TaskResult(models.Model):
    """State, arguments, result and traceback of one task id.

    The caller writes the PENDING row at enqueue, in its own transaction; the
    worker moves it on (STARTED, RETRY, SUCCESS, FAILURE, REVOKED). ``args``,
    ``kwargs`` and ``result`` hold codec-encoded JSON; ``AsyncResult`` decodes
    them.
    """

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, db_index=True)
    queue = models.CharField(max_length=200, default="default", db_index=True)
    priority = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=states.CHOICES, default=states.PENDING, db_index=True
    )
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    # Per-call options (time limits) the message carries: the outbox rebuilds
    # an unpublished message from its row.
    options = models.JSONField(default=dict, blank=True)
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="worker/executor that ran it")
    retries = models.PositiveIntegerField(default=0)
    eta = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = TaskResultQuerySet.as_manager()

    class Meta:
        verbose_name = "task result"
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["status", "created"], name="djtasks_status_created"),
            models.Index(fields=["worker", "status"], name="djtasks_worker_status"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.task_id} {self.status}"

    @classmethod
    def from_message(
        cls,
        message: Message,
        status: str,
        *,
        worker: str = "",
        started: float | None = None,
        finished: float | None = None,
        result: Any = None,
        exception: BaseException | None = None,
        traceback: str = "",
    ) -> TaskResult:
        """An unsaved row for ``message`` in ``status`` (times are timestamps).

        The caller's PENDING row and every row the worker writes come from
        here; arguments are the message's encoded ones (not encoded again).
        """
        args, kwargs = message.encoded_arguments()
        return cls(
            task_id=message.id,
            task_name=message.task,
            queue=message.queue,
            priority=message.priority,
            status=status,
            args=args,
            kwargs=kwargs,
            result=result,
            options=message.options,
            exception_type=exception_type(exception) if exception is not None else "",
            exception_message=str(exception) if exception is not None else "",
            traceback=traceback,
            worker=worker,
            retries=message.retries,
            eta=utc_datetime(message.eta),
            expires=utc_datetime(message.expires),
            created=utc_datetime(message.created),
            started=utc_datetime(started),
            finished=utc_datetime(finished),
        )

    def refused(self, error: Exception) -> TaskResult:
        """This row as a FAILURE saying the database refused it (and why)."""
        return TaskResult(
            task_id=self.task_id, task_name=self.task_name, queue=self.queue, priority=0,
            status=states.FAILURE, args=[], kwargs={}, result=None,
            exception_type="djtasks.exceptions.TaskError",
            exception_message=f"the {self.status} row of this task could not be stored: {error}",
            traceback="", worker=self.worker, created=self.created,
            retries=min(self.retries, 2**31 - 1),  # what every database's column holds
            started=self.started, finished=self.finished,
        )

    @property
    def runtime(self) -> timedelta | None:
        """Seconds between start and finish, as a timedelta (None if not both known)."""
        if self.started and self.finished:
            return self.finished - self.started
        return None


class DeadLetter(models.Model):
    """The dead-letter store in the admin. No table: the letters live in the
    broker; the admin page reads them there (see ``admin.DeadLetterAdmin``)."""

    class Meta:
        managed = False
        verbose_name = "dead letter"
        default_permissions = ("view", "change", "delete")

    def __str__(self) -> str:
        return f"dead letter {self.pk}"


# The database broker's tables live beside it; imported so migrations see them.
from .brokers.tables import (  # noqa: E402,F401
    BrokerConsumer,
    Duty,
    QueuedMessage,
    RateBucket,
    Revocation,
    StartedTask,
    StoredDeadLetter,
    WorkerRecord,
)
