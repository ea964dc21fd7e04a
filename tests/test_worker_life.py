"""Issue 3: time limits, revoke, rate limits, delivery on worker death,
recycling, pools, shutdown, heartbeats, signals and logging."""

import os
import re
import signal
import time
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

import djtasks
from djtasks import AsyncResult, signals, states
from djtasks.exceptions import TaskRevokedError
from djtasks.models import TaskResult
from tests.app import tasks
from tests.app.tasks import count
from tests.conftest import kill_and_outlive, run_burst, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def status(result) -> str:
    return AsyncResult(result.id).status


# -- time limits ---------------------------------------------------------------


@pytest.mark.subprocess
def test_hard_time_limit_kills_only_that_task_and_the_worker_goes_on(
    worker_process, counter
):
    slow, quick = counter("slow"), counter("quick")
    limited = tasks.record_and_sleep.apply_async([slow, 30], time_limit=0.5)
    worker = worker_process("-c", "1")
    wait_until(lambda: status(limited) == states.FAILURE, timeout=20,
               what="the time-limited task to fail")
    row = TaskResult.objects.get(task_id=limited.id)
    assert row.exception_type == "djtasks.exceptions.TimeLimitExceeded"
    after = tasks.record.delay(quick)
    wait_until(lambda: status(after) == states.SUCCESS, timeout=20,
               what="a task after the kill")
    assert count(slow) == 1 and count(slow + ":done") == 0
    assert worker.proc.poll() is None


@pytest.mark.subprocess
def test_hard_time_limit_from_the_worker_option(worker_process, counter):
    slow = counter("slow")
    limited = tasks.record_and_sleep.delay(slow, 30)
    worker_process("-c", "1", "--time-limit", "0.5")
    wait_until(lambda: status(limited) == states.FAILURE, timeout=20)
    assert count(slow) == 1  # acked on timeout, not run again


def test_soft_time_limit_raises_inside_the_task_so_it_can_clean_up(burst, counter):
    key = counter("soft")
    result = tasks.soft_limited.delay(key)
    started = time.monotonic()
    burst()
    assert time.monotonic() - started < 3
    assert result.get(timeout=1) == "cleaned up"
    assert count(key + ":cleanup") == 1


def test_soft_time_limit_per_call_overrides_the_task(burst, counter):
    key = counter("soft-call")
    result = tasks.soft_limited.apply_async([key], soft_time_limit=10)
    started = time.monotonic()
    burst()
    assert time.monotonic() - started >= 4.5  # slept: the call's 10 s limit won
    assert result.get(timeout=1) == "slept"


# -- revoke --------------------------------------------------------------------


def test_revoked_queued_task_never_runs_and_is_revoked(burst, counter):
    key = counter("revoked")
    result = tasks.record.delay(key)
    result.revoke()
    assert result.status == states.REVOKED  # at once
    burst()
    assert count(key) == 0
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_revoked_scheduled_task_never_runs_when_due(burst, counter, broker):
    key = counter("revoked-eta")
    result = tasks.record.apply_async([key], countdown=0.3)
    djtasks.revoke(result.id)
    time.sleep(0.4)
    burst()
    assert count(key) == 0
    assert broker.scheduled_count() == 0 and broker.queue_depths(["default"])["default"] == 0


@pytest.mark.subprocess
def test_a_worker_started_after_revoke_does_not_run_it(worker_process, counter):
    key = counter("late-worker")
    result = tasks.record.delay(key)
    djtasks.revoke(result.id)
    worker = worker_process("--pool", "solo", "--burst")
    assert worker.wait(30) == 0
    assert count(key) == 0
    assert status(result) == states.REVOKED


@pytest.mark.subprocess
def test_revoke_terminate_kills_the_running_task_on_prefork(worker_process, counter):
    slow, quick = counter("slow"), counter("quick")
    running = tasks.record_and_sleep.delay(slow, 30)
    worker_process("-c", "1")
    wait_until(lambda: count(slow) == 1, what="the task to start")
    running.revoke(terminate=True)
    row = TaskResult.objects.filter(task_id=running.id)
    wait_until(lambda: row.filter(exception_message="terminated").exists(), timeout=10,
               what="the row to say terminated")
    assert row.get().status == states.REVOKED
    after = tasks.record.delay(quick)
    wait_until(lambda: status(after) == states.SUCCESS, timeout=20)
    assert count(slow + ":done") == 0


