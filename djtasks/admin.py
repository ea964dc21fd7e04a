"""A read-only admin for ``TaskResult``: every task, whatever its state."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import states
from .admin_workflow import WorkflowAdminMixin
from .models import DeadLetter, TaskResult

STATUS_COLOURS = {
    states.PENDING: "#777",
    states.STARTED: "#1f6fb2",
    states.RETRY: "#c77c02",
    states.SUCCESS: "#2e7d32",
    states.FAILURE: "#c62828",
    states.REVOKED: "#6a1b9a",
}


class TaskNameFilter(admin.SimpleListFilter):
    """Filter by task name, listing the names present in the table."""

    title = "task name"
    parameter_name = "task_name"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = TaskResult.objects.order_by("task_name").values_list("task_name", flat=True)
        return [(n, n) for n in names.distinct()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(task_name=self.value()) if self.value() else queryset


class QueueFilter(TaskNameFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = TaskResult.objects.order_by("queue").values_list("queue", flat=True)
        return [(n, n) for n in names.distinct()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(queue=self.value()) if self.value() else queryset


def _pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


@admin.register(TaskResult)
class TaskResultAdmin(WorkflowAdminMixin, admin.ModelAdmin):
    list_display = ("task_id", "task_name", "status_badge", "queue", "worker", "created",
                    "run_time")
    list_filter = ("status", TaskNameFilter, QueueFilter, "created")
    search_fields = ("task_id", "task_name")
    date_hierarchy = "created"
    list_per_page = 50
    show_full_result_count = False  # COUNT(*) on a large table is slow
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "status_badge", "queue", "priority",
                           "worker", "retries")}),
        ("Arguments", {"fields": ("args_json", "kwargs_json")}),
        ("Outcome", {"fields": ("result_json", "exception_type", "exception_message",
                                "traceback_text")}),
        ("Times", {"fields": ("created", "eta", "expires", "started", "finished",
                              "run_time")}),
    )
    readonly_fields = ("task_id", "task_name", "status_badge", "queue", "priority", "worker",
                       "retries", "args_json", "kwargs_json", "result_json", "exception_type",
                       "exception_message", "traceback_text", "created", "eta", "expires",
                       "started", "finished", "run_time")

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: TaskResult) -> str:
        return format_html('<strong style="color: {}">{}</strong>',
                           STATUS_COLOURS.get(obj.status, "#000"), obj.status)

    @admin.display(description="run time")
    def run_time(self, obj: TaskResult) -> str:
        runtime = obj.runtime
        return "-" if runtime is None else f"{runtime.total_seconds():.3f} s"

    @admin.display(description="args")
    def args_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.kwargs)

    @admin.display(description="result")
    def result_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.result)

    @admin.display(description="traceback")
    def traceback_text(self, obj: TaskResult) -> str:
        if not obj.traceback:
            return "-"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
                           obj.traceback)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Lists the broker's dead letters, with requeue and discard."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        from datetime import UTC, datetime

        from django.contrib import messages
        from django.core.exceptions import PermissionDenied
        from django.shortcuts import redirect
        from django.template.response import TemplateResponse

        from .brokers import get_broker
        from .exceptions import BrokerError

        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        broker = get_broker()
        if request.method == "POST":
            action, ids = request.POST.get("action"), request.POST.getlist("ids")
            allowed = (self.has_change_permission(request) if action == "requeue"
                       else self.has_delete_permission(request))
            if action not in ("requeue", "discard") or not allowed:
                raise PermissionDenied
            op = broker.requeue_dead_letter if action == "requeue" else broker.delete_dead_letter
            done = sum(1 for i in ids if op(i))
            verb = "requeued" if action == "requeue" else "discarded"
            messages.success(request, f"{verb} {done} dead letter(s)")
            return redirect(request.path)
        error, letters = "", []
        try:
            letters = [
                {"id": d.id, "queue": d.queue, "reason": d.reason,
                 "when": datetime.fromtimestamp(d.time, UTC),
                 "text": d.body.decode(errors="replace")}
                for d in broker.dead_letters()
            ]
        except BrokerError as exc:
            error = str(exc)
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "title": "Dead letters", "letters": letters, "error": error,
            "can_change": self.has_change_permission(request),
            "can_delete": self.has_delete_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/djtasks/deadletter/change_list.html", context)
from .beat import admin as beat_admin  # noqa: E402,F401 - the periodic-task admin
