"""Publishing and the PENDING row follow the caller's transaction (DESIGN.md section 3)."""

import logging

import pytest
from django.db import transaction

from djtasks import states
from djtasks.exceptions import BrokerError
from djtasks.models import TaskResult
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def depth(broker) -> int:
    return broker.queue_depths(["default"])["default"]


def test_inside_atomic_publishes_only_on_commit_and_returns_the_id_at_once(broker):
    with transaction.atomic():
        result = tasks.add.delay(1, 2)
        assert result.id
        assert depth(broker) == 0  # not yet published
        assert TaskResult.objects.filter(task_id=result.id, status=states.PENDING).exists()
    assert depth(broker) == 1


def test_rollback_leaves_no_message_and_no_row(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.delay(1, 2)
        raise RuntimeError("roll back")
    assert depth(broker) == 0
    assert not TaskResult.objects.filter(task_id=result.id).exists()


def test_outside_a_transaction_publishes_at_once(broker):
    result = tasks.add.delay(1, 2)
    assert depth(broker) == 1
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING


def test_on_commit_false_publishes_inside_the_transaction(broker):
    with transaction.atomic():
        tasks.add.apply_async([1, 2], on_commit=False)
        assert depth(broker) == 1


def test_enqueue_on_commit_setting_false_opts_out(broker, settings):
    settings.DJTASKS = {**settings.DJTASKS, "ENQUEUE_ON_COMMIT": False}
    with transaction.atomic():
        tasks.add.delay(1, 2)
        assert depth(broker) == 1


def test_nested_savepoint_rollback_drops_only_its_task(broker):
    with transaction.atomic():
        kept = tasks.add.delay(1, 1)
        try:
            with transaction.atomic():
                dropped = tasks.add.delay(2, 2)
                raise RuntimeError
        except RuntimeError:
            pass
    assert depth(broker) == 1
    assert TaskResult.objects.filter(task_id=kept.id).exists()
    assert not TaskResult.objects.filter(task_id=dropped.id).exists()


def test_the_tasks_of_one_transaction_reach_the_broker_in_one_publish(broker, monkeypatch):
    calls = []
    real = type(broker).publish
    monkeypatch.setattr(type(broker), "publish",
                        lambda self, items: (calls.append(len(items)), real(self, items)))
    with transaction.atomic():
        for i in range(5):
            tasks.add.delay(i, i)
    assert calls == [5]
    assert depth(broker) == 5


def test_a_savepoint_rolled_back_between_batched_tasks_drops_only_its_own(broker):
    with transaction.atomic():
        first = tasks.add.delay(1, 1)
        with pytest.raises(RuntimeError), transaction.atomic():
            tasks.add.delay(2, 2)
            raise RuntimeError
        last = tasks.add.delay(3, 3)
    queued = [m.id for m in broker.consumer("c", ["default"]).fetch(10, 0)]
    assert queued == [first.id, last.id]


def test_tasks_enqueued_after_a_rolled_back_transaction_are_published(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.delay(1, 1)
        raise RuntimeError
    with transaction.atomic():
        kept = tasks.add.delay(2, 2)
    assert [m.id for m in broker.consumer("c", ["default"]).fetch(10, 0)] == [kept.id]


def test_an_on_commit_callback_between_tasks_runs_between_their_publishes(broker):
    seen = []
    with transaction.atomic():
        tasks.add.delay(1, 1)
        transaction.on_commit(lambda: seen.append(depth(broker)))
        tasks.add.delay(2, 2)
    assert seen == [1]
    assert depth(broker) == 2


def test_worker_sees_the_rows_the_transaction_committed(burst):
    with transaction.atomic():
        result = tasks.create_item.delay("committed")
    burst()
    assert result.get(timeout=1) > 0


def test_broker_down_at_commit_is_logged_and_the_row_stays_pending(
    broker, settings, caplog
):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": DOWN}
    with caplog.at_level(logging.ERROR, logger="djtasks.publish"), transaction.atomic():
        result = tasks.add.delay(1, 2)
    # The caller's commit went through; the failure is a log line with the id.
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING
    assert result.id in caplog.text
    assert "stays PENDING" in caplog.text


def test_broker_down_when_publishing_at_once_raises_broker_error(broker, settings):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "redis://:pw@127.0.0.1:1/0"}
    with pytest.raises(BrokerError) as excinfo:
        tasks.add.delay(1, 2)
    assert "127.0.0.1:1" in str(excinfo.value)
    assert ":pw@" not in str(excinfo.value)
    assert ":***@" in str(excinfo.value)


def test_using_names_the_database_of_the_on_commit(broker):
    with transaction.atomic(using="default"):
        tasks.add.apply_async([1, 2], using="default")
        assert depth(broker) == 0
    assert depth(broker) == 1


def test_broker_down_when_publishing_at_once_leaves_no_row(broker, settings):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": DOWN}
    with pytest.raises(BrokerError):
        tasks.add.delay(1, 2)
    assert TaskResult.objects.count() == 0


@pytest.fixture
def published():
    """Task names as ``before_task_publish`` and ``after_task_publish`` see them."""
    from djtasks import signals

    seen: list[tuple[str, str]] = []

    def before(sender, **kwargs):
        seen.append(("before", sender))

    def after(sender, **kwargs):
        seen.append(("after", sender))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after)
    yield seen
    signals.before_task_publish.disconnect(before)
    signals.after_task_publish.disconnect(after)


