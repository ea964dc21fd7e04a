"""The periodic-task admin: the database's schedules, editable, and the code's
(``BEAT_SCHEDULE``, housekeeping) read-only in the same list; the next five
runs in each schedule's own zone; enable, disable and run-now actions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from ..conf import get_settings
from ..models import TaskResult
from .entries import Entry, code_entries
from .models import PeriodicTask, ScheduleState
from .schedules import clocked, crontab, schedule

logger = logging.getLogger("djtasks.beat")


def mirror_fields(entry: Entry) -> dict[str, Any]:
    """A code schedule as ``PeriodicTask`` fields, for the read-only mirror row."""
    fields: dict[str, Any] = {
        "task": entry.task, "args": entry.args, "kwargs": entry.kwargs, "missed": entry.missed,
        "queue": entry.options.get("queue") or "", "priority": entry.options.get("priority"),
        "expires": entry.options.get("expires") if isinstance(
            entry.options.get("expires"), int) else None,
        "enabled": True, "every": None, "clocked_at": None, "timezone": "",
        "minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*",
        "month_of_year": "*", "description": "from DJTASKS['BEAT_SCHEDULE'] (read-only here)",
    }
    when = entry.schedule
    if isinstance(when, crontab):
        fields.update(kind="crontab", timezone=when.timezone or "",
                      **{k: str(when.raw[k]) if not isinstance(when.raw[k], list | tuple | set)
                         else ",".join(map(str, sorted(when.raw[k]))) for k in when.raw})
    elif isinstance(when, schedule):
        fields.update(kind="interval", every=when.run_every)
    elif isinstance(when, clocked):
        fields.update(kind="clocked", clocked_at=when.at)
    return fields


def sync_code_schedules() -> None:
    """Make the ``source="code"`` rows match the code's schedules (the
    runner reads code schedules from settings, never from these rows)."""
    entries = code_entries(get_settings().BEAT_SCHEDULE)
    for entry in entries:
        try:
            with transaction.atomic():
                PeriodicTask.objects.update_or_create(
                    name=entry.name, source="code", defaults=mirror_fields(entry))
        except IntegrityError:  # an admin row has that name; E010-style clash shown there
            logger.warning("periodic task %r in the database has the name of a schedule in "
                           "code; rename it", entry.name)
    PeriodicTask.objects.filter(source="code").exclude(
        name__in=[e.name for e in entries]).delete()


def publish_now(row: PeriodicTask) -> str:
    """Send ``row``'s task now, outside its schedule (``scheduled_for`` is
    now); return the task id. Raises what ``apply_async`` raises."""
    from ..enqueue import enqueue
    from ..registry import registry
    from .runner import message_for

    entry = row.entry() if row.source == "admin" else next(
        e for e in code_entries(get_settings().BEAT_SCHEDULE) if e.name == row.name)
    task = registry.get(entry.task)
    message = message_for(entry, task, str(uuid.uuid4()), timezone.now())
    enqueue(task, message, on_commit=True, using=None)
    return message.id


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "task", "when", "enabled", "next_run", "last_run",
                    "total_runs")
    list_filter = ("source", "enabled", "kind")
    search_fields = ("name", "task", "description")
    actions = ["enable", "disable", "run_now"]
    readonly_fields = ("next_runs", "run_record", "changed")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        ("Schedule", {"fields": ("kind", "every", ("minute", "hour", "day_of_week",
                                                   "day_of_month", "month_of_year"),
                                 "timezone", "clocked_at", "missed", "next_runs")}),
        ("Arguments and options", {"fields": ("args", "kwargs", "queue", "priority",
                                              "expires")}),
        ("Runs", {"fields": ("run_record", "changed")}),
    )

    def changelist_view(self, request: HttpRequest,
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        sync_code_schedules()  # so schedules in code show here even before a runner ran
        return super().changelist_view(request, extra_context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.source == "code":
            return False  # change it in settings.py
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.source == "code":
            return False
        return super().has_delete_permission(request, obj)

    # -- columns -------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[PeriodicTask]:
        state = ScheduleState.objects.filter(name=OuterRef("name"))
        return super().get_queryset(request).annotate(
            last_run_at=Subquery(state.values("last_run_at")[:1]),
            run_count=Subquery(state.values("total_runs")[:1]),
        )

    @admin.display(description="schedule")
    def when(self, obj: PeriodicTask) -> str:
        try:
            return obj.get_schedule().describe()
        except Exception as exc:
            return f"invalid: {exc}"

    def _upcoming(self, obj: PeriodicTask, count: int,
                  form: str = "%a %Y-%m-%d %H:%M:%S %Z") -> list[str]:
        when = obj.get_schedule()
        zone = when.zone
        return [t.astimezone(zone).strftime(form) for t in when.next_runs(timezone.now(), count)]

    @admin.display(description="next run")
    def next_run(self, obj: PeriodicTask) -> str:
        if not obj.enabled:
            return "disabled"
        try:
            upcoming = self._upcoming(obj, 1, "%Y-%m-%d %H:%M %Z")
        except Exception as exc:
            return f"invalid: {exc}"
        return upcoming[0] if upcoming else "never again"

    @admin.display(description="next five runs (in the schedule's zone)")
    def next_runs(self, obj: PeriodicTask) -> str:
        if obj.pk is None:
            return "save to see the next runs"
        try:
            upcoming = self._upcoming(obj, 5)
        except Exception as exc:
            return f"invalid: {exc}"
        if not upcoming:
            return "no more runs"
        return format_html("<ol class='djtasks-next-runs'>{}</ol>",
                           format_html_join("", "<li>{}</li>", ((t,) for t in upcoming)))

    @admin.display(description="last run", ordering="last_run_at")
    def last_run(self, obj: PeriodicTask) -> str:
        when = getattr(obj, "last_run_at", None)
        if when is None:
            return "-"
        return f"{when.astimezone(timezone.get_current_timezone()):%Y-%m-%d %H:%M:%S}"

    @admin.display(description="total runs", ordering="run_count")
    def total_runs(self, obj: PeriodicTask) -> int:
        return getattr(obj, "run_count", None) or 0

    @admin.display(description="runs")
    def run_record(self, obj: PeriodicTask) -> str:
        state = obj.state() if obj.pk else None
        if state is None or not state.last_task_id:
            return "not run yet"
        row = TaskResult.objects.filter(task_id=state.last_task_id).first()
        result = "its result has expired" if row is None else format_html(
            '<a href="{}">{}</a>', reverse("admin:djtasks_taskresult_change", args=[row.pk]),
            f"{row.status}: {state.last_task_id}")
        return format_html("{} run(s); the last for the tick {} ({})", state.total_runs,
                           f"{state.last_tick:%Y-%m-%d %H:%M:%S %Z}", result)

    # -- actions -------------------------------------------------------------

    def _switch(self, request: HttpRequest, queryset: QuerySet[PeriodicTask], on: bool) -> None:
        code = queryset.filter(source="code").count()
        changed = queryset.filter(source="admin").update(enabled=on)
        self.message_user(request, f"{'enabled' if on else 'disabled'} {changed} periodic "
                                   f"task(s); runners see it within "
                                   f"{get_settings().BEAT_SYNC_INTERVAL:g}s")
        if code:
            self.message_user(request, f"{code} schedule(s) from code left alone: turn one "
                                       "off with None in DJTASKS['BEAT_SCHEDULE']",
                              messages.WARNING)

    @admin.action(description="Enable selected periodic tasks")
    def enable(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Disable selected periodic tasks")
    def disable(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._switch(request, queryset, False)

    @admin.action(description="Run selected periodic tasks now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        sent = []
        for row in queryset:
            try:
                sent.append(f"{row.name} ({publish_now(row)})")
            except Exception as exc:
                self.message_user(request, f"could not run {row.name}: {exc}", messages.ERROR)
        if sent:
            self.message_user(request, f"sent {len(sent)} task(s): {', '.join(sent)}")
