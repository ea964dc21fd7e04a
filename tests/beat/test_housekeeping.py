"""The built-in clean-ups beat runs as ordinary schedules, and a worker
started with --beat running schedules on its own."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from djtasks import states
from djtasks.beat.housekeeping import cleanup_results, trim_dead_letters, trim_workers
from djtasks.message import Message
from djtasks.models import TaskResult
from tests.app.tasks import _redis
from tests.conftest import wait_until

DAY = 24 * 3600


@pytest.mark.django_db
def test_cleanup_results_deletes_results_finished_before_result_expires(settings):
    now = timezone.now()
    TaskResult.objects.create(task_id="old", task_name="t", status=states.SUCCESS,
                              finished=now - timedelta(days=8))
    TaskResult.objects.create(task_id="recent", task_name="t", status=states.SUCCESS,
                              finished=now - timedelta(days=1))
    assert cleanup_results() == 1
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["recent"]


@pytest.mark.django_db
def test_cleanup_results_keeps_everything_when_result_expires_is_none(settings):
    settings.DJTASKS = {**settings.DJTASKS, "RESULT_EXPIRES": None}
    TaskResult.objects.create(task_id="old", task_name="t", status=states.SUCCESS,
                              finished=timezone.now() - timedelta(days=800))
    assert cleanup_results() == 0 and TaskResult.objects.count() == 1


def test_trim_dead_letters_forgets_only_old_letters(broker):
    message = Message(id="m1", task="t", args=[], kwargs={}, queue="default")
    broker.publish([(message, message.encode())])
    [delivery] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).dead_letter(delivery, "unknown task")
    assert trim_dead_letters() == 0  # 30 days by default
    time.sleep(0.01)
    assert trim_dead_letters(older_than=0.001) == 1
    assert broker.dead_letters() == []


def test_trim_workers_forgets_workers_lost_for_a_day(broker):
    broker.register_worker("gone", {"last_seen": time.time() - 2 * DAY})
    broker.register_worker("alive", {"last_seen": time.time()})
    assert trim_workers() == 1
    assert list(broker.workers()) == ["alive"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.subprocess
def test_a_worker_with_beat_runs_schedules(worker_process, counter):
    key = counter("embedded")
    worker = worker_process("--pool", "prefork", "-c", "1", "--beat",
                            settings_module="tests.beat.settings_beat",
                            extra_env={"DJTASKS_TEST_BEAT_COUNTER": key})
    wait_until(lambda: _redis().hlen(key) >= 3, timeout=30,
               what=f"three ticks run by runworker --beat:\n{worker.output()}")
    assert all(int(v) == 1 for v in _redis().hvals(key))
    assert ", beat" in worker.output()
