"""The admin's dashboard (``admin/djtasks/dashboard/``, docs/admin.md): queue
depths and live workers from the broker, and the last hour from indexed
queries on ``TaskResult.finished``; the page reloads its live part every
few seconds with a small fetch, and draws its chart as SVG on the server.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from . import states
from .admin_changelist import distinct_values
from .brokers import Broker
from .conf import get_settings
from .exceptions import BrokerError
from .models import TaskResult
from .registry import registry

REFRESH_SECONDS = 5
MINUTES = 60  # the chart's span: the last hour, minute by minute


@dataclass(slots=True)
class QueueRow:
    queue: str
    ready: int
    in_flight: int
    dead_letters: int


def queue_names(workers: dict[str, dict[str, Any]], dead: Counter[str]) -> list[str]:
    """Every queue a task, a route, a live worker, a dead letter or a row
    names, sorted (rows' queues read through the index, at most 100)."""
    s = get_settings()
    names = {s.DEFAULT_QUEUE, *dead}
    names.update(task.queue for task in registry if task.queue)
    names.update(route["queue"] for route in s.ROUTES.values() if route.get("queue"))
    for info in workers.values():
        names.update(info.get("queues") or ())
    names.update(distinct_values("queue"))
    return sorted(names)


def broker_state(broker: Broker) -> dict[str, Any]:
    """Queues (ready, in flight, dead letters), the scheduled count and the
    workers, from the broker; ``error`` says why not when it cannot be reached."""
    try:
        workers = broker.workers()
        dead = Counter(letter.queue for letter in broker.dead_letters())
        names = queue_names(workers, dead)
        ready, held = broker.queue_depths(names), broker.in_flight(names)
        scheduled = broker.scheduled_count()
    except BrokerError as exc:
        return {"error": str(exc), "queues": [], "workers": [], "scheduled": None}
    now = time.time()
    rows = []
    for name, info in sorted(workers.items()):
        seen = now - float(info.get("last_seen") or 0)
        rows.append({**info, "name": name, "seen_ago": seen,
                     "silent": seen > float(info.get("lease") or 30)})
    return {
        "error": "", "scheduled": scheduled, "workers": rows,
        "queues": [QueueRow(q, ready[q], held[q], dead[q]) for q in names],
    }


def last_hour(now: datetime) -> tuple[datetime, list[int], list[int]]:
    """(start, finished per minute, failed per minute) over the ``MINUTES``
    minutes before ``now``: one GROUP BY on the ``finished`` index."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=MINUTES - 1)
    done, failed = [0] * MINUTES, [0] * MINUTES
    per_minute = (TaskResult.objects.filter(finished__gte=start, finished__lte=now)
                  .annotate(minute=TruncMinute("finished")).values("minute")
                  .annotate(n=Count("id"), failed=Count("id", filter=Q(status=states.FAILURE)))
                  .order_by())
    for row in per_minute:
        i = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= i < MINUTES:
            done[i], failed[i] = row["n"], row["failed"]
    return start, done, failed


def failures(since: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """The FAILURE rows finished since ``since``, grouped by task and
    exception type, most first, each with the change list URL that shows them."""
    groups = (TaskResult.objects.filter(finished__gte=since, status=states.FAILURE)
              .values("task_name", "exception_type")
              .annotate(n=Count("id"), last=Max("finished")).order_by("-n", "task_name")[:limit])
    changelist = reverse("admin:djtasks_taskresult_changelist")
    return [{**g, "url": changelist + "?" + urlencode({
        "status__exact": states.FAILURE, "task_name": g["task_name"],
        "exception_type": g["exception_type"], "finished__gte": since.isoformat()})}
        for g in groups]


def chart(start: datetime, done: list[int], failed: list[int]) -> SafeString:
    """An SVG bar chart of ``done`` (grey) with ``failed`` (red) in front,
    one bar per minute from ``start``; labels in the current time zone."""
    width, height, left, bottom = 720, 160, 40, 20
    top = max([*done, 1])
    bar = (width - left) / len(done)

    def y(n: int) -> float:
        return (height - bottom) * (1 - n / top)

    def f(x: float) -> str:  # format_html escapes its arguments into strings first
        return f"{x:.1f}"

    bars = format_html_join("", (
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
        "<title>{}: {} finished, {} failed</title></rect>"), (
        (f(left + i * bar), f(y(n)), f(bar - 1), f(height - bottom - y(n)), colour,
         timezone.localtime(start + timedelta(minutes=i)).strftime("%H:%M"), d, e)
        for i, (d, e) in enumerate(zip(done, failed, strict=True))
        for n, colour in ((d, "#90a4ae"), (e, "#c62828")) if n))
    ticks = format_html_join("", (
        '<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>'), (
        (f(left + i * bar), height - 5, timezone.localtime(start + timedelta(minutes=i))
         .strftime("%H:%M")) for i in range(0, len(done), 15)))
    return format_html(
        '<svg id="throughput-chart" xmlns="http://www.w3.org/2000/svg" width="{w}" '
        'height="{h}" role="img" aria-label="tasks finished and failed per minute">'
        '<text x="0" y="12" font-size="11">{top}/min</text>'
        '<line x1="{l}" y1="{b}" x2="{w}" y2="{b}" stroke="#999"/>{bars}{ticks}</svg>',
        w=width, h=height, top=top, l=left, b=height - bottom, bars=bars or mark_safe(""),
        ticks=ticks)


def context() -> dict[str, Any]:
    """Everything the dashboard's live part shows, read now."""
    from .brokers import get_broker

    now = timezone.now()
    start, done, failed = last_hour(now)
    return {
        **broker_state(get_broker()), "now": now, "chart": chart(start, done, failed),
        "finished_total": sum(done), "failed_total": sum(failed),
        "failures": failures(now - timedelta(hours=1)), "refresh": REFRESH_SECONDS,
    }
