"""The admin of the task system: ``TaskResult`` rows, whatever their state,
with actions (run again, revoke, terminate) and the broker's dead letters
(docs/admin.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import ShowFacets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from . import admin_actions, admin_dashboard, states
from .admin_changelist import (
    BREADCRUMBS_OL,
    BoundedPaginator,
    QueueFilter,
    TaskNameFilter,
    WorkerFilter,
    search,
)
from .admin_workflow import WorkflowAdminMixin
from .models import Dashboard, DeadLetter, TaskResult

STATUS_COLOURS = {
    states.PENDING: "#777",
    states.STARTED: "#1f6fb2",
    states.RETRY: "#c77c02",
    states.SUCCESS: "#2e7d32",
    states.FAILURE: "#c62828",
    states.REVOKED: "#6a1b9a",
}


def _pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


def _seconds(value: Any) -> str:
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def _change_link(task_id: str, text: str | None = None) -> str:
    pk = TaskResult.objects.filter(task_id=task_id).values_list("pk", flat=True).first()
    if pk is None:
        return format_html("<code>{}</code> (no row)", task_id)
    return format_html('<a href="{}"><code>{}</code></a>',
                       reverse("admin:djtasks_taskresult_change", args=[pk]), text or task_id)


@admin.register(TaskResult)
class TaskResultAdmin(WorkflowAdminMixin, admin.ModelAdmin):
    """Every task's row; read-only, acted on through ``admin_actions``."""

    # Fits a 1400-pixel screen beside the navigation and the filters; the
    # finish time and the full id are on the change page.
    list_display = ("short_id", "task_name_list", "status_badge", "queue", "worker_list",
                    "created_list", "run_time", "retries")
    list_display_links = ("short_id",)
    list_filter = ("status", TaskNameFilter, QueueFilter, WorkerFilter, "created")
    search_fields = ("task_id",)  # shows the search box; ``get_search_results`` searches
    search_help_text = "A task id or its first characters, a task name, or argument text."
    list_per_page = 50
    # No COUNT(*) of the whole table, nor of a filtered one beyond COUNT_LIMIT.
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    paginator = BoundedPaginator
    actions = admin_actions.ACTIONS
    fieldsets = (
        (None, {"fields": ("task_id", "task_name", "status_badge", "queue", "priority",
                           "worker", "retries")}),
        ("Arguments", {"fields": ("args_json", "kwargs_json", "options_json")}),
        ("Outcome", {"fields": ("result_json", "exception_type", "exception_message",
                                "traceback_text")}),
        ("Times", {"fields": ("created_s", "eta", "expires", "started_s", "finished_s",
                              "run_time")}),
        ("Workflow", {"fields": ("parent_link", "children_links", "root_id", "group_id")}),
    )
    readonly_fields = ("task_id", "task_name", "status_badge", "queue", "priority", "worker",
                       "retries", "args_json", "kwargs_json", "options_json", "result_json",
                       "exception_type", "exception_message", "traceback_text", "created_s",
                       "eta", "expires", "started_s", "finished_s", "run_time", "parent_link",
                       "children_links", "root_id", "group_id")

    @admin.display(description="id", ordering="task_id")
    def short_id(self, obj: TaskResult) -> str:
        return format_html('<code title="{}">{}</code>', obj.task_id, obj.task_id[:8])

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: TaskResult) -> str:
        colour = STATUS_COLOURS.get(obj.status, "#1f6fb2")
        if obj.status in states.ALL_STATES or not isinstance(obj.result, dict):
            return format_html('<strong style="color: {}">{}</strong>', colour, obj.status)
        # A custom state (PROGRESS, from update_state): its meta is the progress.
        meta = ", ".join(f"{k}: {v}" for k, v in list(obj.result.items())[:3])
        return format_html('<strong style="color: {}">{}</strong> <small>{}</small>',
                           colour, obj.status, meta[:60])

    @admin.display(description="task name", ordering="task_name")
    def task_name_list(self, obj: TaskResult) -> str:
        # A long dotted name may break after a dot, and nowhere else.
        return format_html_join(mark_safe(".<wbr>"), "{}", ((p,) for p in obj.task_name.split(".")))

    @admin.display(description="worker", ordering="worker")
    def worker_list(self, obj: TaskResult) -> str:
        # host.pid; the executor's slot and generation are in the title.
        return format_html('<span title="{}">{}</span>', obj.worker,
                           obj.worker.split("/", 1)[0] or "-")

    @admin.display(description="created", ordering="created")
    def created_list(self, obj: TaskResult) -> str:
        full = _seconds(obj.created)
        return format_html('<span title="{}">{}</span>', full, full[5:])

    @admin.display(description="created", ordering="created")
    def created_s(self, obj: TaskResult) -> str:
        return _seconds(obj.created)

    @admin.display(description="started", ordering="started")
    def started_s(self, obj: TaskResult) -> str:
        return _seconds(obj.started)

    @admin.display(description="finished", ordering="finished")
    def finished_s(self, obj: TaskResult) -> str:
        return _seconds(obj.finished)

    @admin.display(description="run time")
    def run_time(self, obj: TaskResult) -> str:
        runtime = obj.runtime
        return "-" if runtime is None else f"{runtime.total_seconds():.3f} s"

    @admin.display(description="parent (the task that sent it, or that it runs again)")
    def parent_link(self, obj: TaskResult) -> str:
        return _change_link(obj.parent_id) if obj.parent_id else "-"

    @admin.display(description="children (tasks it sent, and its reruns)")
    def children_links(self, obj: TaskResult) -> str:
        children = list(TaskResult.objects.filter(parent_id=obj.task_id)
                        .order_by("created").values_list("pk", "task_id", "task_name")[:50])
        if not children:
            return "-"
        return format_html_join(
            mark_safe("<br>"), '<a href="{}"><code>{}</code></a> {}',
            ((reverse("admin:djtasks_taskresult_change", args=[pk]), task_id, name)
             for pk, task_id, name in children))

    @admin.display(description="args")
    def args_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.kwargs)

    @admin.display(description="options")
    def options_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.options)

    @admin.display(description="result")
    def result_json(self, obj: TaskResult) -> str:
        return _pretty_json(obj.result)

    @admin.display(description="traceback")
    def traceback_text(self, obj: TaskResult) -> str:
        if not obj.traceback:
            return "-"
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
                           obj.traceback)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        return (search(queryset, term) if term else queryset), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_rerun_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("djtasks.rerun_taskresult")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("djtasks.revoke_taskresult")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Lists the broker's dead letters, with requeue and discard; one
    letter's page shows its whole raw message and the reason."""

    def get_urls(self) -> list[Any]:
        from django.urls import path

        # No table behind the model: the list, and one letter by its id.
        view = self.admin_site.admin_view
        return [path("", view(self.changelist_view), name="djtasks_deadletter_changelist"),
                path("<path:letter_id>/", view(self.letter_view), name="djtasks_deadletter_letter")]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def letter_view(self, request: HttpRequest, letter_id: str) -> Any:
        from django.core.exceptions import PermissionDenied
        from django.http import Http404
        from django.template.response import TemplateResponse

        from .brokers import get_broker

        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        letter = next((d for d in get_broker().dead_letters() if d.id == letter_id), None)
        if letter is None:
            raise Http404(f"no dead letter {letter_id!r}: requeued or discarded already?")
        text = letter.body.decode(errors="replace")
        try:  # a signed envelope: its JSON, before the colon and signature, if it reads
            text = json.dumps(json.loads(text.rpartition(":")[0] or text), indent=2,
                              ensure_ascii=False)
        except ValueError:
            pass
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta,
            "breadcrumbs_ol": BREADCRUMBS_OL,
            "title": f"Dead letter {letter.id}", "letter": letter, "text": text,
            "raw": letter.body.decode(errors="replace"),
            "when": datetime.fromtimestamp(letter.time, timezone.get_current_timezone()),
            "can_change": self.has_change_permission(request),
            "can_delete": self.has_delete_permission(request),
        }
        return TemplateResponse(request, "admin/djtasks/deadletter/letter.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        from datetime import UTC

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
            "breadcrumbs_ol": BREADCRUMBS_OL,
            "title": "Dead letters", "letters": letters, "error": error,
            "can_change": self.has_change_permission(request),
            "can_delete": self.has_delete_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/djtasks/deadletter/change_list.html", context)


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """``admin/djtasks/dashboard/``: queues, workers and the last hour, for
    anyone who may view task results. The page fetches its live part
    (``?live=1``) again every ``REFRESH_SECONDS``."""

    def get_urls(self) -> list[Any]:
        from django.urls import path

        # Only the page itself: there are no dashboard objects to change.
        return [path("", self.admin_site.admin_view(self.changelist_view),
                     name="djtasks_dashboard_changelist")]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("djtasks.view_taskresult")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        from django.core.exceptions import PermissionDenied
        from django.template.response import TemplateResponse

        if not self.has_view_permission(request):
            raise PermissionDenied
        live = admin_dashboard.context()
        if request.GET.get("live"):
            return TemplateResponse(request, "admin/djtasks/dashboard/live.html", live)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta,
                   "breadcrumbs_ol": BREADCRUMBS_OL, "title": "Task dashboard", **live,
                   **(extra_context or {})}
        return TemplateResponse(request, "admin/djtasks/dashboard/dashboard.html", context)


from .beat import admin as beat_admin  # noqa: E402,F401 - the periodic-task admin
