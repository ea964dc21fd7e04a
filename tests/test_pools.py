"""Issue 7: the pools behind one interface, and what each does at its edges."""

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
