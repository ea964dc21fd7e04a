"""The worker, run in-process (``runworker --burst --pool solo``), on real Redis and DB."""

import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from djtasks import AsyncResult, states
from djtasks.brokers import Delivery
from djtasks.exceptions import TaskRevokedError
from djtasks.message import Message
from djtasks.models import TaskResult
from tests.app import tasks
from tests.app.tasks import count

pytestmark = pytest.mark.django_db(transaction=True)


def test_success_is_stored_with_result_times_and_worker(burst):
    result = tasks.add.delay(20, 22)
    burst()
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.SUCCESS
    assert row.result == 42
    assert row.started is not None and row.finished is not None
    assert row.finished >= row.started
    assert row.worker.startswith("djtasks@")
    assert result.get(timeout=1) == 42


def test_failure_is_stored_with_traceback_and_worker_carries_on(burst):
    failing = tasks.fail.delay("boom")
    after = tasks.add.delay(1, 1)
    burst()
    row = TaskResult.objects.get(task_id=failing.id)
    assert row.status == states.FAILURE
    assert row.exception_type == "builtins.ValueError"
    assert row.exception_message == "boom"
    assert "raise ValueError(message)" in row.traceback
    assert AsyncResult(after.id).get(timeout=1) == 2


def test_get_reraises_the_original_exception_type_and_message(burst):
    failing = tasks.fail.delay("original message")
    burst()
    with pytest.raises(ValueError, match="original message"):
        failing.get(timeout=1)
    assert isinstance(failing.get(timeout=1, propagate=False), ValueError)
    assert failing.failed() and failing.ready() and not failing.successful()


@pytest.mark.parametrize("stored", ["builtins.ValueError", "ValueError"])
def test_get_rebuilds_builtins_stored_with_or_without_their_module(stored):
    # Rows written before exception types became importable paths say "ValueError".
    TaskResult.objects.create(task_id="old-row", task_name="tests.app.tasks.fail",
                              status=states.FAILURE, exception_type=stored,
                              exception_message="old message")
    with pytest.raises(ValueError, match="old message"):
        AsyncResult("old-row").get(timeout=1)


def test_get_reraises_a_nested_exception_class_such_as_does_not_exist(burst):
    from tests.app.models import Item

    missing = tasks.get_item.delay(999_999)
    burst()
    assert TaskResult.objects.get(task_id=missing.id).exception_type == (
        "tests.app.models.Item.DoesNotExist")
    with pytest.raises(Item.DoesNotExist):
        missing.get(timeout=1)


def test_get_times_out_with_timeout_error(broker):
    result = tasks.add.delay(1, 2)  # no worker runs it
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2


def test_request_context_in_a_bound_task(burst):
    result = tasks.whoami.apply_async(queue="default")
    burst()
    info = result.get(timeout=1)
    assert info["id"] == result.id
    assert info["task"] == "tests.app.tasks.whoami"
    assert info["retries"] == 0
    assert info["queue"] == "default"
    assert info["hostname"].startswith("djtasks@")
    assert info["called_directly"] is False


def test_ignore_result_writes_no_row_but_runs(burst, counter):
    key = counter("fire")
    tasks.fire_and_forget.delay(key)
    burst()
    assert count(key) == 1
    assert TaskResult.objects.count() == 0


def test_manual_retry_reruns_same_id_with_retries_incremented(counter):
    from tests.conftest import run_burst

    key = counter("flaky")
    result = tasks.flaky.delay(key, 3)
    run_burst()
    assert count(key) == 3
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.SUCCESS
    assert row.retries == 2
    assert result.get(timeout=1) == 3


def test_retries_past_max_retries_end_in_failure_with_original_error(counter):
    from tests.conftest import run_burst

    key = counter("flaky-too-often")
    result = tasks.flaky.delay(key, 10)  # max_retries=2: runs 3 times, then fails
    run_burst()
    assert count(key) == 3
    assert result.status == states.FAILURE
    with pytest.raises(OSError, match="attempt 3 failed"):
        result.get(timeout=1)


def test_autoretry_for_retries_then_fails(counter):
    from tests.conftest import run_burst

    key = counter("autoretry")
    result = tasks.always_oserror.delay(key)
    run_burst()
    assert count(key) == 2  # first run + max_retries=1
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.retries, row.exception_type) == (states.FAILURE, 1, "builtins.OSError")


def test_expired_task_is_not_run_and_is_revoked(burst, counter):
    key = counter("expired")
    result = tasks.record.apply_async([key], expires=0.05)
    time.sleep(0.1)
    burst()
    assert count(key) == 0
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.REVOKED
    assert "expired" in row.exception_message
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_unencodable_return_value_is_a_failure_that_says_why(burst):
    result = tasks.unencodable_result.delay()
    burst()
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.FAILURE
    assert "cannot be stored" in row.exception_message
    assert "set" in row.exception_message


