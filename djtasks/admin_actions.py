"""The ``TaskResult`` admin's actions: run again, revoke, terminate (docs/admin.md).

Each is a bulk admin action with a confirmation page that lists, row by
row, what will happen (Django's ``delete_selected`` pattern). Nothing here
writes a row by hand: a rerun goes through the enqueue door, a revoke
through ``djtasks.revoke``, which moves rows with ``TaskResultQuerySet``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from . import codec, states
from .admin_changelist import BREADCRUMBS_OL
from .exceptions import NotRegistered
from .models import TaskResult
from .options import MESSAGE_OPTIONS
from .registry import registry
from .result import AsyncResult, EagerResult, revoke

# Rows one confirmation page lists at most; a larger selection ("select all
# N") is refused, so the page and the action stay bounded at any table size.
MAX_SELECTED = 500


def run_again(row: TaskResult) -> AsyncResult | EagerResult:
    """Enqueue a new task with ``row``'s name, arguments, queue, priority and
    per-call options (time limits), through the enqueue door.

    The new task's ``parent_id`` is ``row.task_id`` (its ``root_id`` is
    ``row``'s root), which links the two rows both ways. It runs now: the
    original's eta and expiry are not copied. Raises ``NotRegistered`` if no
    task of that name is registered in this process, ``TaskArgumentError``
    if the stored arguments cannot travel any more.
    """
    from . import enqueue

    task = registry.get(row.task_name)
    options = {k: v for k, v in row.options.items() if k in MESSAGE_OPTIONS}
    message = task.build_message(codec.decode(row.args), codec.decode(row.kwargs),
                                 queue=row.queue, priority=row.priority, **options)
    message = replace(message, parent_id=row.task_id, root_id=row.root_id or row.task_id)
    return enqueue.enqueue(task, message, on_commit=None, using=None)


@dataclass(slots=True)
class Step:
    """What an action will do to one selected row; ``skip`` says why it will not."""

    row: TaskResult
    what: str
    skip: str = ""


def _call(row: TaskResult) -> str:
    args = ", ".join([*(repr(a) for a in codec.decode(row.args)),
                      *(f"{k}={v!r}" for k, v in codec.decode(row.kwargs).items())])
    return f"{row.task_name}({args[:120]}{'...' if len(args) > 120 else ''})"


def _plan_rerun(row: TaskResult) -> Step:
    try:
        registry.get(row.task_name)
    except NotRegistered:
        return Step(row, "", f"no task {row.task_name} is registered in this process")
    return Step(row, f"a new task {_call(row)} on queue {row.queue!r}, linked to this one")


def _plan_revoke(row: TaskResult) -> Step:
    if row.status in (states.PENDING, states.RETRY):
        return Step(row, "revoked: it never starts, on any worker; its row becomes REVOKED")
    reason = "it is running: terminate it instead" if row.status == states.STARTED else (
        f"it has finished ({row.status})")
    return Step(row, "", reason)


def _plan_terminate(row: TaskResult) -> Step:
    if row.status == states.STARTED:
        return Step(row, f"killed on {row.worker or 'its worker'} (prefork pool: SIGKILL to "
                         "its executor, which is replaced); its row becomes REVOKED")
    return Step(row, "", f"it is not running ({row.status})")


def _do_rerun(rows: Sequence[TaskResult]) -> str:
    new, refused = [], []
    for row in rows:
        try:
            new.append(run_again(row).id)
        except (NotRegistered, TypeError) as exc:  # TaskArgumentError is a TypeError
            refused.append(f"{row.task_id[:8]}: {exc}")
    text = f"Enqueued {len(new)} new task(s): {', '.join(new[:10])}"
    return text + (f"; not enqueued: {'; '.join(refused[:5])}" if refused else "")


def _do_revoke(rows: Sequence[TaskResult]) -> str:
    revoke([row.task_id for row in rows])
    return f"Revoked {len(rows)} task(s)"


def _do_terminate(rows: Sequence[TaskResult]) -> str:
    revoke([row.task_id for row in rows], terminate=True)
    return (f"Revoked {len(rows)} running task(s) with terminate: workers on the prefork pool "
            "kill them; other pools let them finish")


def _confirmed(name: str, title: str, plan: Callable[[TaskResult], Step],
               do: Callable[[Sequence[TaskResult]], str]) -> Callable[..., Any]:
    """An admin action that shows ``plan`` for each selected row, then, once
    confirmed (``post=yes``), runs ``do`` on the rows that can take it."""

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest,
               queryset: QuerySet[TaskResult]) -> TemplateResponse | None:
        rows = list(queryset.order_by("-created")[:MAX_SELECTED + 1])
        if len(rows) > MAX_SELECTED:
            modeladmin.message_user(
                request, f"Select at most {MAX_SELECTED} tasks for {title.lower()}: "
                "narrow the list with a filter first.", messages.ERROR)
            return None
        steps = [plan(row) for row in rows]
        doable = [s.row for s in steps if not s.skip]
        if request.POST.get("post") == "yes":
            if doable:
                try:
                    modeladmin.message_user(request, do(doable), messages.SUCCESS)
                except Exception as exc:  # a broker error, a row that cannot travel
                    modeladmin.message_user(request, f"{title} failed: {exc}", messages.ERROR)
            else:
                modeladmin.message_user(request, f"Nothing to do: no selected task can "
                                        f"take {title.lower()}.", messages.WARNING)
            return None
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": f"{title}: confirm", "opts": modeladmin.model._meta,
            "action_name": name, "action_title": title, "steps": steps,
            "doable": len(doable), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": modeladmin.media, "breadcrumbs_ol": BREADCRUMBS_OL,
        }
        return TemplateResponse(
            request, "admin/djtasks/taskresult/action_confirmation.html", context)

    action.__name__ = name
    return action


rerun_selected = admin.action(permissions=["rerun"], description="Run again")(
    _confirmed("rerun_selected", "Run again", _plan_rerun, _do_rerun))
revoke_selected = admin.action(permissions=["revoke"], description="Revoke (queued or scheduled)")(
    _confirmed("revoke_selected", "Revoke", _plan_revoke, _do_revoke))
terminate_selected = admin.action(permissions=["revoke"], description="Terminate (running)")(
    _confirmed("terminate_selected", "Terminate", _plan_terminate, _do_terminate))
ACTIONS = [rerun_selected, revoke_selected, terminate_selected]
