"""The database broker (db://default) end to end: enqueue in the caller's
transaction, an in-process worker, and real worker subprocesses killed -9."""

import signal
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from djtasks import AsyncResult, revoke, states
from djtasks.brokers import Started, get_broker
from djtasks.brokers.database import DatabaseBroker
from djtasks.exceptions import BrokerError
from djtasks.message import Message
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


# -- offers: the message a wake-up notice carries (PostgreSQL) -----------------

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql",
                                   reason="NOTIFY payloads: PostgreSQL")


class Waiting(threading.Thread):
    """``consumer.fetch(1, timeout)`` in a thread of its own (its own
    connection); ``started()`` returns once it is waiting on its LISTEN."""

    def __init__(self, consumer, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.consumer, self.timeout = consumer, timeout
        self.got: list = []
        self.pid: int | None = None

    def run(self) -> None:
        try:
            connections["default"].ensure_connection()
            self.pid = connections["default"].connection.info.backend_pid
            self.got = self.consumer.fetch(1, self.timeout)
        finally:
            connections.close_all()

    def started(self):  # type: ignore[no-untyped-def]
        self.start()

        def waiting() -> bool:
            # The query for the earliest due is the fetch's last before it
            # waits: once it is done, a notice sent now is read.
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = "
                               "'idle' AND query LIKE 'SELECT MIN(due)%%'", [self.pid])
                return cursor.fetchone() is not None

        wait_until(waiting, timeout=10, what="the fetch to wait")
        return self

    def result(self) -> list:
        self.join(15)
        assert not self.is_alive()
        return self.got


@pytest.fixture
def consumer(db_broker):  # type: ignore[no-untyped-def]
    """``consumer(name)``: a leased consumer, released (its LISTEN closed) afterwards."""
    made = []

    def make(name: str):  # type: ignore[no-untyped-def]
        made.append(db_broker.consumer(name, ["default"]))
        made[-1].renew(60)
        return made[-1]

    yield make
    for c in made:
        c.release()


def held_by() -> list[str]:
    return list(QueuedMessage.objects.values_list("consumer", flat=True))


def offered_to(taker):  # type: ignore[no-untyped-def]
    """Wait with ``taker``, send one task, and return the delivery its fetch
    handed over."""
    waiting = Waiting(taker).started()
    tasks.add.delay(1, 2)
    [delivery] = waiting.result()
    return delivery


@on_postgresql
def test_a_waiting_consumer_is_offered_the_message_and_its_start_takes_it(db_broker, consumer):
    taker = consumer("offer/1")
    waiting = Waiting(taker).started()
    result = tasks.add.delay(1, 2)
    [delivery] = waiting.result()
    row = QueuedMessage.objects.get()
    assert (delivery.id, delivery.offered, delivery.body) == (result.id, True, bytes(row.body))
    assert held_by() == [""]  # offered, not claimed: the start takes it
    with CaptureQueriesContext(connection) as queries:
        assert taker.start(delivery.id, ack=True) is Started.RUN
    assert statements(queries) == ["WITH"]
    assert messages() == 0  # acked by the same statement (at most once)


@on_postgresql
def test_an_acks_late_start_of_an_offer_holds_it_as_a_fetched_message(db_broker, consumer):
    taker = consumer("offer/1")
    delivery = offered_to(taker)
    assert taker.start(delivery.id, ack=False) is Started.RUN
    assert held_by() == ["offer/1"]
    reaped = taker.release()  # it dies running it: redelivered, as a fetched one would be
    assert (reaped.running, reaped.fate.name) == (delivery.id, "REQUEUED")
    assert held_by() == [""]


@on_postgresql
def test_of_two_consumers_offered_one_message_only_one_starts_it(db_broker, consumer):
    first = consumer("offer/1")
    second = consumer("offer/2")
    waits = [Waiting(first).started(), Waiting(second).started()]
    tasks.add.delay(1, 2)
    [one], [other] = (w.result() for w in waits)
    assert one.offered and other.offered and one.id == other.id
    assert first.start(one.id, ack=False) is Started.RUN
    assert second.start(other.id, ack=False) is Started.LOST
    assert not second.hold(other)
    assert held_by() == ["offer/1"]


@on_postgresql
def test_an_offer_another_consumer_took_is_not_dead_lettered_here(db_broker, consumer):
    offered = consumer("offer/1")
    delivery = offered_to(offered)
    [claimed] = consumer("offer/2").fetch(1, 0)
    assert claimed.id == delivery.id and not claimed.offered
    offered.dead_letter(delivery, "judged here, held there")
    assert db_broker.dead_letters() == []
    assert held_by() == ["offer/2"]