def _publish_raw(broker, message_id, body, queue="default"):
    msg = Message(id=message_id, task="x", args=[], kwargs={}, queue=queue)
    broker.publish([(msg, body)])


def test_undecodable_message_is_dead_lettered_with_reason(burst, broker):
    _publish_raw(broker, "bad-1", b"\x00not json")
    burst()
    dead = broker.dead_letters()
    assert [(d.id, d.queue) for d in dead] == [("bad-1", "default")]
    assert "not signed" in dead[0].reason
    assert dead[0].body == b"\x00not json"
    assert broker.queue_depths(["default"]) == {"default": 0}


def test_signed_but_undecodable_message_is_dead_lettered_with_reason(burst, broker):
    from djtasks.signing import get_signer

    _publish_raw(broker, "bad-2", get_signer().sign(b"[1, 2"))
    burst()
    [dead] = broker.dead_letters()
    assert "not a djtasks JSON envelope" in dead.reason


def test_unknown_task_is_dead_lettered_and_worker_goes_on(burst, broker):
    msg = Message(id="unknown-1", task="nowhere.tasks.missing", args=[], kwargs={},
                  queue="default")
    broker.publish([(msg, msg.encode())])
    ok = tasks.add.delay(2, 2)
    burst()
    [dead] = broker.dead_letters()
    assert dead.id == "unknown-1"
    assert "nowhere.tasks.missing" in dead.reason
    assert ok.get(timeout=1) == 4


def test_worker_consumes_every_queue_given_with_Q(burst, counter):
    key = counter("queues")
    tasks.record.apply_async([key], queue="default")
    tasks.on_other_queue.delay(key)
    burst("-Q", "default,other")
    assert count(key) == 2


def test_worker_does_not_consume_queues_it_was_not_given(burst, counter, broker):
    key = counter("not-mine")
    tasks.on_other_queue.delay(key)
    burst("-Q", "default")
    assert count(key) == 0
    assert broker.queue_depths(["other"]) == {"other": 1}


def test_higher_priority_runs_first_within_a_queue(burst, broker):
    low = tasks.add.apply_async([0, 0], priority=0)
    high = tasks.add.apply_async([0, 1], priority=9)
    mid = tasks.add.apply_async([0, 2], priority=5)
    burst("--prefetch-multiplier", "1")
    order = sorted(TaskResult.objects.filter(task_id__in=[low.id, high.id, mid.id]),
                   key=lambda r: r.started)
    assert [r.task_id for r in order] == [high.id, mid.id, low.id]


def test_database_connection_is_usable_after_it_was_closed_under_a_task(burst):
    result = tasks.create_item.delay("first")
    connection.close()
    burst()
    assert result.get(timeout=1) > 0


def test_banner_lists_broker_queues_concurrency_and_tasks(burst):
    out = burst("-Q", "default,reports")
    assert "broker:      redis://127.0.0.1:6379/15" in out
    assert "queues:      default, reports" in out
    assert "concurrency: 1 (solo pool)" in out
    assert ". tests.app.tasks.add" in out


def test_banner_hides_the_broker_password(settings, broker):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "redis://:s3cret@127.0.0.1:1/0"}
    with pytest.raises(CommandError) as excinfo:
        call_command("runworker", burst=True, pool="solo")
    assert "s3cret" not in str(excinfo.value)
    assert "***" in str(excinfo.value)


def test_bad_options_are_command_errors():
    with pytest.raises(CommandError, match="must be 1 or more"):
        call_command("runworker", "--concurrency", "0")
    with pytest.raises(CommandError, match="not a queue name"):
        call_command("runworker", "-Q", "bad queue")


def test_prefork_pool_runs_tasks_in_child_processes(broker):
    import os

    from tests.conftest import run_burst

    results = [tasks.pid.delay() for _ in range(6)]
    run_burst("-c", "2", pool="prefork")
    pids = {r.get(timeout=5) for r in results}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_fetched_messages_wait_in_the_broker_not_only_in_memory(broker):
    tasks.add.delay(1, 1)
    tasks.add.delay(2, 2)
    deliveries = broker.consumer("probe/0.1", ["default"]).fetch(5, 0)
    assert [type(d) for d in deliveries] == [Delivery, Delivery]
    inflight = broker.client.hlen(broker.inflight_key("probe/0.1"))
    assert inflight == 2


