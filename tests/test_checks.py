"""System checks over registered tasks and settings (docs/checks.md), and the
DEBUG warning for serialized models."""

import logging

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.forms.models import model_to_dict

from djtasks import shared_task
from djtasks.lint import runtime
from djtasks.registry import registry
from tests.app import tasks
from tests.app.models import Item


def run_checks() -> list[checks.CheckMessage]:
    return checks.run_checks(tags=["djtasks"])


def ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


@pytest.fixture
def temporary_tasks():
    created = []

    def register(fn, **options):
        task = shared_task(**options)(fn)
        created.append(task.name)
        return task

    yield register
    for name in created:
        registry.unregister(name)


def test_the_test_project_passes_every_check():
    assert run_checks() == []


def test_e001_a_route_that_matches_no_task(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ROUTES": {"nowhere.tasks.*": {"queue": "x"}}}
    [error] = run_checks()
    assert error.id == "djtasks.E001" and "nowhere.tasks.*" in error.msg


def test_e002_a_parameter_annotated_with_a_model(temporary_tasks):
    def takes_item(item: Item) -> None: ...

    temporary_tasks(takes_item, name="tests.checks.takes_item")
    errors = [m for m in run_checks() if m.id == "djtasks.E002"]
    assert len(errors) == 1
    assert "'item'" in errors[0].msg and "item_id: int" in errors[0].hint


def test_e002_sees_optional_and_list_of_models(temporary_tasks):
    def takes_many(items: list[Item], maybe: Item | None = None) -> None: ...

    temporary_tasks(takes_many, name="tests.checks.takes_many")
    assert ids(m for m in run_checks() if m.id == "djtasks.E002") == ["djtasks.E002"] * 2


def test_e003_a_task_that_cannot_be_imported_by_name(temporary_tasks):
    def factory():
        def hidden(x: int) -> None: ...
        return hidden

    temporary_tasks(factory(), name="tests.checks.hidden")
    [error] = [m for m in run_checks() if m.id == "djtasks.E003"]
    assert "tests.checks.hidden" in error.msg


def test_e004_an_option_out_of_range(temporary_tasks):
    def limited(x: int) -> None: ...

    task = temporary_tasks(limited, name="tests.checks.limited")
    task.time_limit = -5  # set after the decorator, which would have refused it
    [error] = [m for m in run_checks() if m.id == "djtasks.E004"]
    assert "time_limit=-5" in error.msg


def test_w001_an_unannotated_parameter_named_like_an_object(temporary_tasks):
    def greet(user, item) -> None: ...

    temporary_tasks(greet, name="tests.checks.greet")
    warnings = [m for m in run_checks() if m.id == "djtasks.W001"]
    assert sorted(w.msg.split("'")[1] for w in warnings) == ["item", "user"]


def test_w001_can_be_silenced(temporary_tasks, settings):
    def greet(user) -> None: ...

    temporary_tasks(greet, name="tests.checks.greet2")
    # E003 too: a task defined inside a test cannot be imported by name.
    settings.SILENCED_SYSTEM_CHECKS = ["djtasks.E003"]
    with pytest.raises(SystemCheckError, match="djtasks.W001"):
        call_command("check", fail_level="WARNING", databases=["default"])
    settings.SILENCED_SYSTEM_CHECKS = ["djtasks.E003", "djtasks.W001"]
    call_command("check", fail_level="WARNING", databases=["default"])


def test_w002_soft_limit_not_below_hard_limit(temporary_tasks):
    def slow(x: int) -> None: ...

    temporary_tasks(slow, name="tests.checks.slow", time_limit=10, soft_time_limit=10)
    [warning] = [m for m in run_checks() if m.id == "djtasks.W002"]
    assert "soft_time_limit=10 >= time_limit=10" in warning.msg


def test_manage_py_check_fails_on_a_djtasks_error(temporary_tasks):
    def takes_item(item: Item) -> None: ...

    temporary_tasks(takes_item, name="tests.checks.takes_item2")
    with pytest.raises(SystemCheckError, match="djtasks.E002"):
        call_command("check", databases=["default"])


def test_runworker_refuses_to_start_on_a_check_error(temporary_tasks):
    def takes_item(item: Item) -> None: ...

    temporary_tasks(takes_item, name="tests.checks.takes_item3")
    with pytest.raises(SystemCheckError, match="djtasks.E002"):
        call_command("runworker", burst=True, pool="solo")


# -- DEBUG warning -------------------------------------------------------------------


@pytest.fixture
def debug(settings):
    settings.DEBUG = True
    runtime._warned.clear()
    yield
    runtime._warned.clear()


@pytest.mark.django_db
def test_debug_warns_once_for_model_to_dict_output(debug, broker, caplog):
    item = Item.objects.create(name="x")
    with caplog.at_level(logging.WARNING, logger="djtasks.lint"):
        tasks.echo.delay(model_to_dict(item))
        tasks.echo.delay(model_to_dict(item))
    warnings = [r for r in caplog.records if "looks like a serialized" in r.getMessage()]
    assert len(warnings) == 1
    assert "testapp.Item" in warnings[0].getMessage() and "args[0]" in warnings[0].getMessage()


@pytest.mark.django_db
def test_debug_warns_for_serializers_output(debug, broker, caplog):
    from django.core import serializers

    item = Item.objects.create(name="x")
    with caplog.at_level(logging.WARNING, logger="djtasks.lint"):
        tasks.echo.delay(items=serializers.serialize("python", [item]))
    assert "kwargs['items'][0]" in caplog.text


@pytest.mark.django_db
def test_no_warning_for_ordinary_dicts_or_outside_debug(debug, broker, caplog, settings):
    with caplog.at_level(logging.WARNING, logger="djtasks.lint"):
        tasks.echo.delay({"name": "x", "count": 2})
        settings.DEBUG = False
        tasks.echo.delay({"id": 1, "name": "x"})
    assert "looks like a serialized" not in caplog.text
