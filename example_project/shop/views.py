from decimal import Decimal
from pathlib import Path

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from djtasks import AsyncResult, states

from .forms import ReportForm, SignUpForm
from .models import Order, Report
from .tasks import generate_report, send_welcome_email

STARTER_ORDERS = [("Tea", 2, Decimal("4.50")), ("Mug", 1, Decimal("9.00")),
                  ("Biscuits", 3, Decimal("2.20"))]


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/home.html")


def signup(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            for product, quantity, price in STARTER_ORDERS:
                Order.objects.create(customer=user, product=product, quantity=quantity,
                                     unit_price=price)
            # Published when this transaction commits; a rollback sends nothing.
            result = send_welcome_email.delay(user.pk)
        login(request, user)
        request.session["welcome_task_id"] = result.id
        return redirect("reports")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def reports(request: HttpRequest) -> HttpResponse:
    form = ReportForm(request.POST or None,
                      initial={"month": timezone.now().strftime("%Y-%m")})
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            report = Report.objects.create(owner=request.user, month=form.cleaned_data["month"])
            result = generate_report.delay(report.pk)
            report.task_id = result.id
            report.save(update_fields=["task_id"])
        return redirect("reports")
    items = [(r, report_state(r)) for r in request.user.reports.all()[:20]]
    welcome = request.session.get("welcome_task_id")
    return render(request, "shop/reports.html", {
        "form": form, "items": items,
        "welcome_status": AsyncResult(welcome).status if welcome else None,
        # The page reloads itself (<meta http-equiv="refresh">) until every report is done.
        "refresh": any(state in UNFINISHED for _, state in items),
    })


UNFINISHED = (Report.Status.QUEUED, Report.Status.RUNNING)


def report_state(report: Report) -> str:
    """One state per report, from its task's state and its file: ``ready`` only
    once the task is SUCCESS and the CSV exists. The task marks the report ready
    a moment before its result is stored, so the row alone could say "ready"
    beside a PENDING task; a task that failed for good never marks it at all."""
    status = AsyncResult(report.task_id).status if report.task_id else states.PENDING
    if status == states.SUCCESS:
        ready = report.status == Report.Status.READY and report_path(report).is_file()
        return Report.Status.READY if ready else Report.Status.FAILED
    if status in (states.FAILURE, states.REVOKED):
        return Report.Status.FAILED
    if status in (states.STARTED, states.RETRY) or report.status != Report.Status.QUEUED:
        return Report.Status.RUNNING
    return Report.Status.QUEUED


def report_path(report: Report) -> Path:
    from django.conf import settings

    return Path(settings.MEDIA_ROOT) / "reports" / report.file_name


@login_required
def download(request: HttpRequest, pk: int) -> FileResponse:
    report = get_object_or_404(Report, pk=pk, owner=request.user)
    if report_state(report) != Report.Status.READY:
        raise Http404("report not ready")
    return FileResponse(open(report_path(report), "rb"), as_attachment=True,
                        filename=report.file_name, content_type="text/csv")
