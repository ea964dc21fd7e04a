"""A real ``manage.py runworker`` subprocess: signals, crashes, outages, eta."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis as redis_py

from djtasks import AsyncResult, states
from djtasks.models import TaskResult
from tests.app import tasks
from tests.app.tasks import count
from tests.conftest import kill_and_outlive, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


def test_sigterm_finishes_the_running_task_and_gives_back_the_rest(
    worker_process, counter, broker
):
    slow = counter("slow")
    quick = counter("quick")
    long_task = tasks.record_and_sleep.delay(slow, 1.5)
    waiting = [tasks.record.delay(quick) for _ in range(3)]
    worker = worker_process("--pool", "solo", "--prefetch-multiplier", "10")
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert count(slow + ":done") == 1  # the running task finished
    assert count(quick) == 0  # the fetched ones did not start...
    assert broker.queue_depths(["default"]) == {"default": 3}  # ...and went back
    assert AsyncResult(long_task.id).status == states.SUCCESS
    assert all(r.status == states.PENDING for r in waiting)
    assert "warm shutdown" in worker.output()


def test_kill_9_redelivers_fetched_messages_but_not_the_started_one(
    worker_process, counter, broker
):
    slow = counter("slow")
    quick = counter("quick")
    started = tasks.record_and_sleep.delay(slow, 60)
    waiting = [tasks.record.delay(quick) for _ in range(3)]
    worker = worker_process("--pool", "solo", "--prefetch-multiplier", "10", lease=1)
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    assert broker.queue_depths(["default"]) == {"default": 0}  # all four fetched
    kill_and_outlive(worker_process, worker, lease=1)
    assert count(quick) == 3  # every fetched-not-started message ran, once
    assert count(slow) == 1  # the started one did not run again (acks_late=False)
    assert all(AsyncResult(r.id).status == states.SUCCESS for r in waiting)
    row = TaskResult.objects.get(task_id=started.id)
    assert row.status == states.FAILURE
    assert row.exception_type == "djtasks.exceptions.WorkerLostError"


def test_kill_9_of_an_executor_replaces_it_and_requeues_its_messages(
    worker_process, counter
):
    slow = counter("slow")
    quick = counter("quick")
    tasks.record_and_sleep.delay(slow, 60)
    worker = worker_process("-c", "1", "--prefetch-multiplier", "10")
    wait_until(lambda: count(slow) == 1, what="the slow task to start")
    for _ in range(2):
        tasks.record.delay(quick)
    [child] = worker.children()
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: count(quick) == 2, what="the queued tasks to run on a new executor")
    [new_child] = worker.children()
    assert new_child != child
    assert count(slow) == 1
    assert "exited with -9" in worker.output()


def test_worker_refuses_to_start_when_checks_fail(worker_process, tmp_path):
    worker = worker_process("--burst", settings_module="tests.settings_bad_route")
    assert worker.wait(30) != 0
    assert "djtasks.E001" in worker.output()
    assert "djtasks worker" not in worker.output()  # no banner: it never started


def test_eta_task_runs_within_a_second_of_its_time_and_once(worker_process, counter):
    key = counter("eta")
    workers = [worker_process("--pool", "solo"), worker_process("--pool", "solo")]
    for w in workers:
        w.wait_for_output("djtasks worker")
    result = tasks.record.apply_async([key], countdown=1.5)
    published = time.time()
    time.sleep(1.0)
    assert count(key) == 0  # not early
    wait_until(lambda: AsyncResult(result.id).status == states.SUCCESS, timeout=5)
    row = TaskResult.objects.get(task_id=result.id)
    lateness = row.started.timestamp() - (published + 1.5)
    assert -0.05 <= lateness < 1.0
    time.sleep(0.5)
    assert count(key) == 1  # two workers, one run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_private_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis_py.Redis(port=port)
    wait_until(lambda: _pings(client), timeout=10, what="private redis")
    return proc


def _pings(client: redis_py.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_py.exceptions.ConnectionError:
        return False


def test_worker_survives_redis_going_away_and_reconnects(
    worker_process, settings, counter
):
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    private = _start_private_redis(port)
    try:
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": url}
        os.environ["DJTASKS_TEST_REDIS_URL"] = url
        try:
            worker = worker_process("--pool", "solo")
        finally:
            del os.environ["DJTASKS_TEST_REDIS_URL"]
        worker.wait_for_output("djtasks worker")
        private.kill()
        private.wait()
        time.sleep(1.5)
        assert worker.proc.poll() is None, worker.output()  # still up
        private = _start_private_redis(port)
        result = tasks.add.delay(3, 4)
        wait_until(lambda: AsyncResult(result.id).status == states.SUCCESS, timeout=20,
                   what="the task published after Redis came back")
        assert "broker error, retrying" in worker.output()
    finally:
        private.kill()
        private.wait()


def test_an_eta_far_ahead_waits_in_redis_once_and_outlives_worker_restarts(
    worker_process, counter, broker
):
    from datetime import timedelta

    from django.utils import timezone

    key = counter("far-eta")
    result = tasks.record.apply_async([key], eta=timezone.now() + timedelta(hours=1))
    first = [worker_process("--pool", "solo"), worker_process("-c", "2")]
    for w in first:
        w.wait_for_output("djtasks worker")
    time.sleep(1.5)
    for w in first:
        w.kill_group()  # the eta task is in Redis, not in a worker's memory
    second = worker_process("--pool", "solo")
    second.wait_for_output("djtasks worker")
    time.sleep(1.0)
    assert count(key) == 0  # not early
    assert broker.scheduled_count() == 1  # and held once, not copied per worker
    assert broker.queue_depths(["default"]) == {"default": 0}
    assert AsyncResult(result.id).status == states.PENDING


def test_a_worker_started_while_the_broker_is_down_waits_then_runs_tasks(
    worker_process, private_redis_server, settings
):
    from djtasks.brokers import reset_broker

    private_redis_server.stop()
    worker = worker_process("--pool", "solo", broker_url=private_redis_server.url)
    worker.wait_for_output("waiting for the broker redis://127.0.0.1:")
    time.sleep(1)  # a retry or two: it must still be waiting, not gone
    assert worker.proc.poll() is None, worker.output()
    private_redis_server.start()
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": private_redis_server.url}
    reset_broker()
    result = tasks.add.delay(2, 3)
    assert result.get(timeout=30) == 5, worker.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_for_the_broker_exits_cleanly(
    worker_process, private_redis_server, signum
):
    private_redis_server.stop()
    worker = worker_process("--pool", "solo", broker_url=private_redis_server.url)
    worker.wait_for_output("waiting for the broker")
    worker.signal(signum)
    assert worker.wait(10) == 0, worker.output()
    assert "stopped before the broker answered" in worker.output()
