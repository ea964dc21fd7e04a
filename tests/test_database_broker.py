"""The database broker (db://default) end to end: enqueue in the caller's
transaction, an in-process worker, and real worker subprocesses killed -9."""

import signal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from djtasks import AsyncResult, revoke, states
from djtasks.brokers import get_broker
from djtasks.brokers.database import DatabaseBroker
from djtasks.models import QueuedMessage, TaskResult
from tests.app import tasks
from tests.app.tasks import count
from tests.conftest import kill_and_outlive, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def db_broker(settings, key_prefix) -> DatabaseBroker:
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    broker = get_broker()
    assert isinstance(broker, DatabaseBroker)
    return broker


def messages() -> int:
    return QueuedMessage.objects.count()


def test_the_message_and_its_pending_row_are_written_in_the_callers_transaction(db_broker):
    with transaction.atomic():
        result = tasks.add.delay(1, 2)
        # Not "on commit": the message row is already there, in this transaction.
        assert messages() == 1
        assert TaskResult.objects.get(task_id=result.id).status == states.PENDING
    assert messages() == 1


def test_a_rollback_leaves_neither_the_message_nor_its_row(db_broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.delay(1, 2)
        raise RuntimeError("roll back")
    assert messages() == 0
    assert not TaskResult.objects.filter(task_id=result.id).exists()


def test_a_savepoint_rollback_drops_only_its_task(db_broker):
    with transaction.atomic():
        kept = tasks.add.delay(1, 1)
        with pytest.raises(RuntimeError), transaction.atomic():
            dropped = tasks.add.delay(2, 2)
            raise RuntimeError("roll back the savepoint")
    assert list(QueuedMessage.objects.values_list("task_id", flat=True)) == [kept.id]
    assert not TaskResult.objects.filter(task_id=dropped.id).exists()



def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_a_claim_alone_skips_the_wal_flush_and_a_claim_in_a_transaction_does_not(db_broker):
    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    relaxed = "set_config('synchronous_commit', 'off', true)"
    tasks.add.delay(1, 2)
    with CaptureQueriesContext(connection) as alone:
        [delivery] = db_broker.consumer("c/1", ["default"]).fetch(1, 0)
    assert any(relaxed in q["sql"] for q in alone.captured_queries)
    # Only the claim's own transaction was relaxed: later writes on this
    # connection (a task body's) commit synchronously.
    assert _synchronous_commit() == "on"
    tasks.add.delay(3, 4)
    with transaction.atomic(), CaptureQueriesContext(connection) as inside:
        assert len(db_broker.consumer("c/2", ["default"]).fetch(1, 0)) == 1
        assert _synchronous_commit() == "on"  # the caller's transaction is left as it was
    assert not any(relaxed in q["sql"] for q in inside.captured_queries)
    assert db_broker.consumer("c/1", ["default"]).start(
        delivery.id, ack=True).name == "RUN"


def statements(queries: CaptureQueriesContext) -> list[str]:
    """What went to the database, BEGIN and COMMIT included (Django logs them)."""
    return [q["sql"].split()[0].upper() for q in queries]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="CTEs that write: PostgreSQL")
def test_on_postgresql_a_task_with_a_pending_row_is_enqueued_in_one_statement(db_broker):
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as queries:
        result = tasks.add.delay(1, 2)
    assert statements(queries) == ["WITH"]  # no BEGIN, no second statement, no COMMIT
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING
    assert list(QueuedMessage.objects.values_list("task_id", flat=True)) == [result.id]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="CTEs that write: PostgreSQL")
def test_on_postgresql_inside_a_transaction_it_is_one_statement_in_a_savepoint(db_broker):
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        result = tasks.add.delay(1, 2)
    assert statements(queries) == ["SAVEPOINT", "WITH", "RELEASE"]
    assert TaskResult.objects.filter(task_id=result.id).exists() and messages() == 1


def test_a_burst_worker_runs_results_retries_and_failures(db_broker, burst, counter):
    added = tasks.add.delay(20, 22)
    flaky = tasks.flaky.delay(counter("flaky"), 2)
    failing = tasks.fail.delay("boom")
    burst()
    assert added.get(timeout=1) == 42
    assert flaky.get(timeout=1) == 2
    assert failing.status == states.FAILURE
    assert messages() == 0  # finished messages leave the table


def test_a_revoked_task_never_runs(db_broker, burst, counter):
    key = counter("revoked")
    result = tasks.record.delay(key)
    revoke(result.id)
    burst()
    assert count(key) == 0
    assert AsyncResult(result.id).status == states.REVOKED


def test_a_message_that_fails_its_signature_is_dead_lettered(db_broker, burst):
    from djtasks.message import Message

    forged = Message(id="forged-1", task="tests.app.tasks.add", args=[1, 1], kwargs={},
                     queue="default")
    db_broker.publish([(forged, b'{"v":1}:not-a-signature')])
    burst()
    [letter] = db_broker.dead_letters()
    assert letter.id == "forged-1" and "signature" in letter.reason


@pytest.mark.subprocess
def test_kill_9_redelivers_fetched_messages_but_not_the_started_one(
        db_broker, worker_process, counter):
    slow, quick = counter("slow"), counter("quick")
    started = tasks.record_and_sleep.delay(slow, 60)
    waiting = [tasks.record.delay(quick) for _ in range(3)]
    worker = worker_process("--pool", "solo", "--prefetch-multiplier", "10", lease=1,
                            broker_url="db://default")
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    survivor_start = lambda *a, **k: worker_process(*a, broker_url="db://default", **k)  # noqa: E731
    kill_and_outlive(survivor_start, worker, lease=1)
    assert count(quick) == 3  # every fetched-not-started message ran, once
    assert count(slow) == 1  # the started one did not run again (acks_late=False)
    assert all(AsyncResult(r.id).status == states.SUCCESS for r in waiting)
    row = TaskResult.objects.get(task_id=started.id)
    assert (row.status, row.exception_type) == (
        states.FAILURE, "djtasks.exceptions.WorkerLostError")


@pytest.mark.subprocess
def test_an_acks_late_task_killed_with_its_worker_runs_again(
        db_broker, worker_process, counter):
    key = counter("late")
    result = tasks.record_and_sleep_late.delay(key, 1)
    worker = worker_process("-c", "1", lease=1, broker_url="db://default")
    wait_until(lambda: count(key) == 1, what="the task to start")
    survivor_start = lambda *a, **k: worker_process(*a, broker_url="db://default", **k)  # noqa: E731
    kill_and_outlive(survivor_start, worker, lease=1)
    assert count(key) == 2 and count(key + ":done") == 1
    assert AsyncResult(result.id).status == states.SUCCESS


@pytest.mark.subprocess
def test_warm_shutdown_finishes_the_running_task_and_gives_back_the_rest(
        db_broker, worker_process, counter):
    slow, quick = counter("slow"), counter("quick")
    tasks.record_and_sleep.delay(slow, 1.5)
    for _ in range(3):
        tasks.record.delay(quick)
    worker = worker_process("--pool", "solo", "--prefetch-multiplier", "10",
                            broker_url="db://default")
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert count(slow + ":done") == 1 and count(quick) == 0
    assert db_broker.queue_depths(["default"]) == {"default": 3}