def test_publish_signals_wait_for_the_commit(broker, published):
    with transaction.atomic():
        tasks.add.delay(1, 2)
        assert published == []  # not published yet: nothing to announce
    assert published == [("before", "tests.app.tasks.add"), ("after", "tests.app.tasks.add")]


def test_a_rolled_back_task_sends_no_publish_signal(broker, published):
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.add.delay(1, 2)
        raise RuntimeError("roll back")
    assert published == []


def test_a_message_refused_for_its_size_sends_no_publish_signal(broker, published):
    from djtasks.exceptions import TaskArgumentError

    with pytest.raises(TaskArgumentError, match="MAX_MESSAGE_BYTES"):
        tasks.echo.delay("x" * 2 * 1024 * 1024)
    assert published == []


def test_a_reused_task_id_takes_over_its_row_without_a_database_error(broker):
    with transaction.atomic():
        tasks.add.apply_async([1, 2], task_id="report-2026-06")
        tasks.add.apply_async([3, 4], task_id="report-2026-06")  # no IntegrityError
        TaskResult.objects.count()  # the atomic block is still usable
    row = TaskResult.objects.get(task_id="report-2026-06")
    assert (row.status, row.args) == (states.PENDING, [3, 4])
    assert depth(broker) == 2  # both runs were published, as Celery would


def test_a_reused_task_id_of_a_finished_task_runs_again(burst):
    first = tasks.add.apply_async([1, 2], task_id="nightly-2026-06-01")
    burst()
    assert first.get(timeout=1) == 3
    again = tasks.add.apply_async([5, 5], task_id="nightly-2026-06-01")
    assert TaskResult.objects.get(task_id=again.id).status == states.PENDING
    burst()
    assert again.get(timeout=1) == 10


def test_a_publish_signal_receiver_that_raises_leaves_no_row_behind(broker):
    from djtasks import signals

    def refuse(sender, **kwargs):
        raise RuntimeError("receiver refuses")

    signals.before_task_publish.connect(refuse)
    try:
        with pytest.raises(RuntimeError, match="receiver refuses"):
            tasks.add.delay(1, 1)
    finally:
        signals.before_task_publish.disconnect(refuse)
    assert TaskResult.objects.count() == 0  # the caller got the error: no task exists


