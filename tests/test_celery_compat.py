"""Celery's retry options, Ignore and Reject, ignore_result and headers per
call, and the argument check at call time (``Task.typing``), each against a
real worker (``runworker --burst`` in this process)."""

from __future__ import annotations

import inspect
import logging
import uuid

import pytest

from djtasks import AsyncResult, Ignore, Reject, Retry, states
from djtasks.brokers import get_broker
from djtasks.exceptions import DjtasksError
from djtasks.models import TaskResult
from tests.app import celery_tasks as ct
from tests.app.tasks import count

pytestmark = pytest.mark.django_db(transaction=True)


def _counter() -> str:
    return f"compat:{uuid.uuid4().hex}"


# -- retries ------------------------------------------------------------------


def test_retry_kwargs_max_retries_bounds_automatic_retries(burst):
    c = _counter()
    result = ct.lookup_fails.delay(c, "index")
    burst()
    assert count(c) == 3  # the run and retry_kwargs' 2 retries
    assert result.status == states.FAILURE
    assert isinstance(result.result, IndexError)


def test_dont_autoretry_for_fails_at_once(burst):
    c = _counter()
    result = ct.lookup_fails.delay(c, "key")  # KeyError is a LookupError, but excluded
    burst()
    assert count(c) == 1 and result.status == states.FAILURE


def test_retry_max_retries_overrides_the_tasks(burst):
    c = _counter()
    result = ct.retry_up_to.delay(c, 3)  # max_retries=0 on the task, 3 per retry()
    burst()
    assert result.get(timeout=5) == 4


def test_throws_is_logged_at_info_without_a_traceback(burst, caplog):
    c = _counter()
    with caplog.at_level(logging.INFO, logger="djtasks.worker"):
        result = ct.lookup_fails.delay(c, "perm")
        burst()
    line = next(r for r in caplog.records if result.id in r.getMessage()
                and "failed" in r.getMessage())
    assert line.levelno == logging.INFO and "Traceback" not in line.getMessage()
    assert "PermissionError" in line.getMessage()
    assert result.status == states.FAILURE


def test_an_unexpected_error_still_logs_its_traceback(burst, caplog):
    with caplog.at_level(logging.INFO, logger="djtasks.worker"):
        result = ct.journaled.delay(f"journal:{uuid.uuid4().hex}", "fail")
        burst()
    line = next(r for r in caplog.records if result.id in r.getMessage()
                and "failed" in r.getMessage())
    assert line.levelno == logging.ERROR and "Traceback" in line.getMessage()


# -- Ignore and Reject ------------------------------------------------------------


def test_control_flow_signals_are_not_djtasks_errors():
    for signal in (Ignore, Reject, Retry):
        assert not issubclass(signal, DjtasksError)


def test_ignore_settles_the_row_as_revoked_ignored(burst):
    c = _counter()
    result = ct.ignore_me.delay(c)
    burst()
    assert count(c) == 1
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.REVOKED and "ignored" in row.exception_message


def test_reject_without_requeue_dead_letters_the_message(burst):
    c = _counter()
    result = ct.reject_me.delay(c, False)
    burst()
    assert count(c) == 1
    letters = [d for d in get_broker().dead_letters() if d.id.startswith(result.id)]
    assert len(letters) == 1 and "not today" in letters[0].reason
    assert AsyncResult(result.id).status == states.FAILURE
    assert get_broker().queue_depths(["default"])["default"] == 0


def test_reject_with_requeue_runs_the_message_again(burst):
    c = _counter()
    result = ct.reject_me.delay(c, True)
    burst()
    assert count(c) == 2
    assert result.get(timeout=5) is None and result.status == states.SUCCESS
    assert not [d for d in get_broker().dead_letters() if d.id.startswith(result.id)]


def test_reject_without_requeue_on_the_database_broker(settings, key_prefix, burst):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    c = _counter()
    result = ct.reject_me.delay(c, False)
    burst()
    letters = [d for d in get_broker().dead_letters() if d.id.startswith(result.id)]
    assert len(letters) == 1 and "not today" in letters[0].reason
    assert AsyncResult(result.id).status == states.FAILURE


# -- ignore_result and headers per call ------------------------------------------