# -- rate limits ---------------------------------------------------------------


@pytest.mark.subprocess
def test_rate_limit_holds_across_two_workers(worker_process, redis_client, key_prefix):
    key = f"{key_prefix}:rate-starts"
    for _ in range(15):
        tasks.rate_limited.delay(key)
    worker_process("--pool", "solo")
    worker_process("--pool", "solo")
    wait_until(lambda: redis_client.llen(key) == 15, timeout=30, what="15 rate-limited runs")
    starts = sorted(float(t) for t in redis_client.lrange(key, 0, -1))
    # 5/s with a bucket of 5: 10 runs need at least 2 s of refills.
    assert starts[-1] - starts[0] >= 1.8
    for i, t in enumerate(starts):  # never more than 5 + 5 in any one second
        assert sum(1 for u in starts[i:] if u - t < 1.0) <= 10


def test_rate_limit_string_forms():
    from djtasks.options import parse_rate

    assert parse_rate("10/s") == 10
    assert parse_rate("120/m") == 2
    assert parse_rate("3600/h") == 1
    assert parse_rate(4) == 4
    for bad in ("10/d", "fast", "0/s", -1, True):
        with pytest.raises(TypeError, match="rate_limit"):
            parse_rate(bad)


# -- delivery on worker death ----------------------------------------------------


@pytest.mark.subprocess
def test_acks_late_task_interrupted_by_kill_9_runs_again(worker_process, counter):
    slow = counter("late")
    result = tasks.record_and_sleep_late.delay(slow, 3)
    first = worker_process("--pool", "solo", lease=1)
    wait_until(lambda: count(slow) == 1, what="the first run")
    kill_and_outlive(worker_process, first, lease=1)
    assert count(slow) == 2  # at least once: it ran again
    assert count(slow + ":done") == 1
    assert status(result) == states.SUCCESS


@pytest.mark.subprocess
def test_reject_on_worker_lost_false_ends_in_failure_instead(worker_process, counter):
    slow = counter("no-redelivery")
    result = tasks.sleep_no_redelivery.delay(slow, 30)
    first = worker_process("--pool", "solo", lease=1)
    wait_until(lambda: count(slow) == 1, what="the first run")
    kill_and_outlive(worker_process, first, lease=1)
    assert count(slow) == 1
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.exception_type) == (states.FAILURE,
                                                "djtasks.exceptions.WorkerLostError")


@pytest.mark.subprocess
def test_a_long_task_runs_once_with_two_workers_up(worker_process, counter):
    key = counter("long")
    result = tasks.record_and_sleep_late.delay(key, 3.5)  # longer than the 1 s lease
    worker_process("--pool", "solo", lease=1)
    worker_process("--pool", "solo", lease=1)
    wait_until(lambda: status(result) == states.SUCCESS, timeout=20)
    time.sleep(1)
    assert count(key) == 1


@pytest.mark.subprocess
def test_poison_message_is_dead_lettered_after_max_deaths_and_worker_stays_up(
    worker_process, counter, broker
):
    key = counter("poison")
    result = tasks.kill_my_executor.delay(key)
    worker = worker_process("-c", "1")
    wait_until(lambda: broker.dead_letters(), timeout=30, what="the dead letter")
    [dead] = broker.dead_letters()
    assert dead.id == result.id
    assert "died while running it 3 times" in dead.reason
    assert count(key) == 3
    ok = tasks.add.delay(1, 1)
    wait_until(lambda: status(ok) == states.SUCCESS, timeout=20)
    assert worker.proc.poll() is None


def test_dead_letters_can_be_listed_and_requeued(burst, broker, capsys):
    from djtasks.message import Message

    msg = Message(id="dl-1", task="tests.app.tasks.add", args=[2, 3], kwargs={},
                  queue="default")
    broker.publish([(msg, msg.encode())])
    [d] = broker.consumer("probe/0.1", ["default"]).fetch(1, 0)
    broker.consumer("probe/0.1", ["default"]).dead_letter(d, "for the test")
    call_command("djtasks", "deadletters")
    assert "dl-1" in capsys.readouterr().out
    call_command("djtasks", "requeue", "dl-1")
    assert broker.dead_letters() == []
    burst()
    assert AsyncResult("dl-1").get(timeout=1) == 5


