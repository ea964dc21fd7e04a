"""Beat's tables: ``PeriodicTask`` (schedules edited in the admin, and a
read-only mirror of the code's) and ``ScheduleState`` (each schedule's last
tick, the row a runner's claim moves forward)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from .entries import MISSED_POLICIES, Entry
from .schedules import Schedule, clocked, crontab, schedule, zone_named


class ScheduleState(models.Model):
    """The last tick of one schedule (by name), code's or the database's.

    A runner claims tick T by moving ``last_tick`` from before T to T in one
    conditional UPDATE, in the transaction that enqueues T's task: the row
    and the task commit together or not at all (docs/periodic.md).
    """

    name = models.CharField(max_length=200, unique=True)
    last_tick = models.DateTimeField(help_text="the latest tick run or passed over")
    last_run_at = models.DateTimeField(null=True, blank=True,
                                       help_text="when a runner last published a run")
    last_task_id = models.CharField(max_length=255, blank=True)
    total_runs = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "schedule state"

    def __str__(self) -> str:
        return f"{self.name} at {self.last_tick:%Y-%m-%d %H:%M:%S}"


KINDS = (("interval", "interval"), ("crontab", "crontab"), ("clocked", "clocked (once)"))
SOURCES = (("admin", "admin"), ("code", "code"))  # code: BEAT_SCHEDULE, read-only


def _check_zone(name: str) -> None:
    if name:
        try:
            zone_named(name)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class PeriodicTask(models.Model):
    """One schedule: an interval, a crontab or a one-off (clocked) time.

    Rows with ``source="admin"`` are the database's schedules; rows with
    ``source="code"`` mirror ``BEAT_SCHEDULE`` so the admin shows every
    schedule in one list, and are never run from the row.
    """

    name = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=255, help_text="a registered task's name")
    source = models.CharField(max_length=8, choices=SOURCES, default="admin", editable=False)
    kind = models.CharField(max_length=8, choices=KINDS, default="crontab")
    every = models.DurationField(null=True, blank=True, help_text="interval: how often")
    minute = models.CharField(max_length=120, default="*")
    hour = models.CharField(max_length=120, default="*")
    day_of_week = models.CharField(max_length=64, default="*")
    day_of_month = models.CharField(max_length=124, default="*")
    month_of_year = models.CharField(max_length=64, default="*")
    clocked_at = models.DateTimeField(null=True, blank=True, help_text="clocked: when")
    timezone = models.CharField(max_length=64, blank=True, validators=[_check_zone],
                                help_text="IANA zone of a crontab; blank: TIME_ZONE")
    enabled = models.BooleanField(default=True)
    args = models.JSONField(default=list, blank=True, help_text="a JSON list: ids, not objects")
    kwargs = models.JSONField(default=dict, blank=True, help_text="a JSON object")
    queue = models.CharField(max_length=200, blank=True)
    priority = models.PositiveSmallIntegerField(null=True, blank=True)
    expires = models.PositiveIntegerField(null=True, blank=True,
                                          help_text="seconds after its tick a run is dropped")
    missed = models.CharField(max_length=4, default="once",
                              choices=[(p, p) for p in MISSED_POLICIES])
    description = models.TextField(blank=True)
    changed = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "periodic task"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_schedule(self) -> Schedule:
        """The row's schedule object; ``ValidationError`` if a field it needs is empty."""
        if self.kind == "interval":
            if not self.every or self.every <= timedelta(0):
                raise ValidationError({"every": "an interval needs a duration > 0"})
            return schedule(run_every=self.every)
        if self.kind == "clocked":
            if self.clocked_at is None:
                raise ValidationError({"clocked_at": "a clocked schedule needs a time"})
            return clocked(self.clocked_at)
        return crontab(minute=self.minute, hour=self.hour, day_of_week=self.day_of_week,
                       day_of_month=self.day_of_month, month_of_year=self.month_of_year,
                       timezone=self.timezone or None)

    def entry(self) -> Entry:
        options: dict[str, Any] = {"queue": self.queue or None, "priority": self.priority,
                                   "expires": self.expires}
        return Entry(name=self.name, task=self.task, schedule=self.get_schedule(),
                     args=list(self.args), kwargs=dict(self.kwargs),
                     options={k: v for k, v in options.items() if v is not None},
                     missed=self.missed, source="database")

    def clean(self) -> None:
        """The checks of a ``BEAT_SCHEDULE`` entry (E010-E013) as form errors."""
        from ..conf import get_settings
        from .entries import code_entries

        if self.source == "admin" and any(
                e.name == self.name for e in code_entries(get_settings().BEAT_SCHEDULE)):
            raise ValidationError({"name": f"{self.name!r} is a schedule in code "
                                           "(BEAT_SCHEDULE); pick another name"})
        if not isinstance(self.args, list):
            raise ValidationError({"args": "args must be a JSON list, e.g. [42]"})
        if not isinstance(self.kwargs, dict):
            raise ValidationError({"kwargs": 'kwargs must be a JSON object, e.g. {"id": 42}'})
        errors: dict[str, list[str]] = {}
        for check_id, message in self.entry().problems():
            where = {"djtasks.E010": "task", "djtasks.E012": "timezone",
                     "djtasks.E013": "args"}.get(check_id)
            if check_id == "djtasks.E011":
                where = next((f for f in ("minute", "hour", "day_of_week", "day_of_month",
                                          "month_of_year") if f"crontab {f}=" in message),
                             "minute")
            errors.setdefault(where or "task", []).append(message)
        if errors:
            raise ValidationError(errors)

    # The run record lives in ScheduleState, which a runner's claim moves
    # forward; these read it.
    def state(self) -> ScheduleState | None:
        return ScheduleState.objects.filter(name=self.name).first()
