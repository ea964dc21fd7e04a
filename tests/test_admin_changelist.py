"""The TaskResult change list: what it shows, its search and filters, its bounded count."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from djtasks import states
from djtasks.admin_changelist import distinct_values
from djtasks.models import TaskResult

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:djtasks_taskresult_changelist"
T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def root(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _row(task_id, **fields):
    fields.setdefault("task_name", "shop.tasks.report")
    return TaskResult.objects.create(task_id=task_id, **fields)


def _page(client, **params):
    return client.get(reverse(CHANGELIST), params).content.decode()


def test_the_list_shows_a_short_id_with_the_full_id_as_its_title(root):
    _row("0b7c2f8e-1111-4222-8333-944445555666")
    page = _page(root)
    assert '<code title="0b7c2f8e-1111-4222-8333-944445555666">0b7c2f8e</code>' in page


def test_the_list_shows_times_with_seconds_run_time_and_retries(root):
    _row("t1", status=states.SUCCESS, created=T0, started=T0 + timedelta(seconds=1),
         finished=T0 + timedelta(seconds=3.25), retries=2)
    page = _page(root)
    assert '<span title="2026-06-01 12:00:00">06-01 12:00:00</span>' in page
    assert "2.250 s" in page
    assert '<td class="field-retries">2</td>' in page


def test_a_custom_state_shows_its_progress_meta(root):
    _row("p1", status="PROGRESS", result={"current": 3, "total": 10})
    page = _page(root)
    assert "PROGRESS</strong> <small>" in page
    assert "current: 3" in page and "total: 10" in page


def test_search_finds_a_task_by_the_start_of_its_id(root):
    _row("abcdef12-0000-0000-0000-000000000000")
    _row("99999999-0000-0000-0000-000000000000")
    page = _page(root, q="abcdef12")
    assert "abcdef12-0000" in page and "99999999-0000" not in page


def test_search_finds_a_task_by_its_name(root):
    _row("r1", task_name="shop.tasks.send_invoice")
    _row("r2", task_name="shop.tasks.report")
    page = _page(root, q="invoice")
    assert 'title="r1"' in page and 'title="r2"' not in page


def test_search_finds_a_task_by_the_text_of_its_arguments(root):
    _row("a1", args=["order-4711"], kwargs={})
    _row("a2", args=[], kwargs={"customer": "Ada Lovelace"})
    _row("a3", args=["order-1"], kwargs={})
    assert 'title="a1"' in _page(root, q="ORDER-4711") and 'title="a3"' not in _page(
        root, q="order-4711")
    page = _page(root, q="lovelace")
    assert 'title="a2"' in page and 'title="a1"' not in page


def test_the_worker_filter_takes_a_host_or_one_executors_name(root):
    _row("w1", worker="web-1.100/0.1")
    _row("w2", worker="web-1.100/1.1")
    _row("w3", worker="web-10.7/0.1")
    page = _page(root, worker="web-1")
    assert 'title="w1"' in page and 'title="w2"' in page and 'title="w3"' not in page
    page = _page(root, worker="web-1.100/1.1")
    assert 'title="w2"' in page and 'title="w1"' not in page


def test_the_filters_keep_each_other_when_a_worker_is_typed_in(root):
    _row("k1", worker="h.1/0.1", status=states.FAILURE)
    page = _page(root, status__exact="FAILURE")
    assert '<input type="hidden" name="status__exact" value="FAILURE">' in page


def test_the_date_filter_narrows_by_created(root):
    _row("old", created=datetime.now(UTC) - timedelta(days=30))
    _row("new")
    page = _page(root, created__gte=(datetime.now(UTC) - timedelta(days=1)).isoformat())
    assert 'title="new"' in page and 'title="old"' not in page


def test_filter_choices_are_the_distinct_values_in_the_table(root):
    for i, (name, queue) in enumerate([("a.x", "default"), ("b.y", "reports"), ("a.x", "")]):
        _row(f"d{i}", task_name=name, queue=queue)
    assert distinct_values("task_name") == ["a.x", "b.y"]
    assert distinct_values("queue") == ["default", "reports"]
    assert distinct_values("task_name", limit=1) == ["a.x"]


def test_the_change_list_counts_no_further_than_its_limit(root, monkeypatch):
    from djtasks import admin_changelist

    monkeypatch.setattr(admin_changelist, "COUNT_LIMIT", 3)
    for i in range(5):
        _row(f"c{i}")
    with CaptureQueriesContext(connection) as queries:
        page = _page(root)
    assert "more than 3 task results" in page
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts)


def test_an_exact_count_is_shown_below_the_limit(root):
    _row("only")
    assert "1 task result" in _page(root)
