"""djtasks.testing: capture what the code enqueues through the real door,
assert on it, and run it in-process on the memory broker (docs/testing.md)."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import TestCase

from djtasks import AsyncResult, TaskArgumentError, shared_task, states
from djtasks import testing as djtasks_testing
from djtasks.brokers import get_broker
from djtasks.brokers.memory import MemoryBroker
from djtasks.conf import get_settings
from djtasks.models import TaskResult
from djtasks.testing import capture_tasks
from djtasks.worker import inline
from tests.app.models import Item

committed = pytest.mark.django_db(transaction=True)  # real commits, as outside a test
in_a_testcase = pytest.mark.django_db  # inside the test's transaction, as Django's TestCase


@shared_task
def greet(name):
    return f"hello {name}"


@shared_task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@shared_task
def fail():
    raise ValueError("no luck")


@shared_task
def greet_all(names):
    for name in names:
        greet.delay(name)


@shared_task
def greet_in_a_minute(name):
    greet.apply_async([name], countdown=60)


@shared_task
def greet_all_in_a_transaction(names):
    with transaction.atomic():
        for name in names:
            greet.delay(name)


@shared_task
def count_items():
    return Item.objects.count()


@shared_task(bind=True, max_retries=5, default_retry_delay=0)
def succeed_on_attempt(self, attempt):
    if self.request.retries + 1 < attempt:
        raise self.retry()
    return self.request.retries + 1


@shared_task(bind=True, max_retries=1, default_retry_delay=600)
def retry_in_ten_minutes(self):
    if self.request.retries == 0:
        raise self.retry()
    return "second attempt"


@shared_task(rate_limit="1/m")
def once_a_minute(n):
    return n


@shared_task
def again_and_again():
    again_and_again.delay()


# -- capturing ---------------------------------------------------------------------


@committed
def test_delay_is_captured_as_the_message_a_worker_would_decode(djtasks_capture):
    result = greet.delay("alice")
    [message] = djtasks_capture.messages
    assert (message.id, message.task, message.args) == (result.id, greet.name, ["alice"])
    assert message.queue == "default"


@committed
def test_messages_are_kept_in_the_order_they_were_enqueued(djtasks_capture):
    greet.delay("a")
    echo.delay(1)
    greet.delay("b")
    assert [(m.task, m.args) for m in djtasks_capture.messages] == [
        (greet.name, ["a"]), (echo.name, [1]), (greet.name, ["b"])]


@committed
def test_arguments_are_captured_after_the_codec_as_a_worker_sees_them(djtasks_capture):
    when = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
    echo.delay((1, 2), when=when)
    [message] = djtasks_capture.messages
    assert message.args == [[1, 2]]  # a tuple travels as a list
    assert message.kwargs == {"when": when}


@committed
def test_the_pending_row_is_written_as_for_a_real_broker(djtasks_capture):
    result = greet.delay("alice")
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING


@committed
def test_the_argument_rule_still_raises_at_enqueue(djtasks_capture):
    user = User.objects.create(username="bob")
    with pytest.raises(TaskArgumentError, match="pass name.pk instead of the User instance"):
        greet.delay(user)
    assert djtasks_capture.messages == []


@committed
def test_the_size_check_still_raises_at_enqueue(settings):
    settings.DJTASKS = {**settings.DJTASKS, "MAX_MESSAGE_BYTES": 1024}
    with capture_tasks() as captured:
        with pytest.raises(TaskArgumentError, match="MAX_MESSAGE_BYTES"):
            greet.delay("x" * 2000)
        assert captured.messages == []


@committed
def test_a_transaction_is_captured_when_it_commits(djtasks_capture):
    with transaction.atomic():
        greet.delay("alice")
        assert djtasks_capture.messages == []
    assert len(djtasks_capture.messages) == 1


@committed
def test_a_rolled_back_transaction_captures_nothing(djtasks_capture):
    with pytest.raises(RuntimeError), transaction.atomic():
        greet.delay("alice")
        raise RuntimeError("roll back")
    assert djtasks_capture.messages == []
    djtasks_capture.assert_not_enqueued(greet)


@in_a_testcase
def test_in_a_testcase_nothing_is_captured_until_the_commit_callbacks_run(djtasks_capture):
    greet.delay("alice")
    assert djtasks_capture.messages == []


@in_a_testcase
def test_on_commit_callbacks_that_execute_publish_and_are_captured(
        djtasks_capture, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        greet.delay("alice")
    djtasks_capture.assert_enqueued(greet, ["alice"])


@in_a_testcase
def test_on_commit_callbacks_captured_without_execute_publish_nothing(
        djtasks_capture, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        greet.delay("alice")
    assert len(callbacks) == 1
    assert djtasks_capture.messages == []


@in_a_testcase
def test_a_rolled_back_savepoint_in_a_testcase_captures_nothing(
        djtasks_capture, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        greet.delay("kept")
        with pytest.raises(RuntimeError), transaction.atomic():
            greet.delay("rolled back")
            raise RuntimeError
    assert [m.args for m in djtasks_capture.messages] == [["kept"]]


class CaptureInADjangoTestCase(TestCase):
    def test_capture_on_commit_callbacks_with_execute_publishes(self):
        with capture_tasks() as captured:
            with self.captureOnCommitCallbacks(execute=True):
                greet.delay("alice")
            captured.assert_enqueued(greet, ["alice"])
            [ran] = captured.run_all()
            self.assertEqual(AsyncResult(ran.id).get(timeout=1), "hello alice")

    def test_capture_on_commit_callbacks_without_execute_publishes_nothing(self):
        with capture_tasks() as captured, self.captureOnCommitCallbacks() as callbacks:
            greet.delay("alice")
        self.assertEqual(len(callbacks), 1)
        captured.assert_not_enqueued(greet)


@committed
def test_a_capture_switches_to_its_own_memory_broker_and_restores_the_setting():
    configured = get_settings().BROKER_URL
    with capture_tasks() as captured:
        assert get_broker() is captured.broker
        assert isinstance(captured.broker, MemoryBroker)
        assert get_settings().BROKER_URL == "memory://djtasks.testing"
    assert configured == get_settings().BROKER_URL
    assert get_broker() is not captured.broker


@committed
def test_a_capture_forgets_its_broker_and_what_it_held_afterwards():
    with capture_tasks() as captured:
        greet.delay("alice")
    assert captured.broker.queue_depths(["default"]) == {"default": 0}


@committed
def test_each_capture_has_a_fresh_broker(djtasks_capture):
    greet.delay("outer")
    with capture_tasks() as inner:
        greet.delay("inner")
        assert inner.broker is not djtasks_capture.broker
        assert inner.broker.queue_depths(["default"]) == {"default": 1}
    assert [m.args for m in inner.messages] == [["inner"]]
    assert [m.args for m in djtasks_capture.messages] == [["outer"]]
    assert djtasks_capture.broker.queue_depths(["default"]) == {"default": 1}


@committed
def test_always_eager_is_off_inside_a_capture(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ALWAYS_EAGER": True}
    with capture_tasks() as captured:
        result = greet.delay("alice")
    captured.assert_enqueued(greet, ["alice"])
    assert AsyncResult(result.id).status == states.PENDING


# -- assertions --------------------------------------------------------------------


@committed
def test_assert_enqueued_returns_the_matching_message(djtasks_capture):
    greet.delay("alice")
    result = greet.delay("bob")
    assert djtasks_capture.assert_enqueued(greet, ["bob"]).id == result.id


@committed
def test_assert_enqueued_takes_a_task_name_and_matches_any_arguments_left_out(djtasks_capture):
    echo.delay(1, key="value")
    djtasks_capture.assert_enqueued(echo.name)
    djtasks_capture.assert_enqueued(echo, kwargs={"key": "value"})


@committed
def test_assert_enqueued_compares_arguments_as_a_worker_sees_them(djtasks_capture):
    echo.delay((1, 2))
    djtasks_capture.assert_enqueued(echo, [(1, 2)])


@committed
def test_assert_enqueued_matches_message_fields(djtasks_capture):
    greet.apply_async(["alice"], queue="mail", priority=9)
    djtasks_capture.assert_enqueued(greet, queue="mail", priority=9)
    with pytest.raises(AssertionError):
        djtasks_capture.assert_enqueued(greet, queue="default")


@committed
def test_assert_enqueued_rejects_a_field_messages_do_not_have(djtasks_capture):
    greet.delay("alice")
    with pytest.raises(TypeError, match="no field colour"):
        djtasks_capture.assert_enqueued(greet, colour="red")


@committed
def test_assert_enqueued_times_counts_the_matching_messages(djtasks_capture):
    greet.delay("alice")
    greet.delay("alice")
    djtasks_capture.assert_enqueued(greet, ["alice"], times=2)
    with pytest.raises(AssertionError, match=r"enqueued 2 times, not once"):
        djtasks_capture.assert_enqueued(greet, ["alice"], times=1)


@committed
def test_assert_enqueued_failure_lists_what_was_enqueued(djtasks_capture):
    greet.delay("alice")
    echo.delay(1, key="value")
    with pytest.raises(AssertionError) as failure:
        djtasks_capture.assert_enqueued(greet, ["bob"])
    lines = str(failure.value).splitlines()
    assert lines[0] == f"{greet.name}('bob', ...) was not enqueued; 2 tasks were enqueued:"
    assert lines[1].startswith(f"  1. {greet.name}('alice') [queue 'default', id ")
    assert lines[2].startswith(f"  2. {echo.name}(1, key='value') [queue 'default', id ")


@committed
def test_assert_enqueued_failure_says_when_nothing_was_enqueued(djtasks_capture):
    with pytest.raises(AssertionError, match=r"was not enqueued; no tasks were enqueued\.$"):
        djtasks_capture.assert_enqueued(greet)


@in_a_testcase
def test_assert_enqueued_failure_names_the_tasks_waiting_for_a_commit(djtasks_capture):
    greet.delay("alice")
    with pytest.raises(AssertionError) as failure:
        djtasks_capture.assert_enqueued(greet, ["alice"])
    message = str(failure.value)
    assert "1 task waits for a transaction to commit" in message
    assert "captureOnCommitCallbacks(execute=True)" in message
    assert f"  - {greet.name}('alice')" in message


@committed
def test_assert_not_enqueued_fails_naming_the_match(djtasks_capture):
    greet.delay("alice")
    djtasks_capture.assert_not_enqueued(greet, ["bob"])
    djtasks_capture.assert_not_enqueued(echo)
    with pytest.raises(AssertionError, match=r"greet\(\.\.\.\) was enqueued once"):
        djtasks_capture.assert_not_enqueued(greet)


@committed
def test_for_task_lists_one_tasks_messages(djtasks_capture):
    greet.delay("a")
    echo.delay(1)
    greet.delay("b")
    assert [m.args for m in djtasks_capture.for_task(greet)] == [["a"], ["b"]]
    assert [m.args for m in djtasks_capture.for_task(echo.name)] == [[1]]


@committed
def test_assertions_still_work_after_the_block():
    with capture_tasks() as captured:
        greet.delay("alice")
    captured.assert_enqueued(greet, ["alice"])


# -- running -----------------------------------------------------------------------


@committed
def test_run_one_runs_the_first_message_and_writes_its_row(djtasks_capture):
    first = greet.delay("a")
    greet.delay("b")
    ran = djtasks_capture.run_one()
    assert ran is not None and ran.id == first.id
    assert first.get(timeout=1) == "hello a"
    assert TaskResult.objects.get(task_id=first.id).status == states.SUCCESS
    assert djtasks_capture.broker.queue_depths(["default"]) == {"default": 1}


@committed
def test_run_one_returns_none_when_nothing_is_due(djtasks_capture):
    assert djtasks_capture.run_one() is None


@committed
def test_run_all_runs_every_captured_message(djtasks_capture):
    greet.delay("a")
    greet.apply_async(["b"], queue="mail")
    ran = djtasks_capture.run_all()
    assert sorted(m.args[0] for m in ran) == ["a", "b"]
    assert TaskResult.objects.filter(status=states.SUCCESS).count() == 2


@committed
def test_run_all_runs_retries_until_done(djtasks_capture):
    result = succeed_on_attempt.delay(3)
    ran = djtasks_capture.run_all()
    assert [(m.id, m.retries) for m in ran] == [(result.id, 0), (result.id, 1), (result.id, 2)]
    assert result.get(timeout=1) == 3
    assert len(djtasks_capture.messages) == 1  # retries are runs, not new messages


@committed
def test_run_one_leaves_the_retry_it_asked_for_waiting(djtasks_capture):
    result = succeed_on_attempt.delay(2)
    djtasks_capture.run_one()
    assert AsyncResult(result.id).status == states.RETRY
    assert djtasks_capture.run_one().retries == 1
    assert result.get(timeout=1) == 2


@committed
def test_a_failing_task_is_recorded_as_a_failure_not_raised(djtasks_capture):
    result = fail.delay()
    [ran] = djtasks_capture.run_all()
    assert ran.id == result.id
    assert result.failed()
    with pytest.raises(ValueError, match="no luck"):
        result.get(timeout=1)


@committed
def test_run_all_leaves_what_the_tasks_enqueue_waiting(djtasks_capture):
    greet_all.delay(["a", "b"])
    assert [m.task for m in djtasks_capture.run_all()] == [greet_all.name]
    djtasks_capture.assert_enqueued(greet, ["a"])
    djtasks_capture.assert_enqueued(greet, ["b"])
    assert [m.args for m in djtasks_capture.run_all()] == [["a"], ["b"]]


@committed
def test_run_until_empty_runs_what_the_tasks_enqueue_too(djtasks_capture):
    greet_all.delay(["a", "b"])
    ran = djtasks_capture.run_until_empty()
    assert [m.task for m in ran] == [greet_all.name, greet.name, greet.name]
    assert djtasks_capture.run_one() is None


@committed
def test_an_eta_task_runs_only_when_scheduled_ones_are_included(djtasks_capture):
    result = greet.apply_async(["later"], countdown=3600)
    assert djtasks_capture.run_all() == []
    assert djtasks_capture.run_until_empty() == []
    [ran] = djtasks_capture.run_all(include_scheduled=True)
    assert ran.id == result.id
    assert result.get(timeout=1) == "hello later"


@committed
def test_include_scheduled_runs_etas_earliest_first(djtasks_capture):
    greet.apply_async(["in an hour"], countdown=3600)
    greet.apply_async(["in a minute"], countdown=60)
    ran = djtasks_capture.run_all(include_scheduled=True)
    assert [m.args for m in ran] == [["in a minute"], ["in an hour"]]


@committed
def test_a_retry_with_a_countdown_waits_unless_scheduled_ones_are_included(djtasks_capture):
    result = retry_in_ten_minutes.delay()
    assert len(djtasks_capture.run_all()) == 1
    assert AsyncResult(result.id).status == states.RETRY
    assert [m.retries for m in djtasks_capture.run_all(include_scheduled=True)] == [1]
    assert result.get(timeout=1) == "second attempt"


@committed
def test_run_all_puts_what_its_tasks_scheduled_back_to_wait_for_its_eta(djtasks_capture):
    greet_in_a_minute.delay("a")
    greet.apply_async(["in an hour"], countdown=3600)
    ran = djtasks_capture.run_all(include_scheduled=True)
    assert [m.task for m in ran] == [greet_in_a_minute.name, greet.name]
    assert djtasks_capture.broker.scheduled_count() == 1  # greet("a"), not run yet
    assert djtasks_capture.broker.queue_depths(["default"]) == {"default": 0}


@committed
def test_advance_moves_the_broker_clock_past_an_eta(djtasks_capture):
    result = greet.apply_async(["later"], countdown=60)
    djtasks_capture.advance(30)
    assert djtasks_capture.run_all() == []
    djtasks_capture.advance(31)
    assert [m.id for m in djtasks_capture.run_all()] == [result.id]


@committed
def test_a_rate_limited_task_waits_for_its_token_on_the_brokers_clock(djtasks_capture):
    for n in range(3):
        once_a_minute.delay(n)
    assert [m.args for m in djtasks_capture.run_all()] == [[0]]
    assert djtasks_capture.broker.scheduled_count() == 2  # deferred for their tokens
    ran = djtasks_capture.run_all(include_scheduled=True)  # a minute apart, on its clock
    assert sorted(m.args for m in ran) == [[1], [2]]


@committed
def test_a_revoked_task_does_not_run(djtasks_capture):
    result = greet.delay("alice")
    result.revoke()
    assert djtasks_capture.run_all() == []
    assert AsyncResult(result.id).status == states.REVOKED


@committed
def test_run_all_can_be_limited_to_some_queues(djtasks_capture):
    greet.delay("default")
    greet.apply_async(["mail"], queue="mail")
    assert [m.args for m in djtasks_capture.run_all(queues=["mail"])] == [["mail"]]
    assert djtasks_capture.broker.queue_depths(["default"]) == {"default": 1}


@committed
def test_a_task_that_enqueues_itself_for_ever_stops_at_the_run_limit(
        djtasks_capture, monkeypatch):
    monkeypatch.setattr(inline, "RUN_LIMIT", 5)
    again_and_again.delay()
    with pytest.raises(RuntimeError, match="5 tasks ran and more are due"):
        djtasks_capture.run_until_empty()


@committed
def test_running_after_the_block_raises():
    with capture_tasks() as captured:
        greet.delay("alice")
    with pytest.raises(RuntimeError, match="inside the capture_tasks"):
        captured.run_all()


@in_a_testcase
def test_a_task_run_in_a_testcase_sees_the_tests_rows_and_writes_its_own(
        djtasks_capture, django_capture_on_commit_callbacks):
    Item.objects.create(name="uncommitted")
    with django_capture_on_commit_callbacks(execute=True):
        result = count_items.delay()
    djtasks_capture.run_all()
    assert result.get(timeout=1) == 1
    assert TaskResult.objects.get(task_id=result.id).status == states.SUCCESS


@in_a_testcase
@pytest.mark.parametrize("task", [greet_all, greet_all_in_a_transaction])
def test_what_a_task_run_in_a_testcase_enqueues_is_published_as_it_ends(
        djtasks_capture, django_capture_on_commit_callbacks, task):
    with django_capture_on_commit_callbacks(execute=True):
        task.delay(["a", "b"])
    ran = djtasks_capture.run_until_empty()
    assert [m.args for m in ran[1:]] == [["a"], ["b"]]


@in_a_testcase
def test_what_a_run_publishes_is_not_published_again_by_an_enclosing_commit_capture(
        djtasks_capture, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        greet_all.delay(["a"])
    with django_capture_on_commit_callbacks(execute=True):
        djtasks_capture.run_all()
    assert len(djtasks_capture.for_task(greet)) == 1


# -- the module --------------------------------------------------------------------


def test_importing_djtasks_testing_reads_no_settings_and_no_models():
    code = ("import sys, djtasks.testing\n"
            "from django.conf import settings\n"
            "assert not settings.configured\n"
            "assert 'djtasks.models' not in sys.modules, sorted(sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=Path(djtasks_testing.__file__).resolve().parents[1])
