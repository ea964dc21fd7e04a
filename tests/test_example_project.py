"""The example site end to end through HTTP: sign-up mail and CSV reports, run by a worker."""

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.core import mail

from djtasks import AsyncResult, states
from djtasks.models import TaskResult
from example_project.shop.models import Report

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_up(client, burst):
    response = client.post("/signup/", {
        "username": "alice", "email": "alice@example.com",
        "password1": "a-long-passw0rd!", "password2": "a-long-passw0rd!",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    return client


def test_signup_enqueues_the_welcome_mail_in_its_transaction(signed_up, burst):
    user = User.objects.get(username="alice")
    row = TaskResult.objects.get(task_name="example_project.shop.tasks.send_welcome_email")
    assert row.status == states.PENDING
    assert row.args == [user.pk]  # an id, not the user
    burst("-Q", "default,reports")
    row.refresh_from_db()
    assert row.status == states.SUCCESS
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "alice" in mail.outbox[0].body


def test_report_is_generated_by_the_worker_and_downloads(signed_up, burst):
    from django.utils import timezone

    month = timezone.now().strftime("%Y-%m")
    page = signed_up.post("/reports/", {"month": month}, follow=True).content.decode()
    assert "queued" in page
    report = Report.objects.get()
    assert AsyncResult(report.task_id).status == states.PENDING
    burst("-Q", "default,reports")
    report.refresh_from_db()
    assert report.status == Report.Status.READY
    assert report.rows == 3  # the starter orders of the sign-up
    assert AsyncResult(report.task_id).get(timeout=1)["rows"] == 3
    response = signed_up.get(f"/reports/{report.pk}/download/")
    assert response["Content-Type"] == "text/csv"
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["order", "placed", "product"]
    assert sorted(r[2] for r in rows[1:]) == ["Biscuits", "Mug", "Tea"]


def test_reports_route_to_the_reports_queue(signed_up, broker):
    from django.utils import timezone

    signed_up.post("/reports/", {"month": timezone.now().strftime("%Y-%m")})
    assert broker.queue_depths(["reports"]) == {"reports": 1}


def test_a_report_that_is_not_ready_does_not_download(signed_up):
    signed_up.post("/reports/", {"month": "2026-01"})
    report = Report.objects.get()
    assert signed_up.get(f"/reports/{report.pk}/download/").status_code == 404
