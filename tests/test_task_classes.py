"""Custom Task classes (Celery's ``base=``): handlers in Celery's order, an
overridden ``__call__``, class attributes as option defaults, ``AsyncResult``,
``update_state`` with custom states, and the retry options. Each runs in a
real worker (``runworker --burst`` in this process, or a subprocess)."""

from __future__ import annotations

import uuid

import pytest

from djtasks import AsyncResult, Task, shared_task, states
from djtasks.models import TaskResult
from tests.app import celery_tasks as ct
from tests.conftest import kill_and_outlive, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _key() -> str:
    return f"journal:{uuid.uuid4().hex}"


def test_a_base_class_makes_the_task_an_instance_of_it():
    assert isinstance(ct.journaled, ct.JournalTask)
    assert ct.journaled.name == "tests.app.celery_tasks.journaled"


def test_base_must_be_a_task_subclass():
    with pytest.raises(TypeError, match="subclass of djtasks.Task"):
        shared_task(base=object)(lambda: None)


def test_class_attributes_are_option_defaults():
    assert ct.journaled.max_retries == 1 and ct.journaled.default_retry_delay == 0
    assert ct.journaled.acks_late is True
    assert ct.lookup_fails.autoretry_for == (LookupError,)
    assert ct.lookup_fails.retry_kwargs == {"max_retries": 2, "countdown": 0}


def test_a_decorator_option_overrides_the_class_attribute():
    class Late(Task):
        acks_late = True
        max_retries = 7

    def body():
        return None

    task = Late(body, name="tests.late_override", acks_late=False, max_retries=2)
    assert task.acks_late is False and task.max_retries == 2
    assert Late(body, name="tests.late_default").acks_late is True


def test_an_unknown_option_is_still_an_error():
    with pytest.raises(TypeError, match="unknown task option"):
        shared_task(base=ct.JournalTask, acks_lately=True)(lambda key: None)


def test_a_bad_class_attribute_is_an_error_naming_it():
    class Bad(Task):
        max_retries = "three"

    with pytest.raises(TypeError, match="max_retries"):
        Bad(lambda: None, name="tests.bad_class_attr")


def test_handlers_run_in_celerys_order_on_success(burst):
    key = _key()
    result = ct.journaled.delay(key, "succeed")
    burst()
    assert [e[0] for e in ct.journal(key)] == [
        "before_start", "run", "on_success", "after_return"]
    before, run, success, after = ct.journal(key)
    assert before[1:] == [result.id, result.id] and run[1] == result.id
    assert success[1:] == ["did succeed", result.id]
    assert after[1:] == [states.SUCCESS, "'did succeed'", None]


def test_on_failure_gets_the_exception_and_einfo(burst):
    key = _key()
    result = ct.journaled.delay(key, "fail")
    burst()
    entries = ct.journal(key)
    assert [e[0] for e in entries] == ["before_start", "run", "on_failure", "after_return"]
    assert entries[2][1:] == ["ValueError", "as asked", result.id, "ValueError", True]
    assert entries[3][1] == states.FAILURE
    assert result.status == states.FAILURE


def test_on_retry_then_on_success_on_the_next_run(burst):
    key = _key()
    result = ct.journaled.delay(key, "retry-then-succeed")
    burst()
    names = [e[0] for e in ct.journal(key)]
    assert names == ["before_start", "run", "on_retry", "after_return",
                     "before_start", "run", "on_success", "after_return"]
    assert ct.journal(key)[2][1:] == ["Retry", result.id, 0]
    assert result.get(timeout=5) == "did retry-then-succeed"


def test_handlers_run_in_a_prefork_child(worker_process):
    key = _key()
    result = ct.journaled.delay(key, "fail")
    worker = worker_process("--pool", "prefork", "-c", "1", "--burst")
    assert worker.wait(30) == 0, worker.output()
    assert [e[0] for e in ct.journal(key)] == [
        "before_start", "run", "on_failure", "after_return"]
    assert result.status == states.FAILURE


def test_an_overridden_call_wraps_the_workers_run(burst):
    key = _key()
    result = ct.wrapped.delay(key)
    burst()
    assert ct.journal(key) == [["enter", result.id, False], ["body", result.id, False],
                               ["exit"]]
    assert result.get(timeout=5) == "wrapped"


