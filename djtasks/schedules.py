"""``from djtasks.schedules import crontab``: the schedule kinds, as Celery's
``celery.schedules`` names them (they live in djtasks/beat/schedules.py)."""

from .beat.schedules import Schedule, clocked, crontab, schedule

__all__ = ["Schedule", "clocked", "crontab", "schedule"]
