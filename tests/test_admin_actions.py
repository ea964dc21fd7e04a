"""The TaskResult admin's actions (run again, revoke, terminate) and who may use them."""

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from djtasks import AsyncResult, states
from djtasks.models import TaskResult
from tests.app import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:djtasks_taskresult_changelist"
CHANGE = "admin:djtasks_taskresult_change"


def _staff(client, *codenames):
    user = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="djtasks", codename__in=["view_taskresult", *codenames]))
    client.force_login(user)
    return client


@pytest.fixture
def root(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _act(client, action, *task_ids, confirm=True):
    pks = TaskResult.objects.filter(task_id__in=task_ids).values_list("pk", flat=True)
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(pk) for pk in pks]}
    if confirm:
        data["post"] = "yes"
    return client.post(reverse(CHANGELIST), data, follow=True)


def _offered(client):
    page = client.get(reverse(CHANGELIST)).content.decode()
    return {name for name in ("delete_selected", "rerun_selected", "revoke_selected",
                              "terminate_selected") if f'value="{name}"' in page}


def _row(task_id):
    return TaskResult.objects.get(task_id=task_id)


def test_run_again_first_shows_a_confirmation_listing_each_task(root, broker, burst):
    done = tasks.add.delay(2, 3)
    burst()
    page = _act(root, "rerun_selected", done.id, confirm=False).content.decode()
    assert "Run again: 1 of 1 selected task(s)" in page
    assert "a new task tests.app.tasks.add(2, 3) on queue &#x27;default&#x27;" in page
    assert TaskResult.objects.count() == 1  # nothing enqueued before the confirmation


def test_run_again_enqueues_the_same_task_arguments_and_options_linked_to_the_original(
        root, broker, burst):
    original = tasks.echo.apply_async([1, "a"], {"k": [2]}, queue="reports", priority=7,
                                      time_limit=30)
    burst("-Q", "reports")
    _act(root, "rerun_selected", original.id)
    [new] = TaskResult.objects.exclude(task_id=original.id)
    assert (new.task_name, new.queue, new.priority, new.options) == (
        "tests.app.tasks.echo", "reports", 7, {"time_limit": 30})
    assert (new.parent_id, new.root_id, new.status) == (original.id, original.id, states.PENDING)
    burst("-Q", "reports")
    assert AsyncResult(new.task_id).get(timeout=5) == {"args": [1, "a"], "kwargs": {"k": [2]}}


def test_the_change_pages_link_a_rerun_and_its_original_both_ways(root, broker, burst):
    original = tasks.add.delay(1, 1)
    burst()
    _act(root, "rerun_selected", original.id)
    new = TaskResult.objects.exclude(task_id=original.id).get()
    old_page = root.get(reverse(CHANGE, args=[_row(original.id).pk])).content.decode()
    new_page = root.get(reverse(CHANGE, args=[new.pk])).content.decode()
    assert f'href="{reverse(CHANGE, args=[new.pk])}"' in old_page
    assert f'href="{reverse(CHANGE, args=[_row(original.id).pk])}"' in new_page


def test_run_again_skips_a_task_this_process_does_not_know(root, broker):
    TaskResult.objects.create(task_id="gone-1", task_name="no.such.task", status=states.FAILURE)
    page = _act(root, "rerun_selected", "gone-1", confirm=False).content.decode()
    assert "skipped: no task no.such.task is registered in this process" in page
    assert "Yes, I’m sure" not in page


def test_revoke_revokes_queued_and_scheduled_tasks_and_skips_finished_ones(root, broker, burst):
    finished = tasks.add.delay(1, 2)
    burst()
    queued = tasks.add.delay(3, 4)
    scheduled = tasks.add.apply_async((5, 6), countdown=3600)
    page = _act(root, "revoke_selected", finished.id, queued.id, scheduled.id,
                confirm=False).content.decode()
    assert "Revoke: 2 of 3 selected task(s)" in page
    assert "skipped: it has finished (SUCCESS)" in page
    _act(root, "revoke_selected", finished.id, queued.id, scheduled.id)
    assert [_row(t.id).status for t in (finished, queued, scheduled)] == [
        states.SUCCESS, states.REVOKED, states.REVOKED]
    assert broker.queue_depths(["default"]) == {"default": 1}  # the revoked frame, dropped at fetch
    burst()
    assert _row(queued.id).result is None


