"""Celery's Django settings (CELERY_*) honoured where djtasks has the same
setting, DJTASKS first; a system check lists the ignored ones and why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from djtasks import states
from djtasks.celery_settings import check_celery_settings
from djtasks.conf import get_settings
from djtasks.models import TaskResult
from tests.app import tasks


def _warnings() -> dict[str, str]:
    return {w.msg.split(" ", 1)[0]: w.msg for w in check_celery_settings()}


def test_celery_task_always_eager_runs_tasks_inline(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert get_settings().ALWAYS_EAGER is True
    assert tasks.add.delay(2, 3).get() == 5


def test_celery_task_eager_propagates_reraises(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.CELERY_TASK_EAGER_PROPAGATES = True
    with pytest.raises(ValueError, match="eager"):
        tasks.fail.delay("eager")


def test_djtasks_takes_precedence_over_celery(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ALWAYS_EAGER": False}
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert get_settings().ALWAYS_EAGER is False
    assert "precedence" in _warnings()["CELERY_TASK_ALWAYS_EAGER"]


@pytest.mark.parametrize(("celery", "value", "key", "expected"), [
    ("CELERY_TASK_DEFAULT_QUEUE", "low", "DEFAULT_QUEUE", "low"),
    ("CELERY_RESULT_EXPIRES", 3600, "RESULT_EXPIRES", timedelta(hours=1)),
    ("CELERY_TASK_ACKS_LATE", True, "ACKS_LATE", True),
    ("CELERY_TASK_TIME_LIMIT", 300, "TIME_LIMIT", 300),
    ("CELERY_TASK_SOFT_TIME_LIMIT", 240, "SOFT_TIME_LIMIT", 240),
    ("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, "PREFETCH_MULTIPLIER", 1),
    ("CELERY_TASK_TRACK_STARTED", False, "TRACK_STARTED", False),
    ("CELERY_ALWAYS_EAGER", True, "ALWAYS_EAGER", True),  # Celery's old name
])
def test_a_celery_setting_gives_its_djtasks_setting(settings, celery, value, key, expected):
    setattr(settings, celery, value)
    assert getattr(get_settings(), key) == expected
    assert celery not in _warnings()


def test_celery_broker_url_is_used_when_djtasks_has_that_broker(settings):
    settings.DJTASKS = {k: v for k, v in settings.DJTASKS.items() if k != "BROKER_URL"}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    assert get_settings().BROKER_URL == "redis://127.0.0.1:6379/15"


def test_an_amqp_broker_url_is_ignored_with_a_warning(settings):
    settings.DJTASKS = {k: v for k, v in settings.DJTASKS.items() if k != "BROKER_URL"}
    settings.CELERY_BROKER_URL = "amqp://guest@localhost//"
    assert get_settings().BROKER_URL == "db://default"
    assert "no amqp broker" in _warnings()["CELERY_BROKER_URL"]


def test_celery_task_routes_keep_the_queue(settings):
    settings.DJTASKS = {k: v for k, v in settings.DJTASKS.items() if k != "ROUTES"}
    settings.CELERY_TASK_ROUTES = {"tests.app.tasks.*": {"queue": "other",
                                                         "routing_key": "other"}}
    assert dict(get_settings().ROUTES) == {"tests.app.tasks.*": {"queue": "other"}}
    assert tasks.add.build_message([1, 2], {}).queue == "other"


@pytest.mark.django_db(transaction=True)
def test_celery_task_acks_late_reaches_the_worker(settings, burst):
    settings.CELERY_TASK_ACKS_LATE = True
    assert tasks.add.acks_late is True
    result = tasks.add.delay(1, 2)
    burst()
    assert TaskResult.objects.get(task_id=result.id).status == states.SUCCESS


def test_a_bad_celery_value_names_the_celery_setting(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = "yes"
    with pytest.raises(ImproperlyConfigured, match="CELERY_TASK_ALWAYS_EAGER"):
        get_settings()


def test_the_check_lists_ignored_settings_and_why(settings):
    settings.CELERY_RESULT_BACKEND = "django-db"
    settings.CELERY_TASK_SERIALIZER = "json"
    settings.CELERY_SOMETHING_NEW = 1
    found = _warnings()
    assert "TaskResult rows" in found["CELERY_RESULT_BACKEND"]
    assert "JSON" in found["CELERY_TASK_SERIALIZER"]
    assert "no such setting" in found["CELERY_SOMETHING_NEW"]
    assert {w.id for w in check_celery_settings()} == {"djtasks.W010"}


@pytest.mark.django_db  # Django 6.1's check command also checks the databases
def test_the_check_runs_in_manage_py_check(settings, capsys):
    settings.CELERY_RESULT_BACKEND = "django-db"
    call_command("check", databases=["default"])  # not every alias of the test settings
    assert "CELERY_RESULT_BACKEND is ignored" in capsys.readouterr().err


def test_no_celery_settings_no_warning():
    assert check_celery_settings() == []