# -- worker life ------------------------------------------------------------------


def test_max_tasks_per_child_replaces_the_executor(broker):
    results = [tasks.pid.delay() for _ in range(4)]
    run_burst("-c", "1", "--max-tasks-per-child", "2", pool="prefork")
    pids = [r.get(timeout=5) for r in results]
    assert len(set(pids)) == 2
    assert pids[0] == pids[1] and pids[2] == pids[3]


def test_max_memory_per_child_replaces_the_executor(broker):
    first = tasks.hog_memory.delay(80)
    second = tasks.hog_memory.delay(1)
    run_burst("-c", "1", "--max-memory-per-child", "60000", pool="prefork")
    assert first.get(timeout=5) != second.get(timeout=5)


def test_threads_pool_runs_io_bound_tasks_side_by_side(broker, counter):
    key = counter("threads")
    results = [tasks.sleep_then_record.delay(key, 0.6) for _ in range(4)]
    started = time.monotonic()
    run_burst("-c", "4", "--prefetch-multiplier", "1", pool="threads")
    assert time.monotonic() - started < 2.2  # 4 x 0.6 s in sequence would be 2.4 s+
    assert count(key) == 4
    assert all(r.get(timeout=1) for r in results)


@pytest.mark.subprocess
def test_shutdown_timeout_turns_a_warm_shutdown_cold(worker_process, counter):
    slow = counter("slow")
    result = tasks.record_and_sleep.delay(slow, 30)
    worker = worker_process("-c", "1", "--shutdown-timeout", "1")
    wait_until(lambda: count(slow) == 1, what="the task to start")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - started < 8
    row = TaskResult.objects.get(task_id=result.id)
    assert row.exception_type == "djtasks.exceptions.WorkerLostError"