def test_an_overridden_call_wraps_a_plain_call_too():
    key = _key()
    assert ct.wrapped(key) == "wrapped"
    assert ct.journal(key) == [["enter", None, True], ["body", None, True], ["exit"]]


def test_task_async_result_names_the_task(burst):
    sent = ct.one_arg.delay(5)
    burst()
    found = ct.one_arg.AsyncResult(sent.id)
    assert isinstance(found, AsyncResult) and found.task_name == ct.one_arg.name
    assert found.get(timeout=5) == 5


# -- update_state -------------------------------------------------------------


def test_a_custom_state_shows_at_once_while_the_task_runs(worker_process):
    key = _key()
    result = ct.progress.delay(key, 3, 1.0)
    worker = worker_process("--pool", "prefork", "-c", "1", "--burst")
    wait_until(lambda: len(ct.journal(key)) >= 1 or worker.proc.poll() is not None,
               what="the first progress report")
    assert ct.journal(key), worker.output()
    fresh = AsyncResult(result.id)
    assert fresh.state == "PROGRESS" and fresh.status == "PROGRESS"
    assert fresh.info["total"] == 3 and fresh.info["done"] >= 1
    assert worker.wait(30) == 0, worker.output()
    assert result.get(timeout=5) == "finished"
    assert AsyncResult(result.id).info == "finished"


def test_a_custom_state_is_followed_by_the_final_state_in_the_row(burst):
    result = ct.progress.delay(_key(), 2, 0)
    burst()
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.SUCCESS


def test_a_late_started_row_does_not_hide_a_custom_state():
    assert states.may_follow("PROGRESS", 0, states.STARTED, 0) is False
    assert states.may_follow(states.STARTED, 0, "PROGRESS", 0) is True
    assert states.may_follow("PROGRESS", 0, "DOWNLOADING", 0) is True
    assert states.may_follow("PROGRESS", 0, states.SUCCESS, 0) is True
    assert states.may_follow(states.SUCCESS, 0, "PROGRESS", 0) is False


def test_the_database_enforces_custom_state_transitions(burst):
    from djtasks.message import Message

    msg = Message(id=f"cs-{uuid.uuid4().hex}", task="tests.app.tasks.add", args=[1, 2],
                  kwargs={}, queue="default")
    qs = TaskResult.objects
    qs.write([TaskResult.from_message(msg, "PROGRESS", result={"done": 1})])
    qs.write([TaskResult.from_message(msg, states.STARTED)])
    assert qs.get(task_id=msg.id).status == "PROGRESS"
    qs.write([TaskResult.from_message(msg, states.SUCCESS, result=3)])
    qs.write([TaskResult.from_message(msg, "PROGRESS", result={"done": 2})])
    assert qs.get(task_id=msg.id).status == states.SUCCESS


def test_a_killed_executors_custom_state_row_is_settled(worker_process):
    key = _key()
    result = ct.progress.delay(key, 50, 0.5)
    worker = worker_process("--pool", "prefork", "-c", "1", lease=1)
    wait_until(lambda: AsyncResult(result.id).state == "PROGRESS", what="PROGRESS")
    # Acked at start (acks_late=False), so it does not run again; its
    # PROGRESS row must not stay for ever: the next worker's reaper fails it.
    kill_and_outlive(worker_process, worker, lease=1)
    wait_until(lambda: AsyncResult(result.id).ready(), what="the row settled")
    assert AsyncResult(result.id).state == states.FAILURE


def test_update_state_with_a_ready_state_and_ignore_keeps_that_state(burst):
    result = ct.fail_by_hand.delay()
    burst()
    fresh = AsyncResult(result.id)
    assert fresh.state == states.FAILURE and fresh.info == {"why": "bad input"}


def test_update_state_refuses_meta_that_cannot_be_stored():
    def body(self):
        self.update_state(state="PROGRESS", meta={"when": object()})

    bad_meta = Task(body, name="tests.bad_meta", bind=True)  # not registered
    with pytest.raises(TypeError, match="update_state meta"):
        bad_meta()


def test_update_state_of_another_task_id(burst):
    sent = ct.one_arg.delay(1)  # PENDING row, not run yet
    ct.progress.update_state(task_id=sent.id, state="QUEUED_FOR_REVIEW", meta={"by": "x"})
    assert AsyncResult(sent.id).state == "QUEUED_FOR_REVIEW"
    assert AsyncResult(sent.id).info == {"by": "x"}
