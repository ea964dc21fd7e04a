"""``async def`` tasks: run on one event loop per executor, with retries, soft
and hard time limits and revoke as for any task."""

import signal

import pytest

from djtasks import AsyncResult, revoke, states
from djtasks.exceptions import SoftTimeLimitExceeded
from djtasks.models import TaskResult
from tests.app import tasks
from tests.app.tasks import count
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_async_task_runs_in_the_worker_and_stores_its_result(burst):
    result = tasks.async_add.delay(20, 22)
    burst()
    assert result.get(timeout=1) == 42


def test_async_tasks_of_one_executor_share_one_event_loop(burst):
    first, second = tasks.async_loop_id.delay(), tasks.async_loop_id.delay()
    burst()
    assert first.get(timeout=1) == second.get(timeout=1)


def test_an_async_task_retries(burst):
    result = tasks.async_retry_once.delay()
    burst()
    assert result.get(timeout=1) == 1


def test_an_async_task_past_its_soft_limit_is_cancelled_and_fails(burst, counter):
    key = counter("async-soft")
    result = tasks.async_soft_limited.delay(key)
    burst()
    assert count(key + ":cleanup") == 1  # it saw the cancellation and cleaned up
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=1)


def test_a_revoked_async_task_never_runs(burst, counter):
    result = tasks.async_add.delay(1, 1)
    revoke(result.id)
    burst()
    assert AsyncResult(result.id).status == states.REVOKED


def test_an_async_task_runs_eagerly_with_apply():
    assert tasks.async_add.apply(args=[2, 2]).get() == 4


@pytest.mark.subprocess
def test_an_async_task_past_its_hard_limit_is_killed_with_its_executor(
        worker_process, counter):
    key = counter("async-hang")
    result = tasks.async_hangs.delay(key)
    after = tasks.async_add.delay(1, 2)
    worker = worker_process("-c", "1")
    wait_until(lambda: AsyncResult(result.id).status == states.FAILURE, timeout=20,
               what="the hard time limit to kill the async task")
    row = TaskResult.objects.get(task_id=result.id)
    assert row.exception_type == "djtasks.exceptions.TimeLimitExceeded"
    assert after.get(timeout=10) == 3  # the replacement executor goes on
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
