"""Django's own tests of ``django.tasks`` (``tests/tasks/`` of Django's
source), run against ``djtasks.backends.DjtasksBackend``.

Django's wheel has no tests, so this module needs a copy of that directory:
``scripts/django-tasks-tests.sh`` downloads the source of the installed
Django once and runs this module with ``DJANGO_TASKS_TESTS`` naming the
directory that holds ``tasks/``. Without it the module is skipped.

Each of Django's test classes runs with its ``TASKS`` pointing at
DjtasksBackend instead of the backend it was written for:

- ``TaskTestCase`` (the ``Task`` API; written on the dummy backend): its
  ``default`` alias is DjtasksBackend, enqueued tasks go to Redis and rows
  to the database, and no worker runs them.
- ``DummyBackendTestCase`` (a backend that only queues): the same.
- ``ImmediateBackendTestCase`` (a backend that runs the task in
  ``enqueue``): with ``DJTASKS['ALWAYS_EAGER']``.
- The custom-backend tests are about backends those tests define, not about
  any backend in ``TASKS``, so they are not run here.

The classes need the database (``databases``), which Django's
``SimpleTestCase`` otherwise refuses; ``setUp`` of the dummy-backend classes
empties the dummy backend's memory, which DjtasksBackend does not have.
Tests that cannot pass on DjtasksBackend by design are strict xfails below,
each with its reason; the few that switch ``TASKS`` back to one of Django's
backends inside the test are skipped, as they do not exercise DjtasksBackend.
docs/django-tasks.md sums the results up.
"""

import os
import sys
from typing import Any

import django
import pytest

if django.VERSION < (6, 0):
    pytest.skip("django.tasks exists from Django 6.0 on", allow_module_level=True)
TESTS_DIR = os.environ.get("DJANGO_TASKS_TESTS")
if not TESTS_DIR:
    pytest.skip("Django's tests/tasks/ is not here: run scripts/django-tasks-tests.sh "
                "(or set DJANGO_TASKS_TESTS to the directory that holds tasks/)",
                allow_module_level=True)
sys.path.append(TESTS_DIR)

from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402
from tasks import test_dummy_backend, test_immediate_backend, test_tasks  # noqa: E402

BACKEND = "djtasks.backends.DjtasksBackend"
EAGER = {**settings.DJTASKS, "ALWAYS_EAGER": True}

DUMMY_MEMORY = "uses the dummy backend's in-memory list of results (.results or .clear())"
ASYNC_DB = ("calls the synchronous get_result() or refresh() from an async test; a backend "
            "that reads a database raises SynchronousOnlyOperation there")
ON_COMMIT = ("DjtasksBackend publishes at commit by default (OPTIONS['ENQUEUE_ON_COMMIT']); "
             "Django's backends act at once")
SWITCHES_BACKEND = "switches TASKS to one of Django's backends inside the test"


def _mark(cls: type, marks: dict[str, Any]) -> None:
    """Give test methods of ``cls`` pytest marks (on copies of Django's functions)."""
    for name, mark in marks.items():
        setattr(cls, name, mark(_copy(getattr(cls, name))))


def _copy(fn: Any) -> Any:
    import types

    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__dict__.update(fn.__dict__)
    copy.__qualname__ = fn.__qualname__
    return copy


def _xfail(reason: str, *, subtests: bool = False) -> Any:
    # A test whose failures are in subTest()s passes itself (pytest reports
    # each failed subtest as SUBXFAIL), so it cannot be a strict xfail.
    return pytest.mark.xfail(reason=reason, strict=not subtests)


def _skip(reason: str) -> Any:
    return pytest.mark.skip(reason=reason)


def _on_djtasks(test: Any, **options: Any) -> Any:
    """A test method whose own ``@override_settings(TASKS=...)`` names
    DjtasksBackend instead (with ``options`` as its OPTIONS)."""
    return override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": options}})(
        test.__wrapped__)


@override_settings(TASKS={
    "default": {"BACKEND": BACKEND, "QUEUES": ["default", "queue_1"]},
    "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend",
                  "QUEUES": []},
    "missing": {"BACKEND": "does.not.exist"},
})
class TestTaskOnDjtasks(test_tasks.TaskTestCase):
    databases = {"default"}

    def setUp(self) -> None:
        pass