def test_revoke_skips_a_running_task_and_points_to_terminate(root):
    TaskResult.objects.create(task_id="run-1", task_name="tests.app.tasks.add",
                              status=states.STARTED)
    page = _act(root, "revoke_selected", "run-1", confirm=False).content.decode()
    assert "skipped: it is running: terminate it instead" in page


def test_terminate_kills_a_running_task_on_the_prefork_pool(root, broker, worker_process,
                                                           counter):
    worker = worker_process("--pool", "prefork", "-c", "1")
    running = tasks.record_and_sleep.delay(counter("t"), 60)
    wait_until(lambda: _row(running.id).status == states.STARTED, what="the task to start")
    page = _act(root, "terminate_selected", running.id, confirm=False).content.decode()
    assert "Terminate: 1 of 1 selected task(s)" in page
    _act(root, "terminate_selected", running.id)
    wait_until(lambda: _row(running.id).status == states.REVOKED, what="the task to be killed",
               timeout=30)
    assert _row(running.id).exception_message == "terminated"
    assert tasks.count(counter("t") + ":done") == 0
    worker.stop()


def test_terminate_skips_tasks_that_are_not_running(root, broker):
    queued = tasks.add.delay(1, 2)
    page = _act(root, "terminate_selected", queued.id, confirm=False).content.decode()
    assert "skipped: it is not running (PENDING)" in page


def test_a_selection_larger_than_a_confirmation_page_is_refused(root, broker, monkeypatch):
    from djtasks import admin_actions

    monkeypatch.setattr(admin_actions, "MAX_SELECTED", 2)
    ids = [tasks.add.delay(i, i).id for i in range(3)]
    page = _act(root, "revoke_selected", *ids).content.decode()
    assert "Select at most 2 tasks for revoke" in page
    assert {_row(i).status for i in ids} == {states.PENDING}


def test_a_superuser_is_offered_every_action(root, broker):
    assert _offered(root) == {"delete_selected", "rerun_selected", "revoke_selected",
                              "terminate_selected"}


def test_a_view_only_staff_user_sees_every_row_and_is_offered_no_action(client, broker):
    queued = tasks.add.delay(1, 2)
    viewer = _staff(client)
    assert queued.id[:8] in viewer.get(reverse(CHANGELIST)).content.decode()
    assert viewer.get(reverse(CHANGE, args=[_row(queued.id).pk])).status_code == 200
    assert _offered(viewer) == set()


@pytest.mark.parametrize("action", ["rerun_selected", "revoke_selected", "terminate_selected",
                                    "delete_selected"])
def test_a_view_only_staff_user_cannot_act_by_posting_an_action(client, broker, action):
    queued = tasks.add.delay(1, 2)
    _act(_staff(client), action, queued.id)
    assert list(TaskResult.objects.values_list("task_id", "status")) == [
        (queued.id, states.PENDING)]


def test_the_rerun_permission_offers_run_again_only(client, broker):
    assert _offered(_staff(client, "rerun_taskresult")) == {"rerun_selected"}


def test_the_revoke_permission_offers_revoke_and_terminate(client, broker):
    assert _offered(_staff(client, "revoke_taskresult")) == {"revoke_selected",
                                                             "terminate_selected"}


def test_a_user_with_the_rerun_permission_runs_a_task_again(client, broker):
    original = tasks.add.delay(1, 2)
    _act(_staff(client, "rerun_taskresult"), "rerun_selected", original.id)
    assert TaskResult.objects.filter(parent_id=original.id).count() == 1


def test_run_again_reports_a_task_whose_stored_arguments_no_longer_travel(root, broker):
    TaskResult.objects.create(task_id="bad-args", task_name="tests.app.tasks.add",
                              status=states.FAILURE, args="not a list")
    ok = tasks.add.delay(1, 2)
    page = _act(root, "rerun_selected", "bad-args", ok.id).content.decode()
    assert "Enqueued 1 new task(s)" in page and "not enqueued: bad-args: " in page
    assert TaskResult.objects.filter(parent_id=ok.id).count() == 1
