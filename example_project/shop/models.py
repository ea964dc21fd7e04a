from django.conf import settings
from django.db import models


class Order(models.Model):
    """Something real to report on: the example shop's orders."""

    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                 related_name="orders")
    product = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField(default=1)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    placed = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-placed"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product}"


class Report(models.Model):
    """A CSV report a user asked for; a task fills in ``file_name``."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        READY = "ready"
        FAILED = "failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="reports")
    month = models.CharField(max_length=7, help_text="YYYY-MM")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    task_id = models.CharField(max_length=255, blank=True)
    file_name = models.CharField(max_length=255, blank=True)
    rows = models.PositiveIntegerField(default=0)
    requested = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-requested"]

    def __str__(self) -> str:
        return f"report {self.month} for {self.owner}"
