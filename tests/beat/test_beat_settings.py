"""DJTASKS['BEAT_SCHEDULE']: Celery's entry shape checked at settings load,
and system checks for what needs the registry (docs/checks.md E010-E013)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from djtasks.beat.entries import HOUSEKEEPING, code_entries
from djtasks.conf import load
from djtasks.schedules import crontab, schedule
from tests.app.models import Item


def beat_errors(settings, entries) -> list[checks.CheckMessage]:
    settings.DJTASKS = {**settings.DJTASKS, "BEAT_SCHEDULE": entries}
    return [m for m in checks.run_checks(tags=["djtasks"]) if m.obj in entries]


def test_a_celery_shaped_entry_loads():
    s = load({"BEAT_SCHEDULE": {"nightly": {
        "task": "tests.app.tasks.record", "schedule": crontab(minute=30, hour=2),
        "args": ["n"], "kwargs": {}, "options": {"queue": "reports", "expires": 3600},
        "missed": "all"}}})
    (entry,) = [e for e in code_entries(s.BEAT_SCHEDULE) if e.name == "nightly"]
    assert (entry.task, entry.args, entry.options, entry.missed) == (
        "tests.app.tasks.record", ["n"], {"queue": "reports", "expires": 3600}, "all")


@pytest.mark.parametrize("every", [timedelta(seconds=30), 30])
def test_a_bare_timedelta_or_seconds_is_an_interval(every):
    s = load({"BEAT_SCHEDULE": {"beat": {"task": "tests.app.tasks.record", "schedule": every}}})
    (entry,) = [e for e in code_entries(s.BEAT_SCHEDULE) if e.name == "beat"]
    assert entry.schedule == schedule(run_every=timedelta(seconds=30))


@pytest.mark.parametrize(("entry", "message"), [
    ({"task": "x", "schedule": 5, "every": 3}, "unknown key"),
    ({"schedule": 5}, "task=None"),
    ({"task": "x", "schedule": "hourly"}, "a schedule must be"),
    ({"task": "x", "schedule": 5, "missed": "twice"}, "missed='twice'"),
    ({"task": "x", "schedule": 5, "options": {"countdown": 3}}, "unknown option"),
    ({"task": "x", "schedule": 5, "options": {"priority": 12}}, "priority must be"),
    ({"task": "x", "schedule": 5, "args": "abc"}, "args='abc'"),
])
def test_a_wrong_entry_shape_stops_start_up_naming_it(entry, message):
    with pytest.raises(ImproperlyConfigured, match=r"BEAT_SCHEDULE'\]\['bad'\]") as info:
        load({"BEAT_SCHEDULE": {"bad": entry}})
    assert message in str(info.value)


def test_housekeeping_schedules_are_on_by_default_and_at_least_hourly():
    entries = {e.name: e for e in code_entries({})}
    assert set(entries) == set(HOUSEKEEPING) == {
        "djtasks.cleanup_results", "djtasks.trim_dead_letters", "djtasks.trim_workers"}
    for entry in entries.values():
        assert entry.schedule.run_every <= timedelta(hours=1)  # type: ignore[attr-defined]


def test_housekeeping_is_overridden_by_name_and_turned_off_with_none():
    entries = {e.name: e for e in code_entries({
        "djtasks.cleanup_results": {"task": "djtasks.cleanup_results", "schedule": 600},
        "djtasks.trim_workers": None})}
    assert entries["djtasks.cleanup_results"].schedule == schedule(run_every=600)
    assert "djtasks.trim_workers" not in entries


def test_housekeeping_entries_pass_the_checks(settings):
    assert beat_errors(settings, {}) == []


def test_check_finds_an_unknown_task(settings):
    (error,) = beat_errors(settings, {"typo": {"task": "tests.app.tasks.recrod", "schedule": 5}})
    assert error.id == "djtasks.E010" and "recrod" in error.msg


def test_check_finds_a_bad_crontab_field(settings):
    (error,) = beat_errors(settings, {"bad": {"task": "tests.app.tasks.record",
                                              "schedule": crontab(minute=75), "args": ["k"]}})
    assert error.id == "djtasks.E011" and "minute=75" in error.msg


def test_check_finds_an_unknown_time_zone(settings):
    (error,) = beat_errors(settings, {"tz": {
        "task": "tests.app.tasks.record", "args": ["k"],
        "schedule": crontab(minute=0, timezone="Europe/Londn")}})
    assert error.id == "djtasks.E012" and "Europe/Londn" in error.msg


@pytest.mark.django_db
def test_check_finds_an_object_where_an_id_belongs(settings):
    item = Item.objects.create(name="lamp")
    (error,) = beat_errors(settings, {"obj": {"task": "tests.app.tasks.get_item",
                                              "schedule": 60, "args": [item]}})
    assert error.id == "djtasks.E013" and "pass" in error.msg and "pk" in error.msg
