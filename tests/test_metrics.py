"""Prometheus metrics: the view projects mount, and ``runworker --metrics-port``
against a real worker, both read with prometheus_client's own parser."""

from __future__ import annotations

import re
import sys
import urllib.request

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import path
from prometheus_client.parser import text_string_to_metric_families

import djtasks.metrics
from djtasks import AsyncResult
from djtasks.exceptions import TimeLimitExceeded
from djtasks.message import Message
from tests.app.tasks import add, fail, record, record_and_sleep
from tests.conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.test_metrics")]

urlpatterns = [path("metrics/", djtasks.metrics.view)]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def staff_client(client, django_user_model):  # type: ignore[no-untyped-def]
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    return client


def scrape(client) -> Samples:  # type: ignore[no-untyped-def]
    response = client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


# -- the view ----------------------------------------------------------------

def test_the_view_counts_runs_and_their_run_times_after_a_burst_worker(staff_client, burst):
    before = scrape(staff_client)
    for i in range(3):
        add.delay(i, i)
    fail.delay("no")
    burst("--metrics-port", "127.0.0.1:0")
    after = scrape(staff_client)
    ok = {"task": "tests.app.tasks.add", "queue": "default"}

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("djtasks_worker_tasks_total", **ok, state="SUCCESS") == 3
    assert grew("djtasks_worker_tasks_total", task="tests.app.tasks.fail", queue="default",
                state="FAILURE") == 1
    assert grew("djtasks_task_runtime_seconds_count", **ok) == 3
    assert grew("djtasks_task_runtime_seconds_bucket", **ok, le="+Inf") == 3
    assert 0 <= grew("djtasks_task_runtime_seconds_sum", **ok) < 60


def test_a_worker_without_metrics_port_counts_nothing(staff_client, burst):
    before = scrape(staff_client)
    add.delay(1, 1)
    burst()
    after = scrape(staff_client)
    labels = {"task": "tests.app.tasks.add", "queue": "default", "state": "SUCCESS"}
    assert value(after, "djtasks_worker_tasks_total", **labels) == value(
        before, "djtasks_worker_tasks_total", **labels)


@pytest.fixture(params=["redis", "db"])
def any_broker(request, settings, broker):  # type: ignore[no-untyped-def]
    """The test broker (Redis), then the database broker."""
    if request.param == "db":
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    from djtasks.brokers import get_broker

    return get_broker()


def test_the_view_reads_queue_depths_waiting_tasks_and_dead_letters(staff_client, any_broker,
                                                                    burst):
    broker = any_broker
    m = Message(id="stray", task="no.such.task", args=[], kwargs={}, queue="default")
    broker.publish([(m, m.encode())])
    burst()  # dead-letters it
    add.delay(1, 2)
    add.delay(3, 4)
    add.apply_async(args=[5, 6], countdown=600)
    samples = scrape(staff_client)
    assert value(samples, "djtasks_broker_up") == 1
    assert value(samples, "djtasks_queue_depth", queue="default") == 2
    assert value(samples, "djtasks_queue_depth", queue="reports") == 0  # a route names it
    assert value(samples, "djtasks_scheduled_messages") == 1
    assert value(samples, "djtasks_dead_letters") == 1
    assert value(samples, "djtasks_tasks", state="PENDING", task="tests.app.tasks.add",
                 queue="default") == 3


def test_the_view_counts_live_workers(staff_client, broker):
    import time

    broker.register_worker("w1", {"hostname": "w1", "queues": ["default"], "pool": "threads",
                                  "concurrency": 4, "tasks_running": 2,
                                  "last_seen": time.time(), "lease": 30})
    samples = scrape(staff_client)
    assert value(samples, "djtasks_workers") == 1
    assert value(samples, "djtasks_worker_concurrency", worker="w1", pool="threads") == 4
    assert value(samples, "djtasks_worker_tasks_running", worker="w1") == 2


def test_the_view_says_when_the_broker_is_down(staff_client, settings):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "redis://127.0.0.1:1/0"}
    samples = scrape(staff_client)
    assert value(samples, "djtasks_broker_up") == 0
    assert ("djtasks_queue_depth", frozenset({("queue", "default")})) not in samples


