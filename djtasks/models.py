"""The result backend: one ``TaskResult`` row per task id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connections, models, transaction
from django.utils import timezone

from . import states
from .message import Message, utc_datetime
from .sql import cursor as sql_cursor


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
# What a new enqueue of a reused task_id replaces too.
CALLER_FIELDS = [
    "task_name", "args", "kwargs", "options", "created", "parent_id", "root_id", "group_id",
]


def status_in(names: list[str] | frozenset[str]) -> models.Q:
    """A filter on ``status`` for ``names``, where ``states.CUSTOM`` stands
    for every custom state (any name not built in)."""
    q = models.Q(status__in=[n for n in names if n != states.CUSTOM])
    if states.CUSTOM in names:
        q |= ~models.Q(status__in=states.ALL_STATES)
    return q


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
            | (status_in([states.STARTED, states.CUSTOM]) & models.Q(worker=worker))
        )

    def enqueued(self, message: Message, *, alone: bool | None = None) -> None:
        """Write the caller's PENDING row of ``message``.

        A ``task_id`` that has a row already (a reused id, as Celery allows)
        is taken over by the new run: every field is the new message's. On
        PostgreSQL and SQLite, a row the worker already wrote for this very
        message (same ``created``: the message can reach a worker first,
        see ``commits_alone``) is left as it is. Never raises
        ``IntegrityError``.

        Outside a transaction on PostgreSQL, the row's commit does not wait
        for the disk (``synchronous_commit`` off, for its own transaction
        only): the publish that follows tells the caller the task exists,
        and a row lost by a crash of PostgreSQL is made again by the
        worker's first write (docs/delivery.md, "How a task is enqueued").
        ``alone``: ``commits_alone()``, when the caller asked it already.
        """
        row = self.model.from_message(message, states.PENDING)
        relaxed = self.commits_alone() if alone is None else alone
        if not self._upsert([row], [*UPDATE_FIELDS, *CALLER_FIELDS], only_if_allowed=False,
                            relaxed=relaxed):
            self.bulk_create([row], update_conflicts=True, **self._on_task_id(),
                             update_fields=[*UPDATE_FIELDS, *CALLER_FIELDS])

    def commits_alone(self) -> bool:
        """Whether a row written now is its own transaction on PostgreSQL:
        autocommit, no ``atomic()`` block, and no transaction begun behind
        Django's back. There ``enqueued`` does not wait for the disk, and
        the enqueue door publishes while the row is written."""
        connection = connections[self.db]
        return (connection.vendor == "postgresql" and connection.get_autocommit()
                and not connection.in_atomic_block and _idle(connection))

    def enqueued_many(self, messages: list[Message]) -> None:
        """``enqueued`` for many messages at once (a group's members): one
        INSERT ... ON CONFLICT per 500 rows."""
        rows = [self.model.from_message(m, states.PENDING) for m in messages]
        self.bulk_create(rows, batch_size=500, update_conflicts=True, **self._on_task_id(),
                         update_fields=[*UPDATE_FIELDS, *CALLER_FIELDS])

    def enqueued_sql(self, messages: list[Message]) -> tuple[str, list[Any]]:
        """One statement that writes what ``enqueued_many(messages)`` writes, on
        PostgreSQL and SQLite (INSERT ... ON CONFLICT (task_id) DO UPDATE of every field), as
        SQL and its parameters, for the database broker to run in one
        statement with the messages (a CTE of its publish on PostgreSQL)."""
        rows = [self.model.from_message(m, states.PENDING) for m in messages]
        return self._upsert_sql(rows, [*UPDATE_FIELDS, *CALLER_FIELDS], only_if_allowed=False)

    def claim(self, messages: list[Message]) -> set[str]:
        """Write the PENDING rows of the ``messages`` that have no row yet;
        return their ids. A row that exists is left as it is, so the worker's
        follow-ups (links, a chain's next task, a chord's callback, whose ids
        were fixed when the workflow was applied) are enqueued once even if
        the task that sends them runs twice (docs/canvas.md). Each row is
        inserted on its own (a savepoint), so two workers claiming at once
        cannot both win."""
        from django.db import IntegrityError

        claimed = set()
        existing = set(self.filter(task_id__in=[m.id for m in messages])
                       .values_list("task_id", flat=True))
        for message in messages:
            if message.id in existing:
                continue
            try:
                with transaction.atomic(using=self.db):
                    self.model.from_message(message, states.PENDING).save(
                        using=self.db, force_insert=True)
            except IntegrityError:
                continue
            claimed.add(message.id)
        return claimed

    def write(self, rows: list[TaskResult]) -> None:
        """Store a worker's rows (a batch): each row is written only if
        ``states.may_follow`` allows it after the stored one (the last row of
        an id in ``rows`` stands for it); the others came too late and are
        dropped. On PostgreSQL and SQLite one conditional upsert (ON CONFLICT
        ... DO UPDATE ... WHERE); elsewhere the stored states are read and
        locked first, in one transaction. Raises ``DatabaseError``."""
        latest = list({row.task_id: row for row in rows}.values())
        if self._upsert(latest, UPDATE_FIELDS, only_if_allowed=True):
            return
        with transaction.atomic(using=self.db):
            stored = {
                task_id: (status, retries)
                for task_id, status, retries in self.select_for_update()
                .filter(task_id__in=[r.task_id for r in latest]).order_by("task_id")
                .values_list("task_id", "status", "retries")
            }
            allowed = [
                row for row in latest
                if row.task_id not in stored
                or states.may_follow(*stored[row.task_id], row.status, row.retries)
            ]
            self.bulk_create(allowed, update_conflicts=True, **self._on_task_id(),
                             update_fields=UPDATE_FIELDS)

    def _on_task_id(self) -> dict[str, list[str]]:
        """``bulk_create``'s conflict target: ``task_id``. MySQL and MariaDB
        take none (ON DUPLICATE KEY UPDATE is on any unique key; the only
        other is the primary key, which a new row never repeats)."""
        if connections[self.db].features.supports_update_conflicts_with_target:
            return {"unique_fields": ["task_id"]}
        return {}

    def _upsert(self, rows: list[TaskResult], update: list[str], *,
                only_if_allowed: bool, relaxed: bool = False) -> bool:
        """One INSERT ... ON CONFLICT (task_id) DO UPDATE of ``update``, with
        ``states.may_follow`` as its WHERE if ``only_if_allowed``; with
        ``relaxed`` (PostgreSQL, outside a transaction only) its commit does
        not wait for the disk. Returns
        False (and writes nothing) where the database has no such statement
        (MySQL, MariaDB). Plain SQL: bulk_create's own work was most of the
        cost of a PENDING row and of a result batch."""
        connection = connections[self.db]
        if connection.vendor not in ("postgresql", "sqlite") or not rows:
            return connection.vendor in ("postgresql", "sqlite")
        sql, params = self._upsert_sql(rows, update, only_if_allowed=only_if_allowed,
                                       relaxed=relaxed)
        with sql_cursor(self.db) as cursor:  # prepared on PostgreSQL
            cursor.execute(sql, params)
        return True

    def _upsert_sql(self, rows: list[TaskResult], update: list[str], *,
                    only_if_allowed: bool, relaxed: bool = False) -> tuple[str, list[Any]]:
        """``_upsert``'s statement: its SQL and parameters."""
        connection = connections[self.db]
        sql, prepare = _upsert_statement(self.model, connection, len(rows), tuple(update),
                                         only_if_allowed, relaxed)
        # Django wraps integer fields' values in psycopg's Int2/Int4, which
        # a cursor that binds on the server (djtasks.sql) sends in binary
        # cut to their width: as plain ints, psycopg types them by value, and
        # one out of range for its column is refused, as on Django's cursor.
        return sql, [int(v) if isinstance(v, int) and not isinstance(v, bool) else v
                     for v in (prep(getattr(row, attname), connection)
                               for row in rows for attname, prep in prepare)]

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
        return self.filter(status_in(states.preceding(status))).update(**fields)

    def reported(self, status: str, result: Any) -> int:
        """Move the rows of this QuerySet whose state may become ``status``
        to it with ``result`` (codec-encoded JSON) as their result: a task's
        ``update_state`` for another task id. Returns the number changed."""
        fields: dict[str, Any] = {"status": status, "result": result}
        if status in states.READY_STATES:
            fields["finished"] = timezone.now()
        return self.filter(status_in(states.preceding(status))).update(**fields)


# (model, vendor, rows, update fields, only_if_allowed) -> (SQL, per column
# (attname, get_db_prep_save)): the statement's text is the same on every
# call, and quoting it again was a third of a PENDING row's CPU.
_UPSERTS: dict[tuple[Any, ...], tuple[str, list[tuple[str, Any]]]] = {}


def _idle(connection: Any) -> bool:
    """Whether the driver has no transaction open (psycopg 3 and 2 both
    say 0, IDLE): one begun behind Django's back (a raw ``BEGIN``) would
    be the caller's, and a relaxed commit would be its commit."""
    info = getattr(connection.connection, "info", None)
    return info is not None and info.transaction_status == 0


def _upsert_statement(model: type[models.Model], connection: Any, n: int,
                      update: tuple[str, ...], only_if_allowed: bool, relaxed: bool = False
                      ) -> tuple[str, list[tuple[str, Any]]]:
    """``TaskResultQuerySet._upsert``'s statement for ``n`` rows, built once."""
    key = (model, connection.vendor, n, update, only_if_allowed, relaxed)
    if (found := _UPSERTS.get(key)) is not None:
        return found
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sets = ", ".join(f"{quote(meta.get_field(name).column)} = excluded."
                     f"{quote(meta.get_field(name).column)}" for name in update)
    if only_if_allowed:
        where = f" WHERE {states.may_follow_sql('t', 'excluded')}"
    else:
        # A PENDING write takes over a reused id's row, never a row the
        # worker already wrote for this very message (same created time):
        # on Redis the message may reach a worker before its PENDING row.
        status, created = (quote(meta.get_field(name).column) for name in ("status", "created"))
        where = (f" WHERE t.{status} = {states.PENDING!r} OR t.{created} IS NULL"
                 f" OR t.{created} <> excluded.{created}")
    sql = (f"INSERT INTO {quote(meta.db_table)} AS t ({columns}) VALUES "
           f"{', '.join([one] * n)} ON CONFLICT ({quote('task_id')}) DO UPDATE SET "
           f"{sets}{where}")
    if relaxed:
        # set_config(..., true) holds for this statement's own transaction;
        # an unreferenced CTE would not run, so RETURNING reads it (a row
        # left alone by the WHERE returns nothing, and that rare commit
        # waits for the disk).
        assert connection.vendor == "postgresql" and not only_if_allowed
        sql = (f"WITH relaxed AS MATERIALIZED (SELECT set_config('synchronous_commit', "
               f"'off', true) AS off) {sql} RETURNING (SELECT off FROM relaxed)")
    built = (sql, [(f.attname, f.get_db_prep_save) for f in fields])
    if len(_UPSERTS) < 256:  # result batches vary in size: keep the common ones
        _UPSERTS[key] = built
    return built


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
    # Wide enough for a custom state (``update_state``), which is not among the choices.
    status = models.CharField(
        max_length=64, choices=states.CHOICES, default=states.PENDING, db_index=True
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
    # The workflow a task belongs to (Celery's names): the task that sent it,
    # the first task of its workflow (itself when it has no parent), and the
    # group or chord it is a member of.
    parent_id = models.CharField(max_length=255, blank=True, db_index=True)
    root_id = models.CharField(max_length=255, blank=True, db_index=True)
    group_id = models.CharField(max_length=255, blank=True, db_index=True)

    objects = TaskResultQuerySet.as_manager()

    class Meta:
        verbose_name = "task result"
        ordering = ["-created"]
        # The admin's actions (docs/admin.md); terminate comes with revoke, as
        # in Celery, where it is revoke(terminate=True).
        permissions = [
            ("rerun_taskresult", "Can run a task again"),
            ("revoke_taskresult", "Can revoke or terminate a task"),
        ]
        indexes = [
            models.Index(fields=["status", "created"], name="djtasks_status_created"),
            models.Index(fields=["worker", "status"], name="djtasks_worker_status"),
            # The admin dashboard's last hour (per minute, and its failures):
            # without it, a scan of the table (230 ms at a million rows).
            models.Index(fields=["finished", "status"], name="djtasks_finished_status"),
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
            parent_id=message.parent_id or "",
            root_id=message.root_id or message.id,
            group_id=message.options.get("group_id") or "",
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


class Dashboard(models.Model):
    """The admin's dashboard page, ``admin/djtasks/dashboard/`` (see
    ``admin_dashboard``). No table: it reads the broker and indexed queries
    on ``TaskResult``; who may view task results may view it."""

    class Meta:
        managed = False
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"
        default_permissions = ()

    def __str__(self) -> str:
        return "dashboard"


# The database broker's and beat's tables live beside them; imported so migrations see them.
from .beat.models import PeriodicTask, ScheduleState  # noqa: E402,F401
from .brokers.tables import (  # noqa: E402,F401
    BrokerConsumer,
    ChordMember,
    ChordState,
    Duty,
    QueuedMessage,
    RateBucket,
    Revocation,
    StartedTask,
    StoredDeadLetter,
    WorkerRecord,
)