@pytest.mark.subprocess
def test_second_signal_is_a_cold_shutdown_that_gives_messages_back(
    worker_process, counter, broker
):
    slow = counter("slow")
    tasks.record_and_sleep_late.delay(slow, 30)
    waiting = [tasks.add.delay(i, i) for i in range(3)]
    worker = worker_process("--pool", "solo", "--prefetch-multiplier", "10")
    wait_until(lambda: count(slow) == 1, what="the task to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()
    assert "cold shutdown" in worker.output()
    # The acks_late task and the three waiting ones are all back in the queue.
    assert broker.queue_depths(["default"]) == {"default": 4}
    assert all(AsyncResult(r.id).status == states.PENDING for r in waiting)


@pytest.mark.subprocess
def test_workers_command_lists_a_running_worker(worker_process):
    worker = worker_process("-c", "1", "-Q", "default,other", "-n", "probe@test")
    worker.wait_for_output("djtasks worker")
    wait_until(lambda: "probe@test" in _workers(), timeout=10)
    text = _workers()
    assert "alive" in text and "queues default,other" in text


def _workers() -> str:
    from io import StringIO

    buf = StringIO()
    call_command("djtasks", "workers", stdout=buf)
    return buf.getvalue()


@pytest.mark.subprocess
def test_reload_restarts_the_worker_when_code_changes(worker_process, tmp_path):
    import importlib

    module = importlib.import_module("tests.app.reloadme")
    worker = worker_process("--pool", "solo", "--reload")
    worker.wait_for_output("djtasks worker", timeout=30)
    time.sleep(1.5)  # the reloader has taken its first look at the files
    os.utime(module.__file__)
    wait_until(lambda: worker.output().count("djtasks worker") >= 2, timeout=30,
               what="a second banner after the change")


# -- signals and logging -------------------------------------------------------------


def test_task_and_worker_signals_are_sent_with_celery_arguments(burst):
    seen: list[tuple[str, dict]] = []

    def receiver(name):
        def receive(sender, **kwargs):
            seen.append((name, {"sender": sender, **kwargs}))
        return receive

    receivers = {name: receiver(name) for name in (
        "before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
        "task_success", "task_failure", "worker_ready", "worker_shutdown")}
    for name, fn in receivers.items():
        getattr(signals, name).connect(fn)
    try:
        ok = tasks.add.delay(1, 2)
        bad = tasks.fail.delay("sig")
        burst()
    finally:
        for name, fn in receivers.items():
            getattr(signals, name).disconnect(fn)
    names = [n for n, _ in seen]
    assert names.count("before_task_publish") == 2 and names.count("after_task_publish") == 2
    assert names[-1] == "worker_shutdown" and "worker_ready" in names
    prerun = next(kw for n, kw in seen if n == "task_prerun")
    assert prerun["task_id"] == ok.id and prerun["args"] == [1, 2]
    success = next(kw for n, kw in seen if n == "task_success")
    assert success["result"] == 3 and success["sender"] is tasks.add  # the task, as Celery
    failure = next(kw for n, kw in seen if n == "task_failure")
    assert failure["task_id"] == bad.id and isinstance(failure["exception"], ValueError)
    postrun = [kw for n, kw in seen if n == "task_postrun"]
    assert [p["state"] for p in postrun] == [states.SUCCESS, states.FAILURE]


def test_log_records_in_a_task_carry_its_id_and_name(burst, caplog):
    result = tasks.log_something.delay("hello")
    with caplog.at_level("WARNING", logger="tests.app.tasks"):
        burst()
    [record] = [r for r in caplog.records if r.getMessage() == "task says hello"]
    assert record.task_id == result.id
    assert record.task_name == "tests.app.tasks.log_something"


@pytest.mark.subprocess
def test_worker_output_shows_task_name_and_id_on_task_log_lines(worker_process):
    result = tasks.log_something.delay("from a subprocess")
    worker = worker_process("--pool", "solo", "--burst")
    assert worker.wait(30) == 0
    assert f"tests.app.tasks.log_something[{result.id}]" in worker.output()


def test_a_finished_task_is_logged_with_its_run_time_in_celerys_words(burst, caplog):
    result = tasks.add.delay(1, 2)
    with caplog.at_level("INFO", logger="djtasks.worker"):
        burst()
    [line] = [r.getMessage() for r in caplog.records if result.id in r.getMessage()]
    assert re.fullmatch(rf"task tests\.app\.tasks\.add\[{result.id}\] succeeded in "
                        r"\d+\.\d{3}s: 3", line), line


def test_a_retry_is_logged_with_when_it_will_run(burst, caplog):
    result = tasks.retry_in_30s.delay()
    with caplog.at_level("INFO", logger="djtasks.worker"):
        burst()
    [line] = [r.getMessage() for r in caplog.records if "retry 1 scheduled" in r.getMessage()]
    match = re.search(r"scheduled for (\S+) \(in ([\d.]+)s\)", line)
    assert match and result.id in line, line
    eta = datetime.fromisoformat(match.group(1))
    assert 25 < float(match.group(2)) <= 30
    assert 25 < (eta - datetime.now(UTC)).total_seconds() <= 30


@pytest.mark.subprocess
def test_prefork_executors_log_under_their_own_process_name(worker_process):
    result = tasks.log_record_process_name.delay()
    worker = worker_process("--pool", "prefork", "-c", "1", "--burst")
    assert worker.wait(30) == 0, worker.output()
    assert result.get(timeout=5) == "executor-1"


def test_retry_backoff_is_exponential_capped_and_jittered():
    from djtasks.task import Task

    def fn():
        pass

    plain = Task(fn, name="t.backoff", retry_backoff=2, retry_backoff_max=10,
                 retry_jitter=False)
    assert [plain.backoff_countdown(n) for n in range(5)] == [2, 4, 8, 10, 10]
    jittered = Task(fn, name="t.jitter", retry_backoff=True, retry_jitter=True)
    assert all(0 <= jittered.backoff_countdown(3) <= 8 for _ in range(50))
    assert Task(fn, name="t.none", default_retry_delay=7).backoff_countdown(4) == 7


# -- review fixes ---------------------------------------------------------------------


@pytest.mark.subprocess
def test_shutdown_timeout_also_holds_on_the_solo_pool(worker_process, counter):
    slow = counter("slow")
    result = tasks.record_and_sleep.delay(slow, 30)
    worker = worker_process("--pool", "solo", "--shutdown-timeout", "1")
    wait_until(lambda: count(slow) == 1, what="the task to start")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.output()
    assert time.monotonic() - started < 8
    row = TaskResult.objects.get(task_id=result.id)
    assert row.exception_type == "djtasks.exceptions.WorkerLostError"
    assert "cold shutdown" in row.exception_message


@pytest.mark.subprocess
def test_cold_shutdown_requeues_an_acks_late_task_without_failing_its_row(
    worker_process, counter, broker
):
    slow = counter("slow")
    result = tasks.record_and_sleep_late.delay(slow, 30)
    worker = worker_process("--pool", "solo")
    wait_until(lambda: count(slow) == 1, what="the task to start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert broker.queue_depths(["default"]) == {"default": 1}
    assert AsyncResult(result.id).status != states.FAILURE
    # A stop the worker chose is not a death the task caused.
    assert broker.client.hget(broker.deaths_key, result.id) is None


@pytest.mark.subprocess
def test_terminating_a_finished_task_kills_no_executor(worker_process, counter):
    done = tasks.add.delay(1, 1)
    worker = worker_process("-c", "1")
    wait_until(lambda: status(done) == states.SUCCESS, what="the task to finish")
    children = worker.children()
    done.revoke(terminate=True)
    time.sleep(1)
    assert worker.children() == children
    assert status(done) == states.SUCCESS


@pytest.mark.subprocess
def test_fetched_messages_of_a_killed_executor_run_on_its_replacement(
    worker_process, counter
):
    slow, quick = counter("slow"), counter("quick")
    tasks.record_and_sleep.delay(slow, 60)
    for _ in range(3):
        tasks.record.delay(quick)
    worker = worker_process("-c", "1", "--prefetch-multiplier", "10")
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)  # it holds the three fetched messages
    wait_until(lambda: count(quick) == 3, what="the fetched messages to run")
    assert count(slow) == 1


def test_a_requeued_dead_letter_keeps_its_priority(broker):
    from djtasks.message import Message

    msg = Message(id="dl-prio", task="tests.app.tasks.add", args=[1, 1], kwargs={},
                  queue="default", priority=7)
    broker.publish([(msg, msg.encode())])
    [d] = broker.consumer("probe/0.1", ["default"]).fetch(1, 0)
    broker.consumer("probe/0.1", ["default"]).dead_letter(d, "test")
    broker.requeue_dead_letter("dl-prio")
    assert broker.client.llen(broker.list_key("default", 7)) == 1


def test_lint_command_reports_a_planted_object_with_its_line(tmp_path, capsys):
    from django.core.management.base import CommandError

    view = tmp_path / "views.py"
    view.write_text(
        "from shop.tasks import send_welcome_email\n"
        "\n"
        "def signup(request, form):\n"
        "    user = form.save()\n"
        "    send_welcome_email.delay(user)\n"
    )
    with pytest.raises(CommandError) as excinfo:
        call_command("djtasks", "lint", str(tmp_path))
    assert excinfo.value.returncode == 1
    out = capsys.readouterr().out
    assert f"{view}:5:" in out and "DJT101 send_welcome_email.delay(user)" in out
    assert "pass user.pk" in out


def test_lint_command_passes_on_the_example_project(capsys):
    call_command("djtasks", "lint", "example_project")
    assert "no findings" in capsys.readouterr().out


@pytest.mark.subprocess
def test_a_retry_killed_by_its_time_limit_before_its_started_row_is_not_left_retry(
        worker_process, counter):
    key = counter("retry-hang")
    result = tasks.retry_then_hang.delay(key)
    worker = worker_process("-c", "1")
    wait_until(lambda: count(key) == 2, timeout=60, what="the retry to start")
    wait_until(lambda: TaskResult.objects.get(task_id=result.id).status != states.RETRY,
               timeout=30, what="the killed retry's row to settle")
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.exception_type) == (
        states.FAILURE, "djtasks.exceptions.TimeLimitExceeded")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
