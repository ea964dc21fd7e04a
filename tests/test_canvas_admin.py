"""The admin's workflow page: a tree from the root task, states, group progress."""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from djtasks import chord, group
from djtasks.models import TaskResult
from tests.app import canvas_tasks as ct
from tests.app import tasks
from tests.test_canvas import drain

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client_(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def workflow_page(client, task_id):
    pk = TaskResult.objects.get(task_id=task_id).pk
    response = client.get(reverse("admin:djtasks_taskresult_workflow", args=[pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_chords_page_shows_its_members_states_progress_and_callback(admin_client_, burst):
    result = chord(ct.double.s(i) for i in range(60))(ct.tsum.s())
    drain(burst)
    page = workflow_page(admin_client_, result.id)
    assert "60 of 60 done" in page
    assert "10 more members not listed" in page  # 50 are listed
    assert page.count("tests.app.canvas_tasks.double</a>") == 50
    assert "tests.app.canvas_tasks.tsum</a>" in page and "SUCCESS" in page


def test_a_group_in_progress_shows_how_many_are_done(admin_client_, burst):
    res = group(tasks.add.s(i, i) for i in range(4)).delay()
    burst()
    more = group(tasks.add.s(i, i) for i in range(3)).delay()  # never run: PENDING
    assert "4 of 4 done" in workflow_page(admin_client_, res.results[0].id)
    page = workflow_page(admin_client_, more.results[0].id)
    assert "0 of 3 done" in page and "PENDING" in page


def test_a_chains_page_is_the_tree_from_its_root(admin_client_, burst):
    last = (tasks.add.s(1, 1) | tasks.add.s(2) | ct.boom.s()).delay()
    drain(burst)
    page = workflow_page(admin_client_, last.id)
    page = page[page.index('id="workflow-tree"'):]
    first = last.parent.parent
    assert page.index(first.id) < page.index(last.parent.id) < page.index(last.id)
    assert "FAILURE" in page


def test_a_tasks_page_links_to_its_workflow_and_group_progress(admin_client_, burst):
    res = group(tasks.add.s(1, 1), tasks.add.s(2, 2)).delay()
    burst()
    pk = TaskResult.objects.get(task_id=res.results[0].id).pk
    page = admin_client_.get(reverse("admin:djtasks_taskresult_change", args=[pk])).content.decode()
    assert reverse("admin:djtasks_taskresult_workflow", args=[pk]) in page
    assert "2 of 2 done" in page


def test_the_workflow_page_needs_the_view_permission(client, burst):
    client.force_login(User.objects.create_user("nobody", password="pw", is_staff=True))
    res = tasks.add.delay(1, 1)
    pk = TaskResult.objects.get(task_id=res.id).pk
    assert client.get(reverse("admin:djtasks_taskresult_workflow", args=[pk])).status_code == 403
