"""Prometheus metrics through ``prometheus_client`` (``pip install
'djtasks[metrics]'``): a view projects mount and the worker's
``--metrics-port``. docs/monitoring.md lists every metric.

Two kinds, from two places:

- What a worker did (``djtasks_worker_tasks_total``, the
  ``djtasks_task_runtime_seconds`` histogram): counted in the worker's
  supervisor, which hears of every run from its executors
  (``worker/report.py``; prefork children through a pipe), so one port
  serves the whole worker and a replaced child loses nothing. Counters, as
  Prometheus wants them: ``rate()`` and ``increase()`` work across restarts.
- What the system holds now (queue depths, scheduled messages, dead
  letters, live workers, tasks waiting or running): read from the broker
  and the result backend at scrape time by ``SystemCollector``, with
  indexed queries only. Every target that serves them gives the same
  values: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import DatabaseError, connections
from django.db.models import Count
from django.http import HttpRequest, HttpResponse

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
        start_http_server,
    )
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the test extra installs it
    raise ImproperlyConfigured(
        "djtasks.metrics needs prometheus_client: pip install 'djtasks[metrics]'") from exc

from . import control, states
from .brokers import get_broker
from .conf import get_settings
from .exceptions import BrokerError
from .models import TaskResult
from .worker.report import Reporter

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .worker.supervisor import Supervisor

logger = logging.getLogger("djtasks.metrics")

# Seconds: Prometheus' defaults, then the long tail of background work.
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0, 900.0, 1800.0, 3600.0)

# This process's worker metrics. A web process runs no tasks: they have no
# samples there, only in a worker (or a test's in-process worker).
registry = CollectorRegistry(auto_describe=True)
TASKS = Counter(
    "djtasks_worker_tasks", "Task runs this worker ended, by task, queue and the state the "
    "run ended in (SUCCESS, FAILURE, RETRY, REVOKED).", ["task", "queue", "state"],
    registry=registry)
RUNTIME = Histogram(
    "djtasks_task_runtime_seconds", "Run time of each task run this worker ended "
    "(SUCCESS, FAILURE or RETRY), in seconds.", ["task", "queue"], buckets=RUNTIME_BUCKETS,
    registry=registry)


class Recorder(Reporter):
    """The supervisor's reporter: counts each run in this process's metrics."""

    def finished(self, task: str, queue: str, state: str, runtime: float | None) -> None:
        TASKS.labels(task, queue, state).inc()
        if runtime is not None:
            RUNTIME.labels(task, queue).observe(max(runtime, 0.0))


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class SystemCollector(Collector):
    """The broker's and result backend's state, read at each scrape.

    ``close_connections``: close this thread's database connections after
    each scrape (the worker's HTTP server answers each scrape on a new
    thread; a Django view must keep its request's connections).
    """

    def __init__(self, *, close_connections: bool = False) -> None:
        self.close_connections = close_connections

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._broker_metrics()
            yield from self._result_metrics()
        finally:
            if self.close_connections:
                connections.close_all()

    def _broker_metrics(self) -> Iterator[Metric]:
        up = _gauge("djtasks_broker_up", "1 if the broker answered this scrape, else 0.")
        broker = get_broker()
        try:
            live = control.live_workers(broker)
            queues = control.known_queues(broker, live)
            scheduled = broker.scheduled_count()
            dead = broker.dead_letter_count()
        except (BrokerError, DatabaseError) as exc:
            logger.warning("metrics: the broker did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = _gauge("djtasks_queue_depth", "Messages waiting in a queue, ready to be "
                       "fetched (not scheduled, not fetched).", ["queue"])
        for q in queues:
            depth.add_metric([q.name], q.depth)
        yield depth
        yield GaugeMetricFamily("djtasks_scheduled_messages", "Messages waiting for their eta "
                                "(countdown, eta, retries with a delay), every queue.",
                                value=scheduled)
        yield GaugeMetricFamily("djtasks_dead_letters", "Messages in the dead-letter store.",
                                value=dead)
        workers = _gauge("djtasks_workers", "Workers whose last heartbeat is within their "
                         "lease.")
        workers.add_metric([], len(live))
        yield workers
        concurrency = _gauge("djtasks_worker_concurrency", "Executors of each live worker.",
                             ["worker", "pool"])
        running = _gauge("djtasks_worker_tasks_running", "Tasks each live worker runs now "
                         "(as of its last heartbeat).", ["worker"])
        for name, info in sorted(live.items()):
            concurrency.add_metric([name, str(info.get("pool", ""))],
                                   float(info.get("concurrency", 0)))
            running.add_metric([name], float(info.get("tasks_running", 0)))
        yield concurrency
        yield running

    def _result_metrics(self) -> Iterator[Metric]:
        family = _gauge("djtasks_tasks", "Tasks waiting or running now, from the result "
                        "backend (PENDING, STARTED, RETRY rows), by task and queue.",
                        ["state", "task", "queue"])
        try:
            # Unready rows only: the status index finds them, and they are
            # the backlog. Finished runs are counted by djtasks_worker_tasks.
            rows = (TaskResult.objects.order_by().filter(status__in=states.UNREADY_STATES)
                    .values_list("status", "task_name", "queue").annotate(n=Count("id")))
            for status, task, queue, n in rows:
                family.add_metric([status, task, queue], n)
        except DatabaseError as exc:
            logger.warning("metrics: the result backend did not answer: %s", exc)
            return
        yield family


class _Worker(Collector):
    """The serving worker's own gauges, from its pool (no broker round trip)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        stats = self.supervisor.pool.stats()
        yield GaugeMetricFamily("djtasks_worker_executors_busy", "This worker's executors "
                                "running a task now.", value=stats.running)


class _Include(Collector):
    """Another registry's metrics, collected as one collector."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()


def exposition() -> bytes:
    """This process's worker metrics and the system's, in Prometheus' text format."""
    page = CollectorRegistry(auto_describe=False)
    page.register(_Include(registry))
    page.register(SystemCollector())
    return generate_latest(page)


def allowed(request: HttpRequest) -> bool:
    """Whether ``request`` may read the metrics: a staff user, or a bearer
    token equal to ``DJTASKS['METRICS_TOKEN']`` (when that is set)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = get_settings().METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """``path("metrics/", djtasks.metrics.view)``: the metrics page for a
    Prometheus scrape. Raises ``PermissionDenied`` (403) unless ``allowed``."""
    if not allowed(request):
        raise PermissionDenied("the djtasks metrics need a staff user or "
                               "'Authorization: Bearer <DJTASKS[\"METRICS_TOKEN\"]>'")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def serve(supervisor: Supervisor, address: str, port: int) -> WSGIServer:
    """Serve the worker's metrics, its pool's and the system's on
    ``address:port`` (port 0: any free one; ``server.server_port`` says
    which) from a thread of the supervisor. Raises ``OSError`` if the port
    cannot be bound. Call ``shutdown()`` on the server to stop it."""
    page = CollectorRegistry(auto_describe=False)
    page.register(_Include(registry))
    page.register(_Worker(supervisor))
    page.register(SystemCollector(close_connections=True))
    server, _ = start_http_server(port, addr=address, registry=page)
    return server
