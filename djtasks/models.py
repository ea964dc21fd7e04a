"""The result backend: one ``TaskResult`` row per task id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models
from django.utils import timezone

from . import states
from .message import Message, utc_datetime


def exception_type(exc: BaseException) -> str:
    """The dotted name ``AsyncResult`` rebuilds the exception from."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


class TaskResultQuerySet(models.QuerySet["TaskResult"]):
    def ready(self) -> TaskResultQuerySet:
        return self.filter(status__in=states.READY_STATES)

    def expired(self, older_than: timedelta) -> TaskResultQuerySet:
        """Finished rows whose ``finished`` time is more than ``older_than`` ago."""
        return self.ready().filter(finished__lt=timezone.now() - older_than)


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
