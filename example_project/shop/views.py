from decimal import Decimal

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from djtasks import AsyncResult

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
    items = [(r, AsyncResult(r.task_id).status if r.task_id else "-")
             for r in request.user.reports.all()[:20]]
    welcome = request.session.get("welcome_task_id")
    return render(request, "shop/reports.html", {
        "form": form, "items": items,
        "welcome_status": AsyncResult(welcome).status if welcome else None,
        "refresh": any(r.status in ("queued", "running") for r, _ in items),
    })


@login_required
def download(request: HttpRequest, pk: int) -> FileResponse:
    from django.conf import settings

    report = get_object_or_404(Report, pk=pk, owner=request.user)
    if report.status != Report.Status.READY:
        raise Http404("report not ready")
    path = settings.MEDIA_ROOT / "reports" / report.file_name
    return FileResponse(open(path, "rb"), as_attachment=True, filename=report.file_name,
                        content_type="text/csv")
