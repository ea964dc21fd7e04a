"""The admin's view of a workflow: a tree from its root task, each member's
state, and each group's or chord's progress ("712 of 1,000 done").

``WorkflowAdminMixin`` adds it to ``TaskResultAdmin``: a "Workflow"
fieldset on a task's page, and the page ``<task id>/workflow/``. The tree
is read from the rows' ``root_id``, ``parent_id`` and ``group_id``
(docs/canvas.md); a group lists its first ``GROUP_MEMBERS_SHOWN`` members.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from . import states
from .models import TaskResult

GROUP_MEMBERS_SHOWN = 50
MAX_ROWS = 20000  # rows of one workflow read for the tree, at most


@dataclass
class Progress:
    """A group's members by state: ``done`` of ``total`` are ready."""

    total: int
    by_state: dict[str, int]

    @property
    def done(self) -> int:
        return sum(n for s, n in self.by_state.items() if s in states.READY_STATES)

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 100

    def __str__(self) -> str:
        return f"{self.done:,} of {self.total:,} done"


def group_progress(group_id: str) -> Progress:
    """How far the group (or chord header) ``group_id`` has got, from its rows."""
    counts = dict(_status_counts(group_id))
    return Progress(sum(counts.values()), counts)


def _status_counts(group_id: str) -> list[tuple[str, int]]:
    from django.db.models import Count

    return list(TaskResult.objects.filter(group_id=group_id).order_by().values("status")
                .annotate(n=Count("id")).values_list("status", "n"))


@dataclass
class Node:
    """One line of the tree: a task row, or a group of rows."""

    kind: str  # "task" or "group"
    id: str
    depth: int = 0
    row: TaskResult | None = None
    progress: Progress | None = None
    hidden: int = 0  # a group's members not listed
    children: list[Node] = field(default_factory=list)

    @property
    def colour(self) -> str:
        from .admin import STATUS_COLOURS

        return STATUS_COLOURS.get(self.row.status, "#000") if self.row else "#000"

    @property
    def indent(self) -> float:
        return 1.5 * self.depth  # em


def workflow_tree(root_id: str) -> tuple[list[Node], bool]:
    """The tree of workflow ``root_id``, flattened depth first (each node's
    ``depth`` set), and whether it was cut at ``MAX_ROWS`` rows."""
    rows = list(TaskResult.objects.filter(root_id=root_id).order_by("created", "pk")
                .only("task_id", "task_name", "status", "parent_id", "group_id", "options",
                      "created", "started", "finished")[:MAX_ROWS + 1])
    cut = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    by_parent: dict[str, list[TaskResult]] = defaultdict(list)
    groups: dict[str, list[TaskResult]] = defaultdict(list)
    ids = {r.task_id for r in rows}
    for r in rows:
        if r.group_id:
            groups[r.group_id].append(r)
        else:
            by_parent[r.parent_id if r.parent_id in ids or r.parent_id in groups
                      else ""].append(r)
    # A group hangs under its members' parent (a chain's task before it).
    group_parent = {g: (members[0].parent_id if members[0].parent_id in ids else "")
                    for g, members in groups.items()}

    def task_node(row: TaskResult) -> Node:
        node = Node("task", row.task_id, row=row)
        node.children = [task_node(c) for c in by_parent.get(row.task_id, [])]
        node.children += [group_node(g) for g, p in group_parent.items() if p == row.task_id]
        return node

    def group_node(gid: str) -> Node:
        members = sorted(groups[gid], key=lambda r: (r.options or {}).get("group_index", 0))
        node = Node("group", gid, progress=group_progress(gid),
                    hidden=max(len(members) - GROUP_MEMBERS_SHOWN, 0))
        node.children = [task_node(m) for m in members[:GROUP_MEMBERS_SHOWN]]
        node.children += [task_node(c) for c in by_parent.get(gid, [])]  # a chord's callback
        return node

    top = [task_node(r) for r in by_parent.get("", [])]
    top += [group_node(g) for g, p in group_parent.items() if p == ""]
    flat: list[Node] = []

    def walk(node: Node, depth: int) -> None:
        node.depth = depth
        flat.append(node)
        for child in node.children:
            walk(child, depth + 1)

    for node in top:
        walk(node, 0)
    return flat, cut


class WorkflowAdminMixin:
    """For ``TaskResultAdmin``: the workflow page and a fieldset linking to it."""

    workflow_template = "admin/djtasks/taskresult/workflow.html"

    def get_urls(self) -> list[Any]:
        urls = super().get_urls()  # type: ignore[misc]
        view = self.admin_site.admin_view(self.workflow_view)  # type: ignore[attr-defined]
        return [path("<path:object_id>/workflow/", view,
                     name="djtasks_taskresult_workflow"), *urls]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if obj is not None:
            fieldsets.append(("Workflow", {"fields": ("workflow_summary",)}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return (*fields, "workflow_summary")

    def workflow_summary(self, obj: TaskResult) -> str:
        url = reverse("admin:djtasks_taskresult_workflow", args=[obj.pk])
        parts = [format_html('<a href="{}">the workflow from root task {}</a>', url,
                             obj.root_id or obj.task_id)]
        if obj.parent_id:
            parts.append(format_html("parent {}", obj.parent_id))
        if obj.group_id:
            parts.append(format_html("group {}: {}", obj.group_id, group_progress(obj.group_id)))
        return format_html(" · ".join(["{}"] * len(parts)), *parts)

    workflow_summary.short_description = "workflow"  # type: ignore[attr-defined]

    def workflow_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_view_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        row = TaskResult.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        if row is None:
            row = TaskResult.objects.filter(task_id=object_id).first()
        if row is None:
            raise Http404(f"no task {object_id}")
        nodes, cut = workflow_tree(row.root_id or row.task_id)
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "opts": TaskResult._meta, "title": f"Workflow of {row.task_name}",
            "task": row, "nodes": nodes, "cut": cut, "max_rows": MAX_ROWS,
        }
        return TemplateResponse(request, self.workflow_template, context)