def test_get_waits_on_the_broker_notice_not_by_polling_the_database(broker):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    result = tasks.add.delay(1, 2)  # nobody runs it
    with CaptureQueriesContext(connection) as queries, pytest.raises(TimeoutError):
        result.get(timeout=2.5)
    assert len(queries) <= 5  # one read a second (+ first and last), not a busy loop


def test_get_returns_as_soon_as_the_worker_stores_the_result(broker):
    import threading

    from tests.conftest import run_burst

    result = tasks.add.delay(2, 2)
    returned: list[float] = []

    def wait() -> None:
        assert result.get(timeout=10) == 4
        returned.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # the waiter has read PENDING and sleeps on the notice
    run_burst()
    burst_done = time.monotonic()
    waiter.join(10)
    assert returned, "get() did not return"
    # Woken by the done notice, not by its next (once a second) database read.
    assert returned[0] - burst_done < 0.15


def test_a_cache_url_broker_runs_tasks_end_to_end(settings, burst):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "cache://redis"}
    result = tasks.add.delay(5, 5)
    out = burst()
    assert "cache://redis" in out
    assert result.get(timeout=1) == 10


def test_one_unstorable_row_does_not_lose_the_rest_of_its_batch(burst):
    ok = [tasks.add.delay(i, i) for i in range(5)]
    odd = tasks.echo.delay("nul \x00 inside")  # jsonb refuses \u0000 unless the codec tags it
    burst()
    assert [r.get(timeout=1) for r in ok] == [0, 2, 4, 6, 8]
    assert odd.get(timeout=1) == {"args": ["nul \x00 inside"], "kwargs": {}}


def test_a_raising_signal_receiver_does_not_fail_or_dead_letter_the_task(burst, broker):
    from djtasks import signals

    def boom(**kwargs):
        raise RuntimeError("receiver bug")

    signals.task_postrun.connect(boom)
    try:
        result = tasks.add.delay(3, 3)
        burst()
    finally:
        signals.task_postrun.disconnect(boom)
    assert result.get(timeout=1) == 6
    assert broker.dead_letters() == []


def test_retry_with_arguments_that_cannot_travel_fails_the_task(burst, broker):
    result = tasks.retry_with_bad_args.delay()
    burst()
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.exception_type) == (states.FAILURE,
                                                "djtasks.exceptions.TaskArgumentError")
    assert broker.dead_letters() == []


def test_a_retry_keeps_the_per_call_time_limits(burst):
    result = tasks.retry_once_report_limits.apply_async(soft_time_limit=30, time_limit=40)
    burst()
    assert result.get(timeout=1) == {"soft_time_limit": 30, "time_limit": 40}


def test_revoking_a_running_task_without_terminate_lets_it_finish(broker):
    from djtasks import revoke

    result = tasks.add.delay(1, 1)
    [d] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).start(d.id, ack=True)  # it is running there now
    revoke(result.id)
    assert result.status == states.PENDING  # not marked REVOKED under a running task


def test_a_row_the_database_refuses_becomes_a_failure_and_spares_its_batch(broker):
    from djtasks.message import Message
    from djtasks.worker.results import ResultWriter

    good = Message(id="good-1", task="tests.app.tasks.add", args=[1, 1], kwargs={},
                   queue="default")
    bad = Message(id="bad-1", task="tests.app.tasks.add", args=[1, 1], kwargs={},
                  queue="default", retries=2**40)  # out of range for the column
    writer = ResultWriter(broker, broker.consumer("probe/0.1", ["default"]), interval=0.05)
    writer.add(TaskResult.from_message(good, states.SUCCESS, worker="probe/0.1", result=2))
    writer.add(TaskResult.from_message(bad, states.SUCCESS, worker="probe/0.1", result=2))
    writer.stop()
    assert TaskResult.objects.get(task_id="good-1").status == states.SUCCESS
    refused = TaskResult.objects.get(task_id="bad-1")
    assert refused.status == states.FAILURE
    assert "could not be stored" in refused.exception_message


def test_a_retry_asked_for_inside_autoretry_for_keeps_its_new_args(burst):
    result = tasks.retry_with_new_args.delay(1)
    burst()
    # Celery re-raises Retry before its autoretry check: the retry's args win.
    assert result.get(timeout=1) == 101
    assert TaskResult.objects.get(task_id=result.id).retries == 1


def test_a_retry_too_big_for_a_message_fails_the_task_through_the_size_check(burst, broker):
    result = tasks.retry_with_big_args.delay()
    burst()
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == states.FAILURE
    assert "MAX_MESSAGE_BYTES" in row.exception_message
    assert broker.queue_depths(["default"])["default"] == 0 and broker.scheduled_count() == 0