def test_ignore_result_per_call_writes_no_row(burst):
    c = _counter()
    result = ct.process_pid.apply_async([c], ignore_result=True)
    assert not TaskResult.objects.filter(task_id=result.id).exists()
    burst()
    assert count(c) == 1
    assert not TaskResult.objects.filter(task_id=result.id).exists()


def test_ignore_result_false_per_call_stores_an_ignoring_tasks_result(burst):
    from tests.app.tasks import fire_and_forget

    result = fire_and_forget.apply_async([_counter()], ignore_result=False)
    burst()
    assert TaskResult.objects.get(task_id=result.id).status == states.SUCCESS


def test_headers_travel_to_self_request_headers(burst):
    result = ct.show_headers.apply_async(headers={"tenant": "acme", "trace": [1, 2]})
    burst()
    assert result.get(timeout=5) == {"tenant": "acme", "trace": [1, 2]}


def test_headers_must_be_json_data():
    with pytest.raises(TypeError, match="headers"):
        ct.show_headers.apply_async(headers={"when": object()})


def test_no_headers_is_an_empty_dict(burst):
    result = ct.show_headers.delay()
    burst()
    assert result.get(timeout=5) == {}


# -- the argument check at call time (Task.typing) ----------------------------------


def test_a_misspelt_call_option_is_refused_at_delay():
    with pytest.raises(TypeError) as err:
        ct.one_arg.delay(1, countdwn=5)
    text = str(err.value)
    assert "tests.app.celery_tasks.one_arg()" in text and "countdwn" in text
    assert "countdown is an apply_async option" in text


def test_too_many_arguments_are_refused_before_anything_is_written():
    with pytest.raises(TypeError, match=r"one_arg\(\): too many positional arguments"):
        ct.one_arg.delay(1, 2)
    assert not TaskResult.objects.filter(task_name=ct.one_arg.name).exists()


def test_a_missing_argument_is_refused():
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        ct.one_arg.apply_async()


def test_a_bound_task_skips_self():
    ct.bound_two.delay(1)
    ct.bound_two.delay(1, b=2)
    with pytest.raises(TypeError, match="bound_two"):
        ct.bound_two.delay(1, 2, 3)


def test_typing_false_opts_out():
    result = ct.untyped.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING


def test_reject_with_requeue_on_the_database_broker(settings, key_prefix, burst):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    c = _counter()
    result = ct.reject_me.delay(c, True)
    burst()
    assert count(c) == 2 and result.status == states.SUCCESS


def test_an_eager_ignore_is_not_propagated(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ALWAYS_EAGER": True, "EAGER_PROPAGATES": True}
    result = ct.ignore_me.delay(_counter())
    assert result.status == states.IGNORED


@pytest.mark.parametrize(("args", "kwargs", "ok"), [
    ((1,), {}, True), ((), {"a": 1}, True), ((1,), {"b": 2}, True), ((1, 2), {}, True),
    ((), {}, False), ((1,), {"a": 2}, False), ((1, 2, 3), {}, False), ((), {"c": 1}, False),
    ((), {"b": 1}, False),
])
def test_the_fast_argument_check_agrees_with_signature_bind(args, kwargs, ok):
    try:
        inspect.signature(ct.bound_two.fn).bind(None, *args, **kwargs)  # None: its self
        binds = True
    except TypeError:
        binds = False
    assert binds is ok  # the table is what Python itself says
    if ok:
        ct.bound_two.check_arguments(args, kwargs)
    else:
        with pytest.raises(TypeError, match="bound_two"):
            ct.bound_two.check_arguments(args, kwargs)


def test_a_broker_error_after_a_task_ran_does_not_run_it_again(burst, monkeypatch):
    from redis.client import Pipeline
    from redis.exceptions import ConnectionError as RedisConnectionError

    real = Pipeline.execute
    failed = []

    def execute(self, *args, **kwargs):
        if not failed and any("dead" in str(args) for args, _ in self.command_stack):
            failed.append(True)
            raise RedisConnectionError("Redis went away while dead-lettering")
        return real(self, *args, **kwargs)

    c = _counter()
    ct.reject_me.delay(c, False)  # at most once: acked when it started
    monkeypatch.setattr(Pipeline, "execute", execute)
    burst()
    assert failed  # the error came after the run, on its way out
    assert count(c) == 1  # the executor did not start it again once Redis was back
