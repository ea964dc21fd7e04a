"""The admin's dashboard: queues, workers, the last hour's chart and failures."""

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from djtasks import states
from djtasks.admin_dashboard import last_hour
from djtasks.models import TaskResult
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)

DASHBOARD = "admin:djtasks_dashboard_changelist"


@pytest.fixture
def root(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _live(client):
    return client.get(reverse(DASHBOARD), {"live": "1"}).content.decode()


def test_the_dashboard_lives_at_admin_djtasks_dashboard_and_is_linked_from_the_list(root):
    assert reverse(DASHBOARD) == "/admin/djtasks/dashboard/"
    page = root.get(reverse("admin:djtasks_taskresult_changelist")).content.decode()
    assert f'href="{reverse(DASHBOARD)}" id="dashboard-link"' in page


def test_the_page_fetches_its_live_part_again_every_few_seconds(root, broker):
    page = root.get(reverse(DASHBOARD)).content.decode()
    assert 'data-url="?live=1" data-refresh="5"' in page and "setInterval(refresh" in page
    assert "<html" not in _live(root) and 'id="queues"' in _live(root)


def test_queue_depths_show_ready_scheduled_in_flight_and_dead_letters(root, broker):
    from djtasks.message import Message

    for i in range(3):
        tasks.add.delay(i, i)
    tasks.add.apply_async((1, 1), countdown=600)
    tasks.on_other_queue.apply_async(("x",), queue="reports")
    consumer = broker.consumer("probe.1/0.1", ["default"])
    consumer.renew(30)
    consumer.fetch(1, 0)
    bad = Message(id="dl-1", task="x", args=[], kwargs={}, queue="reports")
    broker.publish([(bad, b"junk")])
    other = broker.consumer("probe.1/1.1", ["reports"])
    other.renew(30)
    other.dead_letter(next(d for d in other.fetch(2, 0) if d.id == "dl-1"), "junk")
    page = _live(root)
    assert ('<tr data-queue="default"><td>default</td><td class="num ready">2</td>'
            '<td class="num in-flight">1</td><td class="num dead">0</td></tr>') in page
    assert ('<tr data-queue="reports"><td>reports</td><td class="num ready">0</td>'
            '<td class="num in-flight">1</td><td class="num dead">1</td></tr>') in page
    assert '<strong id="scheduled">1</strong>' in page


def test_live_workers_show_host_pid_pool_concurrency_running_processed_and_last_seen(
        root, broker):
    broker.register_worker("web-1", {
        "hostname": "web-1", "pid": 4242, "queues": ["default", "mail"], "concurrency": 4,
        "pool": "prefork", "started": time.time() - 60, "last_seen": time.time() - 2,
        "lease": 30, "tasks_done": 17, "tasks_running": 3})
    page = _live(root)
    assert ("<td>web-1</td><td class=\"num\">4242</td><td>prefork</td><td class=\"num\">4</td>"
            "\n      <td class=\"num\">3</td><td class=\"num\">17</td><td>default, mail</td>"
            ) in page
    assert "2 s ago" in page and "silent" not in page
    assert '<tr data-queue="mail">' in page  # a queue a live worker consumes


def test_a_worker_silent_for_longer_than_its_lease_is_marked(root, broker):
    broker.register_worker("old", {"hostname": "old", "pid": 1, "queues": ["default"],
                                   "concurrency": 1, "pool": "solo", "last_seen":
                                   time.time() - 120, "lease": 30})
    assert "(silent)" in _live(root)


def test_the_chart_counts_tasks_finished_and_failed_per_minute(broker):
    now = timezone.now().replace(second=30, microsecond=0)
    for i, (status, ago) in enumerate([(states.SUCCESS, 1), (states.FAILURE, 1),
                                       (states.SUCCESS, 5), (states.SUCCESS, 61),
                                       (states.PENDING, 0)]):
        TaskResult.objects.create(task_id=f"c{i}", task_name="t", status=status,
                                  finished=None if status == states.PENDING
                                  else now - timedelta(minutes=ago))
    start, done, failed = last_hour(now)
    assert start == now.replace(second=0) - timedelta(minutes=59)
    assert (done[-2], failed[-2], done[-6], failed[-6], sum(done), sum(failed)) == (
        2, 1, 1, 0, 3, 1)


def test_the_chart_is_an_svg_with_a_bar_per_busy_minute(root, broker):
    TaskResult.objects.create(task_id="f1", task_name="t", status=states.FAILURE,
                              finished=timezone.now())
    page = _live(root)
    assert '<svg id="throughput-chart"' in page
    assert page.count("<rect") == 2  # one finished bar, one failed bar in front
    assert "1 finished, 1 failed" in page


def test_failures_are_grouped_by_task_and_exception_and_link_to_the_filtered_list(root, broker):
    now = timezone.now()
    rows = [("a", "builtins.ValueError"), ("a", "builtins.ValueError"),
            ("a", "builtins.OSError"), ("b", "builtins.ValueError")]
    for i, (name, exc) in enumerate(rows):
        TaskResult.objects.create(task_id=f"x{i}", task_name=name, status=states.FAILURE,
                                  exception_type=exc, finished=now - timedelta(minutes=i))
    TaskResult.objects.create(task_id="old", task_name="a", status=states.FAILURE,
                              exception_type="builtins.ValueError",
                              finished=now - timedelta(hours=2))
    page = _live(root)
    first = page.index("builtins.ValueError</a></td><td class=\"num\">2</td>")
    assert first < page.index("builtins.OSError</a></td><td class=\"num\">1</td>")
    import html
    import re

    url = html.unescape(re.search(r'<a href="([^"]+)">a</a>', page).group(1))
    listed = root.get(url).content.decode()
    assert 'title="x0"' in listed and 'title="x1"' in listed
    assert 'title="x2"' not in listed and 'title="old"' not in listed


def test_a_view_only_staff_user_sees_the_dashboard_and_others_do_not(client, broker):
    user = User.objects.create_user("v", "v@example.com", "pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse(DASHBOARD)).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_taskresult"))
    assert client.get(reverse(DASHBOARD)).status_code == 200


def test_the_dashboard_says_when_the_broker_cannot_be_reached(root, settings, broker):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "redis://127.0.0.1:1/0"}
    page = _live(root)
    assert "the broker cannot be reached" in page


@pytest.mark.parametrize("page", ["dashboard", "dead letters", "confirmation"])
def test_djtasks_pages_have_the_running_djangos_breadcrumbs(root, broker, page):
    import django

    if page == "confirmation":
        from django.contrib.admin import helpers

        queued = tasks.add.delay(1, 2)
        response = root.post(reverse("admin:djtasks_taskresult_changelist"), {
            "action": "revoke_selected",
            helpers.ACTION_CHECKBOX_NAME: [TaskResult.objects.get(task_id=queued.id).pk]})
    else:
        name = DASHBOARD if page == "dashboard" else "admin:djtasks_deadletter_changelist"
        response = root.get(reverse(name))
    markup = '<ol class="breadcrumbs">' if django.VERSION >= (6, 0) else '<div class="breadcrumbs">'
    assert markup in response.content.decode()
