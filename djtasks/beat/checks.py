"""System checks over ``DJTASKS['BEAT_SCHEDULE']`` (docs/checks.md, E010-E013)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..conf import get_settings
from .entries import code_entries

_HINTS = {
    "djtasks.E010": "use a registered task's name (module.function, as `manage.py runworker` "
                    "lists them), or fix the app's tasks.py",
    "djtasks.E011": "fix the crontab field: Celery's forms, e.g. minute='*/15', hour='9-17', "
                    "day_of_week='mon-fri'",
    "djtasks.E012": "use an IANA zone name such as 'Europe/London' (zoneinfo's names)",
    "djtasks.E013": "pass ids and plain data in the schedule's args and kwargs, and load "
                    "objects inside the task",
}


@checks.register("djtasks")
def check_beat_schedule(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for entry in code_entries(get_settings().BEAT_SCHEDULE):
        for check_id, message in entry.problems():
            errors.append(checks.Error(
                f"DJTASKS['BEAT_SCHEDULE'][{entry.name!r}] {message}.",
                hint=_HINTS[check_id], obj=entry.name, id=check_id,
            ))
    return errors
