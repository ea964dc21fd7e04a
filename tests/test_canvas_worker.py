"""The canvas on real worker subprocesses (``manage.py runworker``), on the
Redis and the database broker: a chord of 1,000 members calls its callback
exactly once, also when its worker is killed -9 mid-chord with acks_late."""

import json
import os
import signal

import pytest

from djtasks import GroupResult, chain, chord, group, states
from djtasks.exceptions import WorkerLostError
from djtasks.models import TaskResult
from tests.app import canvas_tasks as ct
from tests.app import tasks
from tests.app.tasks import _redis, count
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["redis", "db"])
def start(request, settings, worker_process):
    """``start(*args, **kwargs)``: a worker subprocess on this test's broker."""
    if request.param == "redis":
        return worker_process
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    return lambda *a, **k: worker_process(*a, broker_url="db://default", **k)


def test_a_chord_of_1000_members_calls_its_callback_exactly_once(start, counter):
    c = counter("callback")
    result = chord(ct.double.s(i) for i in range(1000))(ct.tsum.s(counter=c))
    start("-c", "2")
    assert result.get(timeout=120) == 2 * sum(range(1000))
    assert count(c) == 1
    args = json.loads(_redis().lrange(c + ":args", 0, -1)[0])
    assert args == [2 * i for i in range(1000)]
    assert result.parent.completed_count() == 1000


def test_a_chord_survives_its_worker_killed_9_mid_chord_with_acks_late(start, counter):
    members, c = counter("members"), counter("callback")
    result = chord(ct.double_late.s(i, members, 0.005) for i in range(1000))(
        ct.tsum.s(counter=c))
    worker = start("-c", "2", lease=1)
    wait_until(lambda: count(members) >= 300, timeout=60, what="300 members run")
    worker.kill_group()
    assert count(c) == 0 and count(members) < 1000
    # The survivor takes the dead consumers' messages back when their lease
    # runs out; a callback claimed but not yet published would come from
    # the outbox.
    start("-c", "2", lease=1, extra_env={"DJTASKS_TEST_OUTBOX_GRACE": "2"})
    assert result.get(timeout=120) == 2 * sum(range(1000))
    assert count(c) == 1
    assert count(members) >= 1000  # the interrupted ones ran again
    assert TaskResult.objects.filter(group_id=result.parent.id,
                                     status=states.SUCCESS).count() == 1000


def test_a_failing_member_ends_the_chord_failure_and_calls_the_errback_once(start, counter):
    c, cb = counter("errback"), counter("callback")
    header = [ct.double.s(i) for i in range(50)] + [ct.boom.s(1), ct.boom.s(2)]
    result = chord(header)(ct.tsum.s(counter=cb).on_error(ct.errback_new.s(c)))
    start("-c", "2")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=60)
    wait_until(lambda: count(c) >= 1, timeout=30, what="the errback")
    wait_until(lambda: GroupResult.restore(result.parent.id).ready(), timeout=30)
    assert count(c) == 1 and count(cb) == 0
    assert result.status == states.FAILURE


def test_a_member_lost_with_its_executor_ends_the_chord_failure_and_calls_the_errback(
        start, counter):
    # acks_late=False: the member is not run again, so its chord must be told.
    started, c, cb = counter("started"), counter("errback"), counter("callback")
    header = [ct.double.s(i) for i in range(5)] + [ct.stall.s(1, started)]
    result = chord(header)(ct.tsum.s(counter=cb).on_error(ct.errback_new.s(c)))
    worker = start("-c", "1")
    wait_until(lambda: count(started) == 1, timeout=60, what="the stalling member")
    os.kill(worker.children()[0], signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    wait_until(lambda: count(c) >= 1, timeout=30, what="the errback")
    calls = [json.loads(x) for x in _redis().lrange(c + ":calls", 0, -1)]
    assert [call[2] for call in calls] == ["WorkerLostError"]
    assert count(cb) == 0 and result.status == states.FAILURE


def test_link_error_on_a_chain_is_called_when_a_later_task_fails(start, counter):
    c = counter("errback")
    last = chain(tasks.add.s(1, 1), tasks.add.s(1), ct.boom.s(), tasks.add.s(1)).apply_async(
        link_error=ct.errback_old.s(counter=c))
    start("-c", "1")
    with pytest.raises(ValueError, match="boom 3"):
        last.get(timeout=60)
    wait_until(lambda: count(c) == 1, timeout=30, what="the errback")
    failed = last.parent  # the boom task
    assert json.loads(_redis().lrange(c + ":calls", 0, -1)[0]) == failed.id


def test_a_group_runs_in_parallel_and_joins_in_order(start):
    res = group(tasks.add.s(i, 1) for i in range(30)).apply_async()
    start("-c", "2")
    assert res.join(timeout=60) == [i + 1 for i in range(30)]
    assert GroupResult.restore(res.id).completed_count() == 30
