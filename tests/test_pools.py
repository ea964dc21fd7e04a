"""Issue 7: the pools behind one interface, and what each does at its edges."""

import os
import threading
import time

import pytest

from djtasks import states
from djtasks.worker.slots import SharedSlots, SlotView
from tests.app import tasks
from tests.conftest import run_burst

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
