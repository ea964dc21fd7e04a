"""Schedule kinds: ``crontab``, ``schedule`` (an interval) and ``clocked`` (once).

Each is a small class behind ``Schedule``; every one answers
``next_runs(after, count)`` with aware UTC datetimes, which the runner, the
admin and tests all read. Names and arguments follow Celery's
``celery.schedules``; daylight-saving rules follow Vixie cron (docs/periodic.md).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from cronsim.cronsim import Field

__all__ = ["Schedule", "as_schedule", "clocked", "crontab", "schedule", "zone_named"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A zone's offset changes by less than this at any transition, so a local
# time's instants lie within SPREAD of its naive reading (see _Instants).
SPREAD = timedelta(hours=3)


def zone_named(name: str | None) -> ZoneInfo:
    """The ``ZoneInfo`` of ``name`` (None: Django's ``TIME_ZONE``, else UTC).

    Raises ``ValueError`` naming the zone if zoneinfo does not know it.
    """
    if name is None:
        from django.conf import settings

        name = getattr(settings, "TIME_ZONE", None) or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'Europe/London' or 'UTC'"
        ) from None


def _aware(when: datetime, name: str) -> datetime:
    if not isinstance(when, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (give it a tzinfo), not {when!r}")
    return when.astimezone(UTC)


class Schedule(ABC):
    """When a periodic task runs: a strategy the runner asks for ticks."""

    @abstractmethod
    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` ticks strictly after ``after`` (an aware
        datetime), as aware UTC datetimes in order; fewer if the schedule
        ends. Raises ``ValueError`` if the schedule is invalid."""

    @abstractmethod
    def describe(self) -> str:
        """A short human form, for the admin and logs."""

    @property
    def zone(self) -> ZoneInfo:
        """The zone its ticks are shown in (Django's ``TIME_ZONE`` unless it has its own)."""
        return zone_named(None)

    def validate(self) -> None:
        """Raise ``ValueError`` naming what is wrong; nothing if it is valid."""
        self.next_runs(EPOCH, 1)

    def ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The last ``limit + 1`` ticks at most in ``(after, until]``, in
        order (one more than ``limit`` so a caller sees a cap was hit).

        Walks back from ``until`` in widening windows, so a schedule last run
        a year ago costs a year's walk only if a short window has too few."""
        for window in (timedelta(days=1), timedelta(days=40), timedelta(days=800), None):
            start = after if window is None else max(after, until - window)
            out: list[datetime] = []
            cursor = start
            while True:
                batch = self.next_runs(cursor, 256)
                out.extend(t for t in batch if t <= until)
                del out[: max(0, len(out) - limit - 1)]
                if len(batch) < 256 or batch[-1] > until:
                    break
                cursor = batch[-1]
            if len(out) > limit or start == after:
                return out
        raise AssertionError("unreachable")  # the last window starts at ``after``

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class schedule(Schedule):  # Celery's name, lower case
    """Every ``run_every`` (a timedelta or seconds > 0) of real elapsed time.

    Ticks are ``anchor + n * run_every`` (``anchor``: an aware datetime,
    default 1970-01-01 UTC), so every runner computes the same ticks; daylight
    saving does not move them. Celery's ``schedule`` counts from the last run
    instead, which two runners would not agree on.
    """

    def __init__(self, run_every: timedelta | float, *, anchor: datetime | None = None) -> None:
        if isinstance(run_every, int | float) and not isinstance(run_every, bool):
            run_every = timedelta(seconds=run_every)
        if not isinstance(run_every, timedelta) or run_every <= timedelta(0):
            raise TypeError(f"run_every must be a timedelta or seconds > 0, not {run_every!r}")
        self.run_every = run_every
        self.anchor = EPOCH if anchor is None else _aware(anchor, "anchor")

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        after = _aware(after, "after")
        step = self.run_every
        n = (after - self.anchor) // step + 1
        first = self.anchor + step * max(n, 0)
        return [first + step * i for i in range(count)]

    def ticks(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        step = self.run_every
        last = self.anchor + step * ((_aware(until, "until") - self.anchor) // step)
        first = self.next_runs(after, 1)[0]
        count = min(limit + 1, max(0, (last - first) // step + 1))
        return [last - step * i for i in reversed(range(count))]

    def describe(self) -> str:
        return f"every {self.run_every}"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, schedule) and other.run_every == self.run_every
                and other.anchor == self.anchor)

    __hash__ = None  # type: ignore[assignment]


class clocked(Schedule):  # django-celery-beat's name, lower case
    """Once, at ``at`` (an aware datetime)."""

    def __init__(self, at: datetime) -> None:
        self.at = _aware(at, "at")

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        return [self.at] if count > 0 and self.at > _aware(after, "after") else []

    def describe(self) -> str:
        return f"once at {self.at.astimezone(self.zone):%Y-%m-%d %H:%M:%S %Z}"


CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
_CRON_FIELD = {"minute": Field.MINUTE, "hour": Field.HOUR, "day_of_month": Field.DAY,
               "month_of_year": Field.MONTH, "day_of_week": Field.DOW}


def _field_text(name: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value.strip().replace(" ", "") or "*"
    if isinstance(value, Iterable):
        items = list(value)
        if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return ",".join(str(v) for v in sorted(items))
    raise ValueError(f"crontab {name}={value!r}: give an int, a cron string such as "
                     "'*/15', '1-5' or 'mon-fri', or a list of ints")


class crontab(Schedule):  # Celery's name, lower case
    """Celery's ``crontab``: ``minute``, ``hour``, ``day_of_week`` (0 or
    ``sun`` is Sunday), ``day_of_month``, ``month_of_year``, each an int, a cron
    string (``"*/15"``, ``"1-5"``, ``"mon-fri"``, ``"0,30"``) or a list of ints;
    ``timezone`` an IANA name (default Django's ``TIME_ZONE``).

    When both ``day_of_month`` and ``day_of_week`` are restricted a day must
    match both, as in Celery (cron(5) accepts either). A bad field does not
    raise here (a settings module must import); ``validate()`` and
    ``next_runs`` raise ``ValueError`` naming it, and a system check reports it.
    Calendar matching is cronsim's, on local wall-clock times; the mapping
    to instants is Vixie cron's daylight-saving rule (docs/periodic.md).
    """

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", *,
                 timezone: str | None = None) -> None:
        self.raw = {"minute": minute, "hour": hour, "day_of_month": day_of_month,
                    "month_of_year": month_of_year, "day_of_week": day_of_week}
        self.timezone = timezone
        self._parsed: tuple[str, bool, set[Any] | None] | None = None

    def _parse(self) -> tuple[str, bool, set[Any] | None]:
        """The cronsim expression, whether it is a wildcard job, and the
        weekdays a day must also be in (Celery's AND rule), or None."""
        if self._parsed is not None:
            return self._parsed
        text = {name: _field_text(name, value) for name, value in self.raw.items()}
        for name, field in _CRON_FIELD.items():
            try:
                items = field.parse(text[name].upper())
            except (CronSimError, ValueError, IndexError):
                items = None
            if not items or any(not isinstance(i, int) or i < 0 for i in items):
                raise ValueError(self._bad(name, text[name]))
        weekdays = None
        dow = text["day_of_week"]
        if not text["day_of_month"].startswith("*") and not dow.startswith("*"):
            weekdays = {d % 7 for d in Field.DOW.parse(dow.upper())}  # type: ignore[operator]
            dow = "*"
        expr = " ".join([text["minute"], text["hour"], text["day_of_month"],
                         text["month_of_year"], dow])
        try:
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"crontab({self.describe()}) never runs: {exc}") from None
        # Vixie cron: a job whose minute or hour is a wildcard runs at each
        # real instant whose local time matches; a stepped hour counts as one.
        wildcard = (text["minute"].startswith("*") or text["hour"].startswith("*")
                    or "/" in text["hour"])
        self._parsed = (expr, wildcard, weekdays)
        return self._parsed

    def _bad(self, name: str, text: str) -> str:
        ranges = {"minute": "0-59", "hour": "0-23", "day_of_month": "1-31",
                  "month_of_year": "1-12 or jan-dec", "day_of_week": "0-6 or sun-sat"}
        return (f"crontab {name}={self.raw[name]!r} is not a cron field: use '*', a number "
                f"in {ranges[name]}, a range '1-5', a step '*/15' or a list '1,15' ({text!r})")

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.timezone)

    def validate(self) -> None:
        self._parse()
        _ = self.zone

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        for instant in self._instants(_aware(after, "after")):
            out.append(instant)
            if len(out) >= count:
                break
        return out

    def _instants(self, after: datetime) -> Iterator[datetime]:
        """Instants after ``after`` in order: cronsim walks wall-clock times
        (naive, so its own DST handling stays out); each maps to zero, one or
        two instants. Wall-clock order is not instant order in a repeated
        hour, so instants wait in a heap until no later wall-clock time can
        give an earlier one (SPREAD)."""
        expr, wildcard, weekdays = self._parse()
        zone = self.zone
        start = after.astimezone(zone).replace(tzinfo=None) - SPREAD
        walk = CronSim(expr, start)
        heap: list[datetime] = []
        last: datetime | None = None
        while True:
            try:
                local = next(walk)
            except StopIteration:  # cronsim gives up after 50 years without a match
                local = None
            if local is not None:
                if weekdays is not None and (local.weekday() + 1) % 7 not in weekdays:
                    continue
                for instant in _wall_to_instants(local, zone, wildcard):
                    heapq.heappush(heap, instant)
                horizon = local.replace(tzinfo=zone, fold=0).astimezone(UTC) - SPREAD
            while heap and (local is None or heap[0] <= horizon):
                instant = heapq.heappop(heap)
                if instant > after and (last is None or instant > last):
                    last = instant
                    yield instant
            if local is None:
                return

    def describe(self) -> str:
        text = []
        for name in CRON_FIELDS:
            try:
                text.append(_field_text(name, self.raw[name]))
            except ValueError:
                text.append(repr(self.raw[name]))
        zone = f" {self.timezone}" if self.timezone else ""
        return " ".join(text) + zone

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, crontab) and other.raw == self.raw
                and other.timezone == self.timezone)

    __hash__ = None  # type: ignore[assignment]