@on_postgresql
def test_an_offer_deferred_is_taken_and_put_off(db_broker, consumer):
    taker = consumer("offer/1")
    delivery = offered_to(taker)
    eta = db_broker.clock() + 60
    taker.defer(delivery.id, eta)
    row = QueuedMessage.objects.get()
    assert (row.consumer, row.due) == ("", pytest.approx(eta))
    assert db_broker.consumer("offer/2", ["default"]).fetch(1, 0) == []  # not before its eta


@on_postgresql
def test_an_offer_is_taken_by_whatever_this_consumer_does_with_it_first(db_broker, consumer):
    taker = consumer("offer/1")
    delivery = offered_to(taker)
    taker.dead_letter(delivery, "bad in some way")
    [letter] = db_broker.dead_letters()
    assert (letter.id, letter.reason) == (delivery.id, "bad in some way")
    assert messages() == 0


@on_postgresql
def test_an_offer_that_is_no_longer_ready_is_not_taken(db_broker, consumer):
    taker = consumer("offer/1")
    delivery = offered_to(taker)
    # Meanwhile another consumer took it and put it off (a rate limit, say).
    other = consumer("offer/2")
    other.fetch(1, 0)
    other.defer(delivery.id, db_broker.clock() + 60)
    assert taker.start(delivery.id, ack=True) is Started.LOST
    assert held_by() == [""] and QueuedMessage.objects.get().due is not None


@on_postgresql
@pytest.mark.parametrize("publish", ["in_a_transaction", "two_at_once", "too_big", "later"])
def test_a_notice_carries_no_offer_when_it_could_mislead(db_broker, consumer, publish):
    taker = consumer("offer/1")
    waiting = Waiting(taker, timeout=3).started()
    if publish == "in_a_transaction":
        with transaction.atomic():
            tasks.add.delay(1, 2)
    elif publish == "two_at_once":
        db_broker.publish([(Message(id=f"two-{i}", task="tests.app.tasks.add", args=[i, i],
                                    kwargs={}, queue="default"), b"{}") for i in range(2)])
    elif publish == "too_big":
        tasks.echo.delay("x" * 8000)
    else:
        tasks.add.apply_async((1, 2), countdown=0.5)
    got = waiting.result()
    assert got and not any(d.offered for d in got)  # claimed as usual
    assert held_by().count("offer/1") == len(got)


def test_an_offer_payload_reads_back_whatever_the_queue_name():
    from djtasks.brokers.database_consumer import offer_payload, parse_offer

    body = b'{"v":1,"id":"a:1"}:sig'
    for queue in ["default", "a:1", "12:x", ""]:
        assert parse_offer("42" + offer_payload("a:1", queue, body)) == (42, "a:1", queue, body)
    for bad in ["", "not an offer", "42 9:a:1", "42 -1:a0:", "42 3:a:1", "x 1:a1:q"]:
        assert parse_offer(bad) is None, bad


@on_postgresql
@pytest.mark.parametrize("taken_elsewhere, expired", [(False, False), (True, False),
                                                      (True, True)])
def test_an_executor_runs_an_offer_once_and_leaves_one_taken_elsewhere_alone(
        db_broker, consumer, counter, caplog, taken_elsewhere, expired):
    from djtasks.worker.executor import Executor
    from djtasks.worker.results import InlineResultWriter

    executor = Executor(db_broker, consumer="offer/1", hostname="h", queues=["default"],
                        prefetch=1, inline=True)
    executor.consumer = consumer("offer/1")
    executor.results = InlineResultWriter(db_broker, executor.consumer)
    key = counter("offered")
    waiting = Waiting(executor.consumer).started()
    # Expired, it would be recorded REVOKED here if it were not taken first.
    result = tasks.record.apply_async((key,), expires=0.2 if expired else None)
    [delivery] = waiting.result()
    if expired:
        time.sleep(0.3)
    if taken_elsewhere:
        assert len(consumer("offer/2").fetch(1, 0)) == 1
    with caplog.at_level("WARNING", logger="djtasks"):
        executor.handle(delivery)
    assert count(key) == (0 if taken_elsewhere else 1)
    assert AsyncResult(result.id).status == (states.PENDING if taken_elsewhere
                                             else states.SUCCESS)
    assert held_by() == (["offer/2"] if taken_elsewhere else [])
    assert not caplog.records  # an offer another took is not "lost": it runs there


