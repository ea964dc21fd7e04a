"""Schedules: Celery's crontab fields and day rule, intervals, one-offs, and
Vixie cron's daylight-saving rules checked against a table of UTC instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from djtasks.beat.schedules import as_schedule, clocked, crontab, schedule


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (zone, crontab fields, search from (UTC), expected next runs (UTC), what it shows)
DST_TABLE = [
    # Europe/London: clocks go 01:00 GMT -> 02:00 BST on 29 March 2026,
    # and 02:00 BST -> 01:00 GMT on 25 October 2026.
    ("Europe/London", {"minute": 30, "hour": 1}, "2026-03-28 12:00",
     ["2026-03-29 01:00", "2026-03-30 00:30"], "gap: fixed time runs once, at the change"),
    ("Europe/London", {"minute": 30, "hour": 1}, "2026-10-24 12:00",
     ["2026-10-25 00:30", "2026-10-26 01:30"], "repeat: fixed time runs at the first"),
    ("Europe/London", {"minute": 30}, "2026-03-29 00:00",
     ["2026-03-29 00:30", "2026-03-29 01:30", "2026-03-29 02:30"],
     "gap: wildcard hour skips the local times that do not exist"),
    ("Europe/London", {"minute": 30}, "2026-10-24 23:00",
     ["2026-10-24 23:30", "2026-10-25 00:30", "2026-10-25 01:30", "2026-10-25 02:30"],
     "repeat: wildcard hour runs at both 01:30s"),
    ("Europe/London", {"minute": 0, "hour": "1-2/1"}, "2026-10-24 22:00",
     ["2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00", "2026-10-26 01:00"],
     "repeat: a stepped hour is a wildcard: 01:00 BST, 01:00 GMT, 02:00 GMT"),
    # America/New_York: 02:00 EST -> 03:00 EDT on 8 March 2026; 02:00 EDT ->
    # 01:00 EST on 1 November 2026.
    ("America/New_York", {"minute": 30, "hour": 2}, "2026-03-07 12:00",
     ["2026-03-08 07:00", "2026-03-09 06:30"], "gap: at the change, 03:00 EDT"),
    ("America/New_York", {"minute": 30, "hour": 1}, "2026-10-31 12:00",
     ["2026-11-01 05:30", "2026-11-02 06:30"], "repeat: the first 01:30 (EDT)"),
    ("America/New_York", {"minute": "*/20", "hour": 1}, "2026-11-01 04:59",
     ["2026-11-01 05:00", "2026-11-01 05:20", "2026-11-01 05:40",
      "2026-11-01 06:00", "2026-11-01 06:20", "2026-11-01 06:40"],
     "repeat: a wildcard minute runs in both 01:00 hours"),
    ("America/New_York", {"minute": "0,30", "hour": 1}, "2026-11-01 04:59",
     ["2026-11-01 05:00", "2026-11-01 05:30", "2026-11-02 06:00"],
     "repeat: fixed minutes and hour run in the first 01:00 hour only"),
    # Australia/Lord_Howe shifts by 30 minutes: 02:00 +10:30 -> 02:30 +11 on
    # 4 October 2026; 02:00 +11 -> 01:30 +10:30 on 5 April 2026.
    ("Australia/Lord_Howe", {"minute": 15, "hour": 2}, "2026-10-03 00:00",
     ["2026-10-03 15:30", "2026-10-04 15:15"], "gap: 02:15 runs at the change"),
    ("Australia/Lord_Howe", {"minute": 45, "hour": 1}, "2026-04-04 00:00",
     ["2026-04-04 14:45", "2026-04-05 15:15"], "repeat: the first 01:45"),
    ("Australia/Lord_Howe", {"minute": 45, "hour": "0-23/1"}, "2026-04-04 13:00",
     ["2026-04-04 13:45", "2026-04-04 14:45", "2026-04-04 15:15", "2026-04-04 16:15"],
     "repeat: stepped hour runs at both 01:45s (cronsim alone drops the second)"),
    ("Australia/Lord_Howe", {"minute": "*/15"}, "2026-04-04 14:20",
     ["2026-04-04 14:30", "2026-04-04 14:45", "2026-04-04 15:00", "2026-04-04 15:15",
      "2026-04-04 15:30"], "repeat: every real quarter hour, 01:30-01:59 twice"),
    # Asia/Tokyo has no daylight saving: the same UTC time every day.
    ("Asia/Tokyo", {"minute": 30, "hour": 2}, "2026-03-28 12:00",
     ["2026-03-28 17:30", "2026-03-29 17:30", "2026-03-30 17:30"], "no DST"),
    ("UTC", {"minute": 0, "hour": 0, "day_of_month": 1}, "2026-01-15 00:00",
     ["2026-02-01 00:00", "2026-03-01 00:00"], "UTC"),
]


@pytest.mark.parametrize(("zone", "fields", "after", "expected", "why"), DST_TABLE,
                         ids=[f"{row[0]}-{row[4][:30]}" for row in DST_TABLE])
def test_crontab_runs_at_the_expected_utc_instants(zone, fields, after, expected, why):
    runs = crontab(**fields, timezone=zone).next_runs(utc(after), len(expected))
    assert [r.strftime("%Y-%m-%d %H:%M") for r in runs] == expected, why


def test_next_runs_are_aware_utc_datetimes():
    runs = crontab(minute=0, timezone="Europe/London").next_runs(utc("2026-06-01 00:00"), 3)
    assert all(r.tzinfo is not None and r.utcoffset() == timedelta(0) for r in runs)


def test_day_of_month_and_day_of_week_must_both_match_as_in_celery():
    friday_13th = crontab(minute=0, hour=9, day_of_month=13, day_of_week="fri", timezone="UTC")
    runs = friday_13th.next_runs(utc("2026-01-01 00:00"), 3)
    assert [r.date().isoformat() for r in runs] == ["2026-02-13", "2026-03-13", "2026-11-13"]


def test_celery_string_forms_are_accepted():
    weekdays = crontab(minute="*/30", hour="9-10", day_of_week="mon-fri", timezone="UTC")
    runs = weekdays.next_runs(utc("2026-03-06 10:45"), 3)  # a Friday
    assert [r.strftime("%a %H:%M") for r in runs] == ["Mon 09:00", "Mon 09:30", "Mon 10:00"]


def test_sunday_is_zero_or_seven_or_sun():
    after = utc("2026-03-02 00:00")
    assert (crontab(0, 0, day_of_week=0, timezone="UTC").next_runs(after, 1)
            == crontab(0, 0, day_of_week="sun", timezone="UTC").next_runs(after, 1)
            == crontab(0, 0, day_of_week=7, timezone="UTC").next_runs(after, 1)
            == [utc("2026-03-08 00:00")])


def test_a_list_of_ints_is_a_cron_list():
    assert crontab(minute=[0, 30], hour=12, timezone="UTC").next_runs(
        utc("2026-01-01 12:10"), 2) == [utc("2026-01-01 12:30"), utc("2026-01-02 12:00")]


@pytest.mark.parametrize(("field", "value"), [("minute", 60), ("hour", "25"),
                                               ("day_of_week", "funday"),
                                               ("month_of_year", 13), ("day_of_month", "0")])
def test_a_bad_field_is_named_by_validate(field, value):
    with pytest.raises(ValueError, match=f"crontab {field}="):
        crontab(**{field: value}).validate()


def test_a_bad_field_does_not_raise_when_the_crontab_is_made():
    crontab(minute=99)  # a settings module must import; the system check reports it


def test_an_unknown_time_zone_is_named():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        crontab(timezone="Mars/Olympus").validate()


def test_a_crontab_that_can_never_run_says_so():
    with pytest.raises(ValueError, match="never runs"):
        crontab(minute=0, hour=0, day_of_month=31, month_of_year=2).validate()


def test_interval_ticks_count_real_seconds_across_a_dst_change():
    every_hour = schedule(run_every=timedelta(hours=1))
    runs = every_hour.next_runs(utc("2026-03-29 00:10"), 3)
    assert [r - runs[0] for r in runs] == [timedelta(0), timedelta(hours=1), timedelta(hours=2)]


def test_interval_ticks_are_the_same_for_every_caller():
    every = schedule(run_every=30)
    assert every.next_runs(utc("2026-01-01 00:00:01"), 1) == \
        every.next_runs(utc("2026-01-01 00:00:29"), 1) == [utc("2026-01-01 00:00:30")]


def test_interval_ticks_between_two_times_are_capped_to_the_latest():
    ticks = schedule(run_every=60).ticks(utc("2026-01-01 00:00"), utc("2026-01-01 01:00"), 2)
    assert ticks == [utc("2026-01-01 00:58"), utc("2026-01-01 00:59"), utc("2026-01-01 01:00")]


def test_crontab_ticks_between_two_times_are_capped_to_the_latest():
    ticks = crontab(minute="*/15", timezone="UTC").ticks(
        utc("2026-01-01 00:00"), utc("2026-01-03 00:00"), 1)
    assert ticks == [utc("2026-01-02 23:45"), utc("2026-01-03 00:00")]


def test_clocked_runs_once_after_its_time():
    at = utc("2026-05-01 10:00")
    assert clocked(at).next_runs(utc("2026-05-01 09:00"), 5) == [at]
    assert clocked(at).next_runs(at, 5) == []


def test_a_naive_datetime_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="aware datetime"):
        clocked(datetime(2026, 5, 1))


@pytest.mark.parametrize("value", [timedelta(seconds=30), 30, 30.0])
def test_a_bare_timedelta_or_number_becomes_an_interval(value):
    assert as_schedule(value) == schedule(run_every=timedelta(seconds=30))


def test_a_schedule_of_another_type_is_refused():
    with pytest.raises(TypeError, match="a schedule must be"):
        as_schedule("every minute")
