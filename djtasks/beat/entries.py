"""Schedule entries: ``DJTASKS['BEAT_SCHEDULE']`` (Celery's entry shape), the
built-in housekeeping schedules, and the checks both share with the admin."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..options import CALL_OPTIONS, OPTIONS
from .schedules import Schedule, as_schedule, schedule

__all__ = ["ENTRY_KEYS", "ENTRY_OPTIONS", "HOUSEKEEPING", "MISSED_POLICIES", "Entry",
           "code_entries", "entry_from_setting", "validate_beat_schedule"]

MISSED_POLICIES = ("once", "skip", "all")
ENTRY_KEYS = ("task", "schedule", "args", "kwargs", "options", "missed")
ENTRY_OPTIONS = tuple(o.name for o in CALL_OPTIONS)  # queue, priority, expires, time limits

# The built-in clean-ups, ordinary schedules a project overrides by giving
# the same name in BEAT_SCHEDULE (None turns one off).
HOUSEKEEPING: dict[str, dict[str, Any]] = {
    "djtasks.cleanup_results": {"task": "djtasks.cleanup_results",
                                "schedule": schedule(run_every=timedelta(hours=1))},
    "djtasks.trim_dead_letters": {"task": "djtasks.trim_dead_letters",
                                  "schedule": schedule(run_every=timedelta(hours=1))},
    "djtasks.trim_workers": {"task": "djtasks.trim_workers",
                             "schedule": schedule(run_every=timedelta(hours=1))},
}


@dataclass(frozen=True)
class Entry:
    """One schedule the runner fires: from code (``source="code"``) or a
    ``PeriodicTask`` row (``"database"``). ``options`` are per-call options
    of ``apply_async`` (queue, priority, expires, time limits)."""

    name: str
    task: str
    schedule: Schedule
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    missed: str = "once"
    source: str = "code"

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong with it, as (check id, message) pairs: an unknown
        task (E010), a bad schedule (E011), an unknown time zone (E012),
        arguments that break the ID-not-object rule (E013)."""
        from ..registry import registry

        out: list[tuple[str, str]] = []
        try:
            self.schedule.validate()
        except ValueError as exc:
            out.append(("djtasks.E012" if "time zone" in str(exc) else "djtasks.E011",
                        str(exc)))
        if self.task not in registry:
            out.append(("djtasks.E010", f"names task {self.task!r}, which is not registered"))
            return out
        problem = argument_problem(self.task, self.args, self.kwargs)
        if problem:
            out.append(("djtasks.E013", problem))
        return out


def argument_problem(task_name: str, args: Any, kwargs: Any) -> str | None:
    """Why ``args``/``kwargs`` could not be sent to ``task_name``, checked as
    ``apply_async`` checks them (``TaskArgumentError``), or None."""
    from ..exceptions import TaskArgumentError
    from ..registry import registry

    task = registry.get(task_name)
    try:
        task.encode_message(task.build_message(args, kwargs))
    except TaskArgumentError as exc:
        return str(exc)
    except TypeError as exc:  # args not a list, kwargs not a dict
        return str(exc)
    return None


def _bad(name: str, what: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"DJTASKS['BEAT_SCHEDULE'][{name!r}] {what} (docs/periodic.md).")


def entry_from_setting(name: str, raw: Mapping[str, Any]) -> Entry:
    """An ``Entry`` from one ``BEAT_SCHEDULE`` item; raises
    ``ImproperlyConfigured`` naming the entry and key for a wrong shape."""
    if not isinstance(raw, Mapping):
        raise _bad(name, f"is {raw!r}; expected a dict with 'task' and 'schedule', or None")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise _bad(name, f"has unknown key(s) {', '.join(unknown)}; known: {', '.join(ENTRY_KEYS)}")
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise _bad(name, f"has task={task!r}; expected a registered task's name")
    try:
        when = as_schedule(raw.get("schedule"))
    except TypeError as exc:
        raise _bad(name, f"has {exc}") from None
    args, kwargs = raw.get("args", []), raw.get("kwargs", {})
    if not isinstance(args, list | tuple):
        raise _bad(name, f"has args={args!r}; expected a list")
    if not isinstance(kwargs, Mapping):
        raise _bad(name, f"has kwargs={kwargs!r}; expected a dict")
    options = dict(raw.get("options") or {})
    bad_keys = sorted(set(options) - set(ENTRY_OPTIONS))
    if bad_keys:
        raise _bad(name, f"has unknown option(s) {', '.join(bad_keys)}; known: "
                         f"{', '.join(ENTRY_OPTIONS)}")
    for key, value in options.items():
        try:
            if not (key == "expires" and isinstance(value, datetime)):
                OPTIONS[key].check(key, value)
        except TypeError as exc:
            raise _bad(name, f"has option {exc}") from None
    missed = raw.get("missed", "once")
    if missed not in MISSED_POLICIES:
        raise _bad(name, f"has missed={missed!r}; expected one of {', '.join(MISSED_POLICIES)}")
    return Entry(name=name, task=task, schedule=when, args=list(args), kwargs=dict(kwargs),
                 options=options, missed=missed)


def validate_beat_schedule(raw: Any) -> None:
    """Check ``BEAT_SCHEDULE``'s shape at settings load; raise ``ImproperlyConfigured``.
    Task names, crontab fields, zones and arguments are system checks (the
    registry is not ready when settings load)."""
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"DJTASKS['BEAT_SCHEDULE'] is {raw!r}; expected a dict of name -> entry.")
    for name, item in raw.items():
        if not isinstance(name, str) or not name or len(name) > 200:
            raise _bad(str(name), "needs a name of 1 to 200 characters")
        if item is not None:
            entry_from_setting(name, item)


def code_entries(beat_schedule: Mapping[str, Any]) -> list[Entry]:
    """The schedules in code: the housekeeping ones, then ``beat_schedule``'s
    (a name given there replaces a housekeeping one; None removes it)."""
    merged: dict[str, Any] = {**HOUSEKEEPING, **beat_schedule}
    return [entry_from_setting(name, raw) for name, raw in merged.items() if raw is not None]