@on_postgresql
def test_a_busy_consumer_stops_listening_so_its_backend_holds_back_no_vacuum(
        db_broker, consumer):
    taker = consumer("offer/1")
    Waiting(taker, timeout=0.2).started().result()  # idle once: it LISTENs
    listener = taker._wake.conn.info.backend_pid
    for i in range(2):
        tasks.add.delay(i, i)
    assert len(taker.fetch(1, 0)) == 1  # busy: one taken, one more waiting
    # Unread notices that fill its socket would leave its backend waiting
    # to write them, holding a snapshot that VACUUM must respect.
    big = b"x" * 6000
    for i in range(3000):
        db_broker.publish([(Message(id=f"big-{i}", task="tests.app.tasks.add", args=[],
                                    kwargs={}, queue="default"), big)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event, backend_xmin FROM pg_stat_activity WHERE pid = %s",
                       [listener])
        assert cursor.fetchone() == ("ClientRead", None)
    # Idle again, it LISTENs again and is woken (and offered) as before.
    QueuedMessage.objects.all().delete()
    waiting = Waiting(taker).started()
    result = tasks.add.delay(1, 2)
    [delivery] = waiting.result()
    assert (delivery.id, delivery.offered) == (result.id, True)


@on_postgresql
def test_a_busy_consumer_whose_listener_failed_still_hands_over_what_it_claimed(
        db_broker, consumer):
    taker = consumer("offer/1")
    Waiting(taker, timeout=0.2).started().result()  # idle once: it LISTENs
    taker._wake.conn.close()  # the LISTEN connection is gone: the UNLISTEN fails
    result = tasks.add.delay(1, 2)
    [delivery] = taker.fetch(1, 0)
    assert delivery.id == result.id and held_by() == ["offer/1"]
    assert taker._wake is None  # closed: the next waiting fetch opens a new one
    delivery = offered_to(taker)
    assert delivery.offered


# -- prepared statements (PostgreSQL) -------------------------------------------


def prepared() -> list[str]:
    """The statements prepared on this test's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@on_postgresql
def test_on_postgresql_the_brokers_statements_are_prepared_and_djangos_are_not(db_broker):
    for _ in range(6):  # psycopg prepares a statement on its sixth run
        tasks.add.delay(1, 2)
        assert TaskResult.objects.filter(status=states.PENDING).count() > 0
    statements = prepared()
    assert [s for s in statements if s.startswith("WITH r AS (INSERT INTO")], statements
    assert not [s for s in statements if '"__count"' in s], statements  # the ORM's count
    assert messages() == 6


@on_postgresql
def test_prepare_threshold_none_in_the_database_options_turns_them_off(db_broker):
    options = connection.settings_dict["OPTIONS"]
    connection.close()
    options["prepare_threshold"] = None
    try:
        for _ in range(8):
            tasks.add.delay(1, 2)
        assert connection.connection.prepare_threshold is None
        assert prepared() == []
    finally:
        del options["prepare_threshold"]
        connection.close()
    assert messages() == 8


@on_postgresql
def test_a_prepared_statement_a_pooler_lost_is_a_broker_error_that_says_what_to_set(
        db_broker):
    for _ in range(6):
        tasks.add.delay(1, 2)
    # A transaction-mode pooler runs the next statement on another server
    # connection: there, the statement psycopg prepared does not exist.
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")
    with pytest.raises(BrokerError, match=r"prepare_threshold'\] = None"):
        tasks.add.delay(1, 2)
    connection.close()
    assert messages() == 6


@on_postgresql
def test_a_pending_row_out_of_range_for_its_column_is_refused_not_stored_cut(db_broker):
    message = tasks.add.build_message([1, 2], {})
    message.retries = 2**40  # 0 once cut to the column's 32 bits
    with pytest.raises(BrokerError, match="out of range"):
        db_broker.publish_with_rows([(message, b"{}")], [message])
    assert not TaskResult.objects.filter(task_id=message.id).exists() and messages() == 0


@on_postgresql
def test_an_offer_whose_start_reply_was_lost_runs_when_asked_again(db_broker, consumer):
    from django.db import OperationalError

    taker = consumer("offer/1")
    delivery = offered_to(taker)
    lost = []

    def lose_the_reply(execute, sql, params, many, context):
        result = execute(sql, params, many, context)  # it ran, and committed
        if not lost and sql.startswith("WITH m AS"):
            lost.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return result

    with connection.execute_wrapper(lose_the_reply), pytest.raises(BrokerError):
        taker.start(delivery.id, ack=True, token=delivery.token)
    assert lost and messages() == 0  # acked by that start: at most once
    # The executor asks again, with the same delivery.
    assert taker.start(delivery.id, ack=True, token=delivery.token) is Started.RUN