def test_the_view_refuses_anonymous_and_non_staff_users(client, django_user_model):
    assert client.get("/metrics/").status_code == 403
    client.force_login(django_user_model.objects.create_user("someone"))
    assert client.get("/metrics/").status_code == 403


def test_the_view_takes_the_metrics_token_as_a_bearer_token(client, settings):
    token = "s3cret-token-for-prometheus"
    settings.DJTASKS = {**settings.DJTASKS, "METRICS_TOKEN": token}
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 403
    response = client.get("/metrics/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert "djtasks_broker_up" in response.content.decode()


def test_a_short_metrics_token_is_refused_at_start_up(settings):
    from django.core.exceptions import ImproperlyConfigured

    from djtasks.conf import load

    with pytest.raises(ImproperlyConfigured, match="METRICS_TOKEN"):
        load({"METRICS_TOKEN": "short"})


# -- runworker --metrics-port -------------------------------------------------

def metrics_url(worker) -> str:  # type: ignore[no-untyped-def]
    worker.wait_for_output("metrics on http://")
    port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", worker.output())
    assert port is not None, worker.output()
    return f"http://127.0.0.1:{port.group(1)}/metrics"


def http_scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return parse(response.read().decode())


@pytest.mark.subprocess
def test_metrics_port_serves_the_runs_of_every_prefork_child(worker_process, counter):
    # One task per child: each run is in a child that is gone by the scrape.
    worker = worker_process("--pool", "prefork", "-c", "2", "--max-tasks-per-child", "1",
                            "--metrics-port", "127.0.0.1:0")
    url = metrics_url(worker)
    results = [record.delay(counter("runs")) for _ in range(5)]
    for r in results:
        r.get(timeout=30)
    labels = {"task": "tests.app.tasks.record", "queue": "default"}
    wait_until(lambda: value(http_scrape(url), "djtasks_worker_tasks_total", **labels,
                             state="SUCCESS") == 5, what="five runs counted")
    samples = http_scrape(url)
    assert value(samples, "djtasks_task_runtime_seconds_count", **labels) == 5
    assert value(samples, "djtasks_worker_executors_busy") == 0
    assert value(samples, "djtasks_workers") >= 1
    assert value(samples, "djtasks_broker_up") == 1
    assert AsyncResult(results[0].id).status == "SUCCESS"


@pytest.mark.subprocess
def test_metrics_port_counts_a_task_the_supervisor_killed_for_its_time_limit(worker_process,
                                                                            counter):
    worker = worker_process("--pool", "prefork", "-c", "1", "--time-limit", "0.5",
                            "--metrics-port", "127.0.0.1:0")
    url = metrics_url(worker)
    result = record_and_sleep.delay(counter("slow"), 30)
    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=30)
    labels = {"task": "tests.app.tasks.record_and_sleep", "queue": "default"}
    wait_until(lambda: value(http_scrape(url), "djtasks_worker_tasks_total", **labels,
                             state="FAILURE") == 1, what="the killed run counted")
    assert value(http_scrape(url), "djtasks_task_runtime_seconds_count", **labels) == 0


@pytest.mark.subprocess
def test_metrics_port_on_the_threads_pool(worker_process):
    worker = worker_process("--pool", "threads", "-c", "2", "--metrics-port", "127.0.0.1:0")
    url = metrics_url(worker)
    fail.delay("boom").get(timeout=30, propagate=False)
    labels = {"task": "tests.app.tasks.fail", "queue": "default", "state": "FAILURE"}
    wait_until(lambda: value(http_scrape(url), "djtasks_worker_tasks_total", **labels) == 1,
               what="the failure counted")


def test_metrics_port_refuses_what_is_not_a_port(broker):
    with pytest.raises(CommandError, match="is not a port or ADDRESS:PORT"):
        call_command("runworker", "--burst", "--metrics-port", "lots")
    with pytest.raises(CommandError, match="a port is 0 to 65535"):
        call_command("runworker", "--burst", "--metrics-port", "70000")


def test_metrics_port_without_prometheus_client_names_the_extra(broker, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    monkeypatch.delitem(sys.modules, "djtasks.metrics")
    with pytest.raises(CommandError, match=r"pip install 'djtasks\[metrics\]'"):
        call_command("runworker", "--burst", "--pool", "solo", "--metrics-port", "0")
