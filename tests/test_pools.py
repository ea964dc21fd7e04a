"""Issue 7: the pools behind one interface, and what each does at its edges."""

import threading

import pytest

from djtasks import states
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
