"""The periodic-task admin: code schedules listed read-only beside the
database's, crontab fields validated, the next five runs in the schedule's
zone, and the enable, disable and run-now actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from djtasks.beat.models import PeriodicTask
from djtasks.models import TaskResult
from djtasks.schedules import crontab

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:djtasks_periodictask_changelist"
ADD = "admin:djtasks_periodictask_add"


def form(**fields):
    data = {"name": "nightly", "task": "tests.app.tasks.record", "enabled": "on",
            "kind": "crontab", "minute": "30", "hour": "2", "day_of_week": "*",
            "day_of_month": "*", "month_of_year": "*", "timezone": "Europe/London",
            "missed": "once", "args": '["k"]', "kwargs": "{}", "every": "", "clocked_at_0": "",
            "clocked_at_1": "", "queue": "", "priority": "", "expires": "", "description": ""}
    data.update(fields)
    return data


def test_code_schedules_are_listed_beside_the_databases(admin_client, settings):
    settings.DJTASKS = {**settings.DJTASKS, "BEAT_SCHEDULE": {
        "report": {"task": "tests.app.tasks.record", "args": ["r"],
                   "schedule": crontab(minute=0, hour=6, timezone="Asia/Tokyo")}}}
    PeriodicTask.objects.create(name="from-admin", task="tests.app.tasks.record",
                                kind="interval", every=timedelta(minutes=5), args=["a"])
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    for name in ("report", "from-admin", "djtasks.cleanup_results", "djtasks.trim_workers"):
        assert name in page
    code_row = PeriodicTask.objects.get(name="report")
    assert (code_row.source, code_row.hour, code_row.timezone) == ("code", "6", "Asia/Tokyo")


def test_a_code_schedule_is_read_only_in_the_admin(admin_client, settings):
    admin_client.get(reverse(CHANGELIST))
    row = PeriodicTask.objects.get(name="djtasks.cleanup_results")
    url = reverse("admin:djtasks_periodictask_change", args=[row.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(url, form(name="renamed")).status_code == 403


def test_a_schedule_removed_from_code_leaves_the_list(admin_client, settings):
    admin_client.get(reverse(CHANGELIST))
    settings.DJTASKS = {**settings.DJTASKS, "BEAT_SCHEDULE": {"djtasks.trim_workers": None}}
    assert "djtasks.trim_workers" not in admin_client.get(reverse(CHANGELIST)).content.decode()


def test_adding_a_crontab_schedule_shows_its_next_five_runs_in_its_zone(admin_client):
    response = admin_client.post(reverse(ADD), form(_continue="1"))
    assert response.status_code == 302, response.content.decode()[:2000]
    page = admin_client.get(response.url).content.decode()
    assert page.count(" 02:30:00 BST") + page.count(" 02:30:00 GMT") == 5


@pytest.mark.parametrize(("field", "value", "error"), [
    ("minute", "75", "crontab minute=&#x27;75&#x27; is not a cron field"),
    ("day_of_week", "funday", "crontab day_of_week"),
    ("timezone", "Europe/Londn", "unknown time zone"),
    ("task", "tests.app.tasks.nope", "is not registered"),
])
def test_a_bad_field_is_refused_with_its_message(admin_client, field, value, error):
    response = admin_client.post(reverse(ADD), form(**{field: value}))
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not PeriodicTask.objects.exists()


def test_a_name_taken_by_a_code_schedule_is_refused(admin_client):
    response = admin_client.post(reverse(ADD), form(name="djtasks.cleanup_results"))
    assert "is a schedule in code" in response.content.decode()


def test_enable_and_disable_actions_change_only_database_schedules(admin_client):
    admin_client.get(reverse(CHANGELIST))
    row = PeriodicTask.objects.create(name="mine", task="tests.app.tasks.record",
                                      kind="interval", every=timedelta(minutes=1), args=["m"])
    code = PeriodicTask.objects.get(name="djtasks.trim_workers")
    admin_client.post(reverse(CHANGELIST), {"action": "disable",
                                            "_selected_action": [row.pk, code.pk]})
    assert PeriodicTask.objects.get(pk=row.pk).enabled is False
    assert PeriodicTask.objects.get(pk=code.pk).enabled is True
    admin_client.post(reverse(CHANGELIST), {"action": "enable", "_selected_action": [row.pk]})
    assert PeriodicTask.objects.get(pk=row.pk).enabled is True


@pytest.mark.django_db(transaction=True)
def test_run_now_sends_the_task_at_once(admin_client, broker):
    row = PeriodicTask.objects.create(name="now", task="tests.app.tasks.record",
                                      kind="interval", every=timedelta(hours=1), args=["n"])
    admin_client.post(reverse(CHANGELIST), {"action": "run_now", "_selected_action": [row.pk]})
    (result,) = TaskResult.objects.filter(task_name="tests.app.tasks.record")
    assert result.args == ["n"] and "scheduled_for" in result.options
