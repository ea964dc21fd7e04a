"""The small ``app`` stand-in: ``@app.task``, ``app.send_task``,
``app.AsyncResult``, ``app.control.revoke``, ``current_app``, against a
real worker (``runworker --burst`` in this process)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from djtasks import Celery, Task, current_app, registry, states
from tests.app import celery_tasks as ct

pytestmark = pytest.mark.django_db(transaction=True)


def test_app_task_registers_a_task_under_its_module_name():
    assert isinstance(ct.app_plain, Task)
    assert registry.get("tests.app.celery_tasks.app_plain") is ct.app_plain
    assert ct.app_bound.bind and ct.app_bound.max_retries == 4


def test_app_tasks_run_in_the_worker(burst):
    plain = ct.app_plain.delay(21)
    bound = ct.app_bound.delay()
    burst()
    assert plain.get(timeout=5) == 42 and bound.get(timeout=5) == bound.id


def test_app_task_base_uses_the_class_handlers(burst):
    result = ct.app_based.delay(1)
    burst()
    assert ct.journal(f"app-base:{result.id}") == [["on_success", 2]]


def test_app_send_task_and_async_result(burst):
    sent = ct.app.send_task("tests.app.celery_tasks.app_plain", args=[5])
    burst()
    assert ct.app.AsyncResult(sent.id).get(timeout=5) == 10


def test_app_control_revoke_stops_a_queued_task(burst):
    sent = ct.app_plain.delay(1)
    ct.app.control.revoke(sent.id)
    burst()
    assert ct.app.AsyncResult(sent.id).status == states.REVOKED


def test_current_app_is_an_app():
    assert isinstance(current_app, Celery)
    assert current_app.AsyncResult("x").id == "x"


def test_config_from_another_source_is_refused():
    with pytest.raises(ImproperlyConfigured, match="djtasks reads only Django settings"):
        Celery("proj").config_from_object("proj.celeryconfig")