def test_a_retry_is_published_with_the_publish_signals(burst, counter):
    from djtasks import signals

    seen: list[tuple[str, int]] = []

    def before(sender, body, **kwargs):
        seen.append((sender, body["retries"]))

    signals.before_task_publish.connect(before)
    try:
        result = tasks.flaky.delay(counter("flaky"), 2)
        burst()
    finally:
        signals.before_task_publish.disconnect(before)
    assert result.get(timeout=1) == 2
    assert seen == [("tests.app.tasks.flaky", 0), ("tests.app.tasks.flaky", 1)]


def test_a_task_raising_system_exit_fails_and_the_worker_carries_on(burst):
    exiting = tasks.exit_the_process.delay(3)
    after = tasks.add.delay(2, 2)
    burst()  # returns: the solo worker was not stopped by the task
    row = TaskResult.objects.get(task_id=exiting.id)
    assert (row.status, row.exception_type) == (states.FAILURE, "builtins.SystemExit")
    assert after.get(timeout=1) == 4


def test_rows_a_dead_executor_ran_but_never_wrote_are_settled(broker):
    from djtasks.worker.supervisor import settle_lost

    finished = tasks.add.delay(1, 1)  # ran, but its result batch died with the executor
    running = tasks.add.delay(2, 2)  # running when it died
    consumer = broker.consumer("dead/0.1", ["default"])
    consumer.fetch(2, 0)
    consumer.start(finished.id, ack=True)
    consumer.start(running.id, ack=True)
    reaped = consumer.release()
    assert reaped.unsettled == [finished.id]
    settle_lost([reaped], broker)
    for result, words in ((finished, "result was lost"), (running, "while running")):
        row = TaskResult.objects.get(task_id=result.id)
        assert (row.status, row.exception_type) == (
            states.FAILURE, "djtasks.exceptions.WorkerLostError")
        assert words in row.exception_message


def test_a_settled_row_is_not_reported_lost(broker):
    result = tasks.add.delay(1, 1)
    consumer = broker.consumer("c/0.1", ["default"])
    consumer.fetch(1, 0)
    consumer.start(result.id, ack=True)
    consumer.ack([], settled=[result.id])  # its final row was written
    assert consumer.release().unsettled == []


def test_an_acks_late_task_given_back_by_a_dead_executor_is_not_settled_lost(broker):
    from djtasks.worker.supervisor import settle_lost

    result = tasks.record_and_sleep_late.delay("k", 0)
    running = tasks.add.delay(1, 1)
    consumer = broker.consumer("dead/0.1", ["default"])
    consumer.fetch(2, 0)
    consumer.start(result.id, ack=False)  # ran; its row and late ack were still queued
    consumer.start(running.id, ack=True)
    reaped = consumer.release()
    assert result.id in reaped.requeued  # it runs again...
    settle_lost([reaped], broker)
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING  # ...so not lost


def test_a_retry_whose_next_attempt_was_never_published_is_not_left_retry(
        broker, counter, monkeypatch):
    from djtasks.worker.executor import Executor
    from djtasks.worker.supervisor import settle_lost

    class Died(BaseException):
        """The executor's death between its RETRY row and the retry's publish."""

    def die(outgoing):
        raise Died()

    result = tasks.flaky.delay(counter("flaky-dies"), 5)
    monkeypatch.setattr("djtasks.enqueue.publish", die)
    executor = Executor(broker, consumer="dying/0.1", hostname="h", queues=["default"],
                        prefetch=1, burst=True)
    with pytest.raises(Died):
        executor.run()
    assert TaskResult.objects.get(task_id=result.id).status == states.RETRY
    settle_lost([broker.consumer("dying/0.1", ["default"]).release()], broker)
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.exception_type) == (
        states.FAILURE, "djtasks.exceptions.WorkerLostError")


def test_a_chord_member_that_could_not_be_settled_still_ends_its_chord(burst, monkeypatch):
    from djtasks import chord
    from djtasks.worker.executor import Executor
    from tests.app import canvas_tasks as ct

    record = Executor._record

    def refuse_one(self, task, message, outcome, store):
        if message.args == [1]:  # the first member's recording fails, after it ran
            raise RuntimeError("the recording broke")
        record(self, task, message, outcome, store)

    monkeypatch.setattr(Executor, "_record", refuse_one)
    result = chord([ct.double.s(1), ct.double.s(2)])(ct.tsum.s())
    burst()
    members = {r.args[0]: r.status for r in TaskResult.objects.filter(group_id=result.parent.id)}
    assert members == {1: states.FAILURE, 2: states.SUCCESS}
    # The chord counted the member that failed so: its callback ends, not PENDING for ever.
    assert AsyncResult(result.id).status == states.FAILURE