def test_outside_a_transaction_the_pending_row_commits_without_waiting_for_the_disk(broker):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    # A deferred trigger runs at the commit, and notes the setting that commit obeys.
    table = TaskResult._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE seen_commit (task_id text, synchronous_commit text)")
        cursor.execute(
            "CREATE FUNCTION seen_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen_commit VALUES (NEW.task_id, current_setting('synchronous_commit'));"
            " RETURN NULL; END $$")
        cursor.execute(f"CREATE CONSTRAINT TRIGGER seen_commit AFTER INSERT ON {table} "
                       "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION seen_commit()")
    try:
        outside = tasks.add.delay(1, 2)
        with transaction.atomic():
            inside = tasks.add.delay(3, 4)  # the caller's transaction: its setting stays its own
        with connection.cursor() as cursor:
            cursor.execute("SELECT task_id, synchronous_commit FROM seen_commit")
            seen = dict(cursor.fetchall())
            cursor.execute("SHOW synchronous_commit")
            [(session,)] = cursor.fetchall()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER seen_commit ON {table}")
            cursor.execute("DROP FUNCTION seen_commit()")
            cursor.execute("DROP TABLE seen_commit")
    assert seen == {outside.id: "off", inside.id: "on"}
    assert session == "on"  # the connection's own setting is untouched
    assert TaskResult.objects.get(task_id=outside.id).status == states.PENDING


def test_a_transaction_begun_behind_djangos_back_keeps_its_synchronous_commit(broker):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")  # Django still thinks it is in autocommit
        try:
            tasks.add.delay(1, 2)
            cursor.execute("SHOW synchronous_commit")
            [(setting,)] = cursor.fetchall()
        finally:
            cursor.execute("ROLLBACK")
    assert setting == "on"  # the caller's commit would still wait for the disk


def test_outside_a_transaction_the_row_is_written_while_the_broker_takes_the_message(
        broker, monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("only a row that commits alone on PostgreSQL is written beside the publish")
    seen = []
    begin = type(broker).publish_begin

    def spy(self, items):
        [(message, _)] = items
        finish = begin(self, items)
        seen.append(("sent", TaskResult.objects.filter(task_id=message.id).exists()))

        def reply():
            seen.append(("reply", TaskResult.objects.filter(task_id=message.id).exists()))
            finish()

        return reply

    monkeypatch.setattr(type(broker), "publish_begin", spy)
    result = tasks.add.delay(1, 2)
    assert seen == [("sent", False), ("reply", True)]  # the row between the two halves
    assert depth(broker) == 1
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING


def test_a_row_that_cannot_be_written_beside_its_publish_is_made_by_the_worker(
        burst, caplog):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("only a row that commits alone on PostgreSQL is written beside the publish")
    table = TaskResult._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE FUNCTION refuse_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
                       "BEGIN RAISE EXCEPTION 'rows refused for this test'; END $$")
        cursor.execute(f"CREATE TRIGGER refuse_row BEFORE INSERT ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION refuse_row()")
    try:
        with caplog.at_level(logging.WARNING, logger="djtasks.publish"):
            result = tasks.add.delay(2, 3)  # published: the caller is not told of the row
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER refuse_row ON {table}")
            cursor.execute("DROP FUNCTION refuse_row()")
    assert result.id in caplog.text and "rows refused for this test" in caplog.text
    assert not TaskResult.objects.filter(task_id=result.id).exists()
    burst()
    assert result.get(timeout=1) == 5


def test_a_pending_write_leaves_the_row_the_worker_wrote_for_the_same_message(broker):
    from django.db import connection

    if connection.vendor == "mysql":
        pytest.skip("MariaDB's rows are written before the publish, never beside it")
    message = tasks.add.build_message([1, 2], {})
    TaskResult.objects.write([TaskResult.from_message(message, states.STARTED, worker="w1")])
    TaskResult.objects.enqueued(message)  # the caller's row, arriving after the worker's
    assert TaskResult.objects.get(task_id=message.id).status == states.STARTED
    again = tasks.add.build_message([3, 4], {}, task_id=message.id)  # a reused id: a new run
    TaskResult.objects.enqueued(again)
    row = TaskResult.objects.get(task_id=message.id)
    assert (row.status, row.args) == (states.PENDING, [3, 4])