def _wall_to_instants(local: datetime, zone: ZoneInfo, wildcard: bool) -> list[datetime]:
    """The instants (UTC) a matching wall-clock time ``local`` stands for, by
    Vixie cron's rules: a time in a spring-forward gap is, for a fixed-time
    job, the instant the clocks change (none for a wildcard job); a time a
    fall-back repeats is its first occurrence for a fixed-time job, both
    for a wildcard job."""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) != local:  # in a gap
        if wildcard:
            return []
        later = local
        while True:  # the first real wall-clock minute after the gap
            later = later.replace(second=0) + timedelta(minutes=1)
            if later.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone).replace(
                    tzinfo=None) == later:
                return [later.replace(tzinfo=zone, fold=0).astimezone(UTC)]
    if first.utcoffset() != second.utcoffset() and wildcard:  # repeated by a fall-back
        return [as_utc, second.astimezone(UTC)]
    return [as_utc]


def as_schedule(value: Any) -> Schedule:
    """A ``BEAT_SCHEDULE`` entry's ``schedule``: a ``Schedule``, or a
    timedelta or number of seconds, which becomes ``schedule(run_every=...)``.
    Raises ``TypeError`` for anything else."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, timedelta) or (isinstance(value, int | float)
                                        and not isinstance(value, bool)):
        return schedule(run_every=value)
    raise TypeError(f"a schedule must be crontab(...), schedule(run_every=...), clocked(at=...), "
                    f"a timedelta or a number of seconds, not {value!r}")
