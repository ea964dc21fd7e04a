"""The example's tasks. Every one takes ids, never model instances."""

import csv
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone

from djtasks import shared_task

from .models import Order, Report


@shared_task
def send_welcome_email(user_id: int) -> str:
    """Mail a welcome to a new user; returns the address it went to."""
    user = get_user_model().objects.get(pk=user_id)
    send_mail(
        subject="Welcome to the djtasks shop",
        message=f"Hello {user.username},\n\nthanks for signing up.\n",
        from_email=None,
        recipient_list=[user.email],
    )
    return user.email


@shared_task(bind=True, max_retries=2, default_retry_delay=5)
def generate_report(self, report_id: int) -> dict:
    """Write the CSV of a user's orders in a month; returns the row count and file."""
    report = Report.objects.select_related("owner").get(pk=report_id)
    Report.objects.filter(pk=report_id).update(status=Report.Status.RUNNING,
                                               task_id=self.request.id)
    year, month = (int(part) for part in report.month.split("-"))
    start = timezone.make_aware(datetime(year, month, 1))
    end = timezone.make_aware(datetime(year + month // 12, month % 12 + 1, 1))
    orders = Order.objects.filter(customer=report.owner, placed__gte=start, placed__lt=end)
    directory = settings.MEDIA_ROOT / "reports"
    directory.mkdir(parents=True, exist_ok=True)
    file_name = f"report-{report.pk}-{report.month}.csv"
    rows = 0
    with open(directory / file_name, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order", "placed", "product", "quantity", "unit_price", "total"])
        for order in orders.order_by("placed"):
            writer.writerow([order.pk, order.placed.isoformat(), order.product, order.quantity,
                             order.unit_price, order.quantity * order.unit_price])
            rows += 1
    Report.objects.filter(pk=report_id).update(status=Report.Status.READY, file_name=file_name,
                                               rows=rows)
    return {"rows": rows, "file": file_name}
