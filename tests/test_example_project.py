"""The example site through HTTP: the sign-up mail and CSV reports.

Most tests capture what the views enqueue with ``djtasks.testing`` (inside
the test's transaction, on the memory broker) and run it in-process; one
runs the shop end to end on Redis with a real worker; the last ones check the
reports page's states against the rows.
"""

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.utils import timezone

from djtasks import AsyncResult, states
from example_project.shop.models import Report
from example_project.shop.tasks import generate_report, send_welcome_email

ALICE = {"username": "alice", "email": "alice@example.com",
         "password1": "a-long-passw0rd!", "password2": "a-long-passw0rd!"}


def sign_up(client, **fields):
    response = client.post("/signup/", {**ALICE, **fields})
    assert response.status_code in (200, 302), response.content.decode()[:2000]
    return response


# -- with djtasks.testing ---------------------------------------------------------


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """``with commit():`` runs the on-commit callbacks of the block, as a
    commit of the view's transaction would (the test's own never commits)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def shopper(client, djtasks_capture, commit):
    """A signed-up, logged-in client whose welcome mail has gone out."""
    with commit():
        sign_up(client)
    djtasks_capture.run_all()
    return client


@pytest.mark.django_db
def test_signup_enqueues_the_welcome_mail_with_the_users_pk(client, djtasks_capture, commit):
    with commit():
        assert sign_up(client).status_code == 302
    user = User.objects.get(username="alice")
    djtasks_capture.assert_enqueued(send_welcome_email, args=[user.pk], times=1)
    assert mail.outbox == []  # enqueued, not run
    [ran] = djtasks_capture.run_all()
    assert AsyncResult(ran.id).get(timeout=1) == "alice@example.com"
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "alice" in mail.outbox[0].body


@pytest.mark.django_db
def test_a_signup_that_fails_validation_enqueues_no_mail(client, djtasks_capture, commit):
    with commit():
        assert sign_up(client, password2="something else").status_code == 200
    djtasks_capture.assert_not_enqueued(send_welcome_email)


@pytest.mark.django_db
def test_a_report_request_enqueues_its_report_on_the_reports_queue(
        shopper, djtasks_capture, commit):
    with commit():
        shopper.post("/reports/", {"month": "2026-01"})
    report = Report.objects.get()
    message = djtasks_capture.assert_enqueued(generate_report, args=[report.pk],
                                              queue="reports")
    assert report.task_id == message.id


@pytest.mark.django_db
def test_the_report_task_counts_the_months_orders(shopper, djtasks_capture, commit):
    with commit():
        shopper.post("/reports/", {"month": timezone.now().strftime("%Y-%m")})
    djtasks_capture.run_all()
    report = Report.objects.get()
    assert (report.status, report.rows) == (Report.Status.READY, 3)  # the starter orders


@pytest.mark.django_db
def test_a_report_that_is_not_ready_does_not_download(shopper, commit):
    with commit():
        shopper.post("/reports/", {"month": "2026-01"})
    report = Report.objects.get()
    assert shopper.get(f"/reports/{report.pk}/download/").status_code == 404


# -- end to end: Redis and a worker ----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_report_is_generated_by_the_worker_and_downloads(client, burst):
    sign_up(client)
    page = client.post("/reports/", {"month": timezone.now().strftime("%Y-%m")},
                       follow=True).content.decode()
    assert "queued" in page
    report = Report.objects.get()
    assert AsyncResult(report.task_id).status == states.PENDING
    burst("-Q", "default,reports")
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert report.rows == 3  # the starter orders of the sign-up
    assert AsyncResult(report.task_id).get(timeout=1)["rows"] == 3
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]  # the welcome mail ran too
    response = client.get(f"/reports/{report.pk}/download/")
    assert response["Content-Type"] == "text/csv"
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["order", "placed", "product"]
    assert sorted(r[2] for r in rows[1:]) == ["Biscuits", "Mug", "Tea"]


# -- the reports page: one state per report, refreshed until every one is done ----


REFRESH = '<meta http-equiv="refresh" content="2">'


def report_with_task(shopper, settings, tmp_path, *, report_status, task_status, file=True):
    from djtasks.models import TaskResult

    settings.MEDIA_ROOT = tmp_path
    user = User.objects.get(username="alice")
    report = Report.objects.create(owner=user, month="2026-01", task_id=f"t-{task_status}",
                                   status=report_status, file_name="r.csv", rows=3)
    if task_status != states.PENDING:
        TaskResult.objects.create(task_id=report.task_id, task_name=generate_report.name,
                                  status=task_status)
    if file:
        (tmp_path / "reports").mkdir()
        (tmp_path / "reports" / "r.csv").write_text("order\n")
    return report


def state_cell(page: str) -> str:
    return page.split('<td class="status">')[1].split("</td>")[0]


@pytest.mark.django_db
def test_a_report_marked_ready_before_its_task_succeeded_is_shown_running_and_refreshes(
    shopper, settings, tmp_path
):
    # The task writes READY a moment before its SUCCESS row is stored.
    report = report_with_task(shopper, settings, tmp_path, report_status=Report.Status.READY,
                              task_status=states.PENDING)
    page = shopper.get("/reports/").content.decode()
    assert state_cell(page) == "running"
    assert REFRESH in page and "Download" not in page
    assert shopper.get(f"/reports/{report.pk}/download/").status_code == 404


@pytest.mark.django_db
def test_a_queued_report_refreshes_the_page(shopper, settings, tmp_path):
    report_with_task(shopper, settings, tmp_path, report_status=Report.Status.QUEUED,
                     task_status=states.PENDING, file=False)
    page = shopper.get("/reports/").content.decode()
    assert state_cell(page) == "queued" and REFRESH in page


@pytest.mark.django_db
def test_a_report_is_ready_when_its_task_succeeded_and_its_file_exists(
    shopper, settings, tmp_path
):
    report = report_with_task(shopper, settings, tmp_path, report_status=Report.Status.READY,
                              task_status=states.SUCCESS)
    page = shopper.get("/reports/").content.decode()
    assert state_cell(page) == "ready" and REFRESH not in page
    assert f"/reports/{report.pk}/download/" in page


@pytest.mark.django_db
@pytest.mark.parametrize(("report_status", "task_status", "file"), [
    (Report.Status.RUNNING, states.FAILURE, False),   # failed for good: never marked
    (Report.Status.READY, states.SUCCESS, False),     # its file is gone
])
def test_a_report_whose_task_failed_or_file_is_missing_is_failed_and_stops_refreshing(
    shopper, settings, tmp_path, report_status, task_status, file
):
    report_with_task(shopper, settings, tmp_path, report_status=report_status,
                     task_status=task_status, file=file)
    page = shopper.get("/reports/").content.decode()
    assert state_cell(page) == "failed" and REFRESH not in page and "Download" not in page
