"""Issue 7: the pools behind one interface, and what each does at its edges."""

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from djtasks import states
from djtasks.models import TaskResult
from djtasks.worker.pools import PreforkPool
from djtasks.worker.slots import SharedSlots, SlotView
from djtasks.worker.supervisor import Supervisor, WorkerOptions
from tests.app import tasks
from tests.conftest import run_burst, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_threads_pool_runs_a_soft_limited_task_without_its_limit_and_warns_once(
    broker, caplog
):
    results = [tasks.nap_past_soft_limit.delay(0.3) for _ in range(2)]
    with caplog.at_level("WARNING", logger="djtasks.worker"):
        run_burst("-c", "1", pool="threads")
    assert [r.status for r in results] == [states.SUCCESS, states.SUCCESS]
    assert [r.get(timeout=1) for r in results] == ["slept", "slept"]
    warnings = [r.getMessage() for r in caplog.records
                if "threads pool cannot enforce" in r.getMessage()]
    assert warnings == ["task tests.app.tasks.nap_past_soft_limit has a time limit, which "
                        "the threads pool cannot enforce; use --pool prefork"]


def test_an_in_process_solo_worker_leaves_no_shutdown_timer_behind(broker):
    # A process that ran the worker with call_command lives on; a timer left
    # running would send it SIGTERM --shutdown-timeout seconds later.
    result = tasks.sigterm_my_process.delay()
    try:
        output = run_burst(shutdown_timeout=30)
        timers = [t for t in threading.enumerate()
                  if isinstance(t, threading.Timer) and t.is_alive()]
        assert result.status == states.SUCCESS, output
        assert timers == []
    finally:
        for t in threading.enumerate():
            if isinstance(t, threading.Timer):
                t.cancel()


# -- prefork kills: exactly the task whose deadline passed, or that was revoked ----------
#
# In-process: a prefork pool whose one "child" is a sleep process, and whose
# slot the test writes as that child's executor would.

CONSUMER = "probe@test/0.1"


@pytest.fixture
def prefork(broker) -> Iterator[PreforkPool]:
    pool = Supervisor(WorkerOptions(queues=["default"], concurrency=1, pool="prefork",
                                    hostname="probe@test")).pool
    assert isinstance(pool, PreforkPool)
    pid = os.posix_spawnp("sleep", ["sleep", "60"], os.environ)
    pool.children[pid] = (0, CONSUMER)
    yield pool
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass  # killed and reaped by the test


def _started(broker, *results):
    """Fetch ``results``' messages as CONSUMER and start the first."""
    handle = broker.consumer(CONSUMER, ["default"])
    assert len(handle.fetch(len(results), 0)) == len(results)
    handle.start(results[0].id, ack=True)
    return handle


def _survives(pid: int, seconds: float = 0.5) -> bool:
    """Whether process ``pid`` is still alive ``seconds`` from now (a SIGKILL
    takes a moment to land)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
        time.sleep(0.02)
    return True


def test_a_hard_time_limit_spares_the_next_task_when_the_late_one_ends_first(
    prefork, broker
):
    late, following = tasks.add.delay(1, 1), tasks.add.delay(2, 2)
    handle = _started(broker, late, following)
    executor = prefork.slots.slot(0)
    executor.start(late.id, time.time() - 1)  # past its deadline
    read = prefork.slots.read

    def read_then_move_on(index: int) -> SlotView | None:
        # Right after the supervisor's look, the late task ends and the next starts.
        view = read(index)
        if view is not None and view.task_id == late.id:
            executor.end()
            handle.start(following.id, ack=True)
            executor.start(following.id, time.time() + 60)
        return view

    prefork.slots.read = read_then_move_on  # type: ignore[method-assign]
    prefork.enforce_time_limits()
    [pid] = prefork.children
    assert _survives(pid), "the executor running the next task was killed"
    assert TaskResult.objects.get(task_id=following.id).status == states.PENDING


def test_a_hard_time_limit_kills_and_records_the_task_in_the_slot(prefork, broker):
    late = tasks.add.delay(1, 1)
    _started(broker, late)
    prefork.slots.slot(0).start(late.id, time.time() - 1)
    prefork.enforce_time_limits()
    wait_until(lambda: prefork.reap_children() or not prefork.children,
               what="the killed executor to be reaped")
    row = TaskResult.objects.get(task_id=late.id)
    assert (row.status, row.exception_type) == (states.FAILURE,
                                                "djtasks.exceptions.TimeLimitExceeded")


def test_terminate_spares_the_task_that_runs_after_the_revoked_one(prefork, broker):
    revoked, following = tasks.add.delay(1, 1), tasks.add.delay(2, 2)
    _started(broker, revoked, following)  # the broker's marker names the revoked task
    broker.revoke([revoked.id], terminate=True)
    prefork.slots.slot(0).start(following.id, 0.0)  # ...which ended; the next one runs
    prefork.terminate_revoked()
    [pid] = prefork.children
    assert _survives(pid)


# -- shared slots ------------------------------------------------------------------------


def test_a_slot_reads_whole_while_its_writer_rewrites_it():
    slots = SharedSlots(1)
    writer = os.fork()
    if writer == 0:  # a child, as a prefork executor is
        slot, until = slots.slot(0), time.monotonic() + 0.5
        n = 0
        while time.monotonic() < until:
            n += 1
            slot.start(f"task-{n}", float(n))
            slot.end()
        os._exit(0)
    views = []
    while os.waitpid(writer, os.WNOHANG) == (0, 0):
        view = slots.read(0)
        if view is not None and view.running:
            views.append(view)
    assert views
    assert all(v.task_id == f"task-{int(v.deadline)}" for v in views)
    assert all(v.done == int(v.deadline) - 1 for v in views)


def test_a_slot_whose_writer_died_mid_write_reads_as_none_until_reset():
    slots = SharedSlots(2)
    slots.slot(1).start("a", 1.0)
    slots.slot(1).end()
    slots._seq[SharedSlots._SIZE // 8] = 5  # odd: mid-write
    assert slots.read(1) is None
    slots.reset(1)
    view = slots.read(1)
    assert view is not None and (view.running, view.task_id, view.done) == (False, "", 1)
    assert slots.read(0) == SlotView(False, 0.0, "", 0, 0)


def test_a_task_killed_for_its_time_limit_does_not_hide_the_unwritten_rows_before_it(
        prefork, broker):
    finished = tasks.add.delay(1, 1)  # ran on that executor; its rows were still queued
    late = tasks.add.delay(2, 2)
    handle = _started(broker, finished, late)
    handle.start(late.id, ack=True)
    prefork.slots.slot(0).start(late.id, time.time() - 1)
    prefork.enforce_time_limits()
    wait_until(lambda: prefork.reap_children() or not prefork.children,
               what="the killed executor to be reaped")
    assert TaskResult.objects.get(task_id=late.id).exception_type == (
        "djtasks.exceptions.TimeLimitExceeded")
    row = TaskResult.objects.get(task_id=finished.id)
    assert (row.status, row.exception_type) == (states.FAILURE,
                                                "djtasks.exceptions.WorkerLostError")
