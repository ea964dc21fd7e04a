"""The ``TaskResult`` change list at a million rows: filters whose choices
come from index probes, a search that uses the task id's index, and a
paginator that counts no further than it shows (docs/admin.md, "Timings").
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import django
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest

from .models import TaskResult

# A filter lists at most this many values; the change list counts at most
# this many rows (the pagination says "more than" beyond it).
MAX_CHOICES = 100
COUNT_LIMIT = 1_000
# The breadcrumbs of djtasks' own admin pages follow the running Django's
# markup (admin/djtasks/breadcrumbs.html): an <ol> from 6.0 on.
BREADCRUMBS_OL = django.VERSION >= (6, 0)


def distinct_values(column: str, limit: int = MAX_CHOICES) -> list[str]:
    """Up to ``limit`` distinct non-empty values of a ``TaskResult`` column,
    in order, read through its index: a loose index scan (one index probe per
    value, a recursive CTE on PostgreSQL and SQLite; MySQL and MariaDB do it
    themselves for DISTINCT), never a scan of the table. ``column`` is one of
    the model's indexed fields, never user input."""
    alias = router.db_for_read(TaskResult)
    connection = connections[alias]
    if connection.vendor in ("mysql",):
        rows = (TaskResult.objects.using(alias).exclude(**{column: ""})
                .order_by(column).values_list(column, flat=True).distinct()[:limit])
        return list(rows)
    quote = connection.ops.quote_name
    table, col = quote(TaskResult._meta.db_table), quote(TaskResult._meta.get_field(column).column)
    sql = (f"WITH RECURSIVE v(x) AS (SELECT MIN({col}) FROM {table} WHERE {col} > %s "
           f"UNION ALL SELECT (SELECT MIN({col}) FROM {table} WHERE {col} > v.x) FROM v "
           f"WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, ["", limit])
        return [row[0] for row in cursor.fetchall()]


class IndexedValueFilter(admin.SimpleListFilter):
    """Filter on one indexed column, its choices read by ``distinct_values``."""

    column = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = distinct_values(self.column)
        if self.value() and self.value() not in values:
            values.append(self.value())
        return [(v, v) for v in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(**{self.column: self.value()}) if self.value() else queryset


class TaskNameFilter(IndexedValueFilter):
    title = "task name"
    parameter_name = "task_name"
    column = "task_name"


class QueueFilter(IndexedValueFilter):
    title = "queue"
    parameter_name = "queue"
    column = "queue"


class WorkerFilter(admin.SimpleListFilter):
    """Filter by worker: a host name (every executor on it) or one executor's
    name, typed in; executor names (``host.pid/slot.generation``) are too
    many to list."""

    title = "worker"
    parameter_name = "worker"
    template = "admin/djtasks/taskresult/text_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("", "")]  # a SimpleListFilter with no lookups is not shown at all

    def choices(self, changelist: Any) -> Any:
        # One "choice": what the template's form needs to keep the other filters.
        others = {k: v for k, v in changelist.params.items()
                  if k not in (self.parameter_name, "p", "e")}
        yield {"value": self.value() or "", "parameter_name": self.parameter_name,
               "others": [(k, v) for k, vs in others.items()
                          for v in (vs if isinstance(vs, list) else [vs])]}

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        return queryset.filter(Q(worker=value) | Q(worker__startswith=f"{value}."))


def search(queryset: QuerySet[TaskResult], term: str) -> QuerySet[TaskResult]:
    """Rows whose task id starts with ``term`` (the short id the list shows),
    if any task id does: one probe of the id's index, so an id is found at
    once at any table size. Otherwise rows whose task name or arguments'
    JSON text contain ``term`` (case-insensitive), which reads every row the
    other filters leave (docs/admin.md, "Timings")."""
    by_id = queryset.filter(task_id__startswith=term)
    if TaskResult.objects.filter(task_id__startswith=term).only("pk")[:1]:
        return by_id
    text = Cast("args", TextField()), Cast("kwargs", TextField())
    return queryset.annotate(_args_text=text[0], _kwargs_text=text[1]).filter(
        Q(task_name__icontains=term) | Q(_args_text__icontains=term)
        | Q(_kwargs_text__icontains=term)
    )


class BoundedPaginator(Paginator):
    """Counts at most ``COUNT_LIMIT + 1`` rows (``SELECT COUNT(*) FROM (...
    LIMIT n)``, unordered, so an index-only scan answers it), so no page of
    the change list counts the whole table. ``bounded`` says the true count
    is higher."""

    @cached_property
    def count(self) -> int:
        return int(self.object_list.order_by()[:COUNT_LIMIT + 1].count())

    @property
    def bounded(self) -> bool:
        return self.count > COUNT_LIMIT