_mark(TestTaskOnDjtasks, {
    "test_using_correct_backend": _xfail("asserts the default backend is a DummyBackend"),
    "test_get_backend": _xfail("asserts the default backend is a DummyBackend"),
    "test_enqueue_task": _xfail(DUMMY_MEMORY),
    "test_enqueue_task_async": _xfail(DUMMY_MEMORY),
    "test_refresh_result": _xfail(ASYNC_DB),
    "test_get_missing_result": _xfail(ASYNC_DB),
})


@override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": []}})
class TestDummyOnDjtasks(test_dummy_backend.DummyBackendTestCase):
    databases = {"default"}

    def setUp(self) -> None:
        pass


_mark(TestDummyOnDjtasks, {
    "test_using_correct_backend": _xfail("asserts the backend is a DummyBackend"),
    "test_enqueue_task": _xfail(DUMMY_MEMORY, subtests=True),
    "test_enqueue_task_async": _xfail(DUMMY_MEMORY, subtests=True),
    "test_refresh_result": _xfail(DUMMY_MEMORY + ", to change a result behind its back"),
    "test_refresh_result_async": _xfail(DUMMY_MEMORY + ", to change a result behind its back"),
    "test_get_missing_result": _xfail(ASYNC_DB),
    "test_clear": _xfail(DUMMY_MEMORY),
    "test_validate_on_enqueue": _skip(SWITCHES_BACKEND),
    "test_validate_on_aenqueue": _skip(SWITCHES_BACKEND),
})


class TestDummyTransactionOnDjtasks(test_dummy_backend.DummyBackendTransactionTestCase):
    test_doesnt_wait_until_transaction_commit_by_default = _on_djtasks(
        test_dummy_backend.DummyBackendTransactionTestCase
        .test_doesnt_wait_until_transaction_commit_by_default)


_mark(TestDummyTransactionOnDjtasks, {
    "test_doesnt_wait_until_transaction_commit_by_default": _xfail(DUMMY_MEMORY),
})


@override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": []}}, DJTASKS=EAGER)
class TestImmediateOnDjtasks(test_immediate_backend.ImmediateBackendTestCase):
    databases = {"default"}


_mark(TestImmediateOnDjtasks, {
    "test_using_correct_backend": _xfail("asserts the backend is an ImmediateBackend"),
    "test_cannot_get_result": _xfail(
        "expects NotImplementedError, and DjtasksBackend supports get_result (called from "
        "this async test, its database read raises SynchronousOnlyOperation instead)"),
    "test_cannot_refresh_result": _xfail(
        "expects NotImplementedError, and DjtasksBackend supports get_result (an eager run "
        "writes no row, so refreshing raises TaskResultDoesNotExist instead)"),
    "test_cannot_pass_run_after": _xfail("DjtasksBackend supports run_after"),
    "test_validate_on_enqueue": _skip(SWITCHES_BACKEND),
    "test_validate_on_aenqueue": _skip(SWITCHES_BACKEND),
})


@override_settings(DJTASKS=EAGER)
class TestImmediateTransactionOnDjtasks(
        test_immediate_backend.ImmediateBackendTransactionTestCase):
    test_doesnt_wait_until_transaction_commit_by_default = _on_djtasks(
        test_immediate_backend.ImmediateBackendTransactionTestCase
        .test_doesnt_wait_until_transaction_commit_by_default)


_mark(TestImmediateTransactionOnDjtasks, {
    "test_doesnt_wait_until_transaction_commit_by_default": _xfail(ON_COMMIT),
})


class TestImmediateTransactionOnDjtasksWithoutOnCommit(
        test_immediate_backend.ImmediateBackendTransactionTestCase):
    """The same test with ``OPTIONS['ENQUEUE_ON_COMMIT'] = False``: then it passes."""

    test_doesnt_wait_until_transaction_commit_by_default = override_settings(DJTASKS=EAGER)(
        _on_djtasks(test_immediate_backend.ImmediateBackendTransactionTestCase
                    .test_doesnt_wait_until_transaction_commit_by_default,
                    ENQUEUE_ON_COMMIT=False))
