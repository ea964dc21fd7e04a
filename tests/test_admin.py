"""The TaskResult admin: every state listed, filters, search, a read-only detail page."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from djtasks import states
from djtasks.models import TaskResult
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:djtasks_taskresult_changelist"


@pytest.fixture
def admin_client_(client):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def rows(burst):
    ok = tasks.add.delay(1, 2)
    bad = tasks.fail.delay("kaput")
    burst()
    waiting = tasks.echo.apply_async(["hello"], {"when": "later"}, queue="reports")
    return {"ok": ok.id, "bad": bad.id, "waiting": waiting.id}


def test_changelist_shows_pending_and_finished_tasks(admin_client_, rows):
    page = admin_client_.get(reverse(CHANGELIST)).content.decode()
    for task_id in rows.values():
        assert task_id in page
    for status in (states.PENDING, states.SUCCESS, states.FAILURE):
        assert status in page


def test_filter_by_status(admin_client_, rows):
    page = admin_client_.get(reverse(CHANGELIST), {"status__exact": "FAILURE"}).content.decode()
    assert rows["bad"] in page
    assert rows["ok"] not in page


def test_filter_by_task_name_and_queue(admin_client_, rows):
    page = admin_client_.get(reverse(CHANGELIST),
                             {"task_name": "tests.app.tasks.add"}).content.decode()
    assert rows["ok"] in page and rows["bad"] not in page
    page = admin_client_.get(reverse(CHANGELIST), {"queue": "reports"}).content.decode()
    assert rows["waiting"] in page and rows["ok"] not in page


def test_search_by_task_id(admin_client_, rows):
    page = admin_client_.get(reverse(CHANGELIST), {"q": rows["bad"]}).content.decode()
    assert rows["bad"] in page and rows["ok"] not in page


def test_detail_page_shows_json_arguments_result_and_traceback(admin_client_, rows):
    bad = TaskResult.objects.get(task_id=rows["bad"])
    page = admin_client_.get(
        reverse("admin:djtasks_taskresult_change", args=[bad.pk])
    ).content.decode()
    assert "raise ValueError(message)" in page
    assert "kaput" in page
    ok = TaskResult.objects.get(task_id=rows["ok"])
    page = admin_client_.get(
        reverse("admin:djtasks_taskresult_change", args=[ok.pk])
    ).content.decode()
    assert "<pre" in page and "[\n  1,\n  2\n]" in page
    assert "run time" in page.lower()


def test_admin_is_read_only(admin_client_, rows):
    assert admin_client_.get(reverse("admin:djtasks_taskresult_add")).status_code == 403
    ok = TaskResult.objects.get(task_id=rows["ok"])
    url = reverse("admin:djtasks_taskresult_change", args=[ok.pk])
    admin_client_.post(url, {"status": "FAILURE"})
    ok.refresh_from_db()
    assert ok.status == states.SUCCESS


def test_dead_letters_are_listed_and_requeued_from_the_admin(admin_client_, broker, burst):
    from djtasks import AsyncResult
    from djtasks.message import Message

    url = reverse("admin:djtasks_deadletter_changelist")
    assert "No dead letters" in admin_client_.get(url).content.decode()
    msg = Message(id="dl-admin", task="tests.app.tasks.add", args=[1, 1], kwargs={},
                  queue="default")
    broker.publish([(msg, msg.encode())])
    [d] = broker.consumer("probe/0.1", ["default"]).fetch(1, 0)
    broker.consumer("probe/0.1", ["default"]).dead_letter(d, "refused for the admin test")
    page = admin_client_.get(url).content.decode()
    assert "dl-admin" in page and "refused for the admin test" in page
    admin_client_.post(url, {"action": "requeue", "ids": ["dl-admin"]})
    assert broker.dead_letters() == []
    burst()
    assert AsyncResult("dl-admin").get(timeout=1) == 2


def test_dead_letters_can_be_discarded_from_the_admin(admin_client_, broker):
    from djtasks.message import Message

    msg = Message(id="dl-gone", task="x", args=[], kwargs={}, queue="default")
    broker.publish([(msg, b"junk")])
    [d] = broker.consumer("probe/0.1", ["default"]).fetch(1, 0)
    broker.consumer("probe/0.1", ["default"]).dead_letter(d, "junk")
    admin_client_.post(reverse("admin:djtasks_deadletter_changelist"),
                       {"action": "discard", "ids": ["dl-gone"]})
    assert broker.dead_letters() == []


def test_cleanup_deletes_only_results_finished_before_result_expires(settings, capsys):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone

    now = timezone.now()
    TaskResult.objects.create(task_id="old", task_name="t", status=states.SUCCESS,
                              finished=now - timedelta(days=8))
    TaskResult.objects.create(task_id="recent", task_name="t", status=states.FAILURE,
                              finished=now - timedelta(days=1))
    TaskResult.objects.create(task_id="old-pending", task_name="t", status=states.PENDING,
                              created=now - timedelta(days=30))
    call_command("djtasks", "cleanup", "--dry-run")
    assert "1 result(s)" in capsys.readouterr().out
    call_command("djtasks", "cleanup")
    assert sorted(TaskResult.objects.values_list("task_id", flat=True)) == [
        "old-pending", "recent"]
    settings.DJTASKS = {**settings.DJTASKS, "RESULT_EXPIRES": None}
    call_command("djtasks", "cleanup")
    assert "kept forever" in capsys.readouterr().out
