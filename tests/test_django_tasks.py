"""Django's tasks framework on djtasks (``djtasks.backends.DjtasksBackend``):
``@django.tasks.task`` functions enqueued through the enqueue door, run by a
real worker (in-process burst) on Redis, results read from the database."""

import sys
from datetime import datetime, timedelta

import django
import pytest

if django.VERSION < (6, 0):
    pytest.skip("django.tasks exists from Django 6.0 on", allow_module_level=True)

import redis
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.db import transaction
from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone

from djtasks import revoke, states
from djtasks.backends import DjangoTaskWrapper, DjtasksBackend, djtasks_priority
from djtasks.models import TaskResult
from djtasks.registry import registry
from tests.app import django_tasks
from tests.app import tasks as djtasks_tasks

pytestmark = pytest.mark.django_db(transaction=True)

BOTH_QUEUES = ("-Q", "default,other")


def test_the_backend_supports_defer_priority_results_and_async_tasks():
    backend = task_backends["default"]
    assert isinstance(backend, DjtasksBackend)
    assert (backend.supports_defer, backend.supports_priority, backend.supports_get_result,
            backend.supports_async_task) == (True, True, True, True)


def test_enqueue_writes_a_pending_row_and_returns_a_ready_result(broker):
    result = django_tasks.add.enqueue(2, y=3)
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.task_name, row.queue, row.args, row.kwargs) == (
        states.PENDING, "tests.app.django_tasks.add", "default", [2], {"y": 3})
    assert result.status == TaskResultStatus.READY
    assert (result.task, result.args, result.kwargs) == (django_tasks.add, [2], {"y": 3})
    assert result.enqueued_at == row.created
    assert (result.started_at, result.finished_at, result.attempts) == (None, None, 0)
    assert broker.queue_depths(["default"])["default"] == 1


def test_a_worker_runs_it_and_get_result_reads_the_outcome(burst):
    result = django_tasks.add.enqueue(20, 22)
    burst()
    done = default_task_backend.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.is_finished
    assert done.return_value == 42
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.last_attempted_at == done.started_at
    assert done.worker_ids[0].startswith("djtasks@") and done.attempts == 1
    assert done.errors == []
    assert django_tasks.add.get_result(result.id) == done


def test_refresh_moves_the_enqueued_result_on(burst):
    result = django_tasks.add.enqueue(1, 2)
    burst()
    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (
        TaskResultStatus.SUCCESSFUL, 3, 1)


def test_aenqueue_and_aget_result(burst):
    result = async_to_sync(django_tasks.add.aenqueue)(4, 5)
    assert result.status == TaskResultStatus.READY
    burst()
    done = async_to_sync(django_tasks.add.aget_result)(result.id)
    assert done.return_value == 9


def test_a_failure_is_failed_with_the_exception_class_path_and_traceback(burst):
    result = django_tasks.fail.enqueue("boom")
    burst()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert error.traceback.endswith("ValueError: boom\n")
    assert "raise ValueError(message)" in error.traceback
    assert result.finished_at is not None


def test_a_return_value_that_is_not_json_fails_with_type_error(burst):
    result = django_tasks.return_an_object.enqueue()
    burst()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


def test_arguments_must_be_json_and_nothing_is_written_otherwise(broker):
    with pytest.raises(TypeError, match="Unsupported type"):
        django_tasks.add.enqueue(datetime.now(), 1)
    assert TaskResult.objects.count() == 0
    assert broker.queue_depths(["default"])["default"] == 0


def test_takes_context_gets_the_running_result_and_attempt_number(burst):
    result = django_tasks.context_of.enqueue("x")
    burst()
    result.refresh()
    seen = result.return_value
    assert (seen["id"], seen["attempt"], seen["status"], seen["args"], seen["started"]) == (
        result.id, 1, "RUNNING", ["x"], True)
    assert seen["worker_ids"] == result.worker_ids


def test_an_async_task_runs_on_the_worker(burst):
    result = django_tasks.async_add.enqueue(1, 2)
    burst()
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 3)


def test_django_signals_are_sent_enqueued_then_started_then_finished(burst):
    seen = []

    def receiver(signal, sender, task_result, **kwargs):
        name = {task_enqueued: "enqueued", task_started: "started",
                task_finished: "finished"}[signal]
        seen.append((name, sender, task_result.id, task_result.status))

    for signal in (task_enqueued, task_started, task_finished):
        signal.connect(receiver)
    try:
        ok = django_tasks.add.enqueue(1, 1)
        failing = django_tasks.fail.enqueue("no")
        burst()
    finally:
        for signal in (task_enqueued, task_started, task_finished):
            signal.disconnect(receiver)
    backend = DjtasksBackend
    assert seen == [
        ("enqueued", backend, ok.id, TaskResultStatus.READY),
        ("enqueued", backend, failing.id, TaskResultStatus.READY),
        ("started", backend, ok.id, TaskResultStatus.RUNNING),
        ("finished", backend, ok.id, TaskResultStatus.SUCCESSFUL),
        ("started", backend, failing.id, TaskResultStatus.RUNNING),
        ("finished", backend, failing.id, TaskResultStatus.FAILED),
    ]


def test_a_worker_side_receiver_that_raises_is_not_the_tasks_fault(burst):
    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    task_started.connect(broken)
    task_finished.connect(broken)
    try:
        result = django_tasks.add.enqueue(1, 2)
        burst()
    finally:
        task_started.disconnect(broken)
        task_finished.disconnect(broken)
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 3)


def test_a_worker_finds_a_django_task_its_process_never_enqueued(burst):
    result = django_tasks.add.enqueue(3, 4)
    name = "tests.app.django_tasks.add"
    assert isinstance(registry.get(name), DjangoTaskWrapper)
    registry.unregister(name)  # as in a fresh worker process
    burst()
    assert django_tasks.add.get_result(result.id).return_value == 7
    assert isinstance(registry.get(name), DjangoTaskWrapper)


def test_an_unknown_name_is_still_not_registered():
    from djtasks.exceptions import NotRegistered

    for name in ("tests.app.django_tasks.nothing_here", "no.such.module", "builtins.len",
                 "tests.app.tasks.add_later"):
        with pytest.raises(NotRegistered):
            registry.get(name)


def test_without_a_djtasks_backend_in_tasks_no_name_is_imported(settings, monkeypatch):
    from djtasks.exceptions import NotRegistered

    monkeypatch.delitem(sys.modules, "tests.app.reloadme", raising=False)
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
    with pytest.raises(NotRegistered):
        registry.get("tests.app.reloadme.task")
    assert "tests.app.reloadme" not in sys.modules
    registry.unregister("tests.app.django_tasks.add")
    with pytest.raises(NotRegistered):
        registry.get("tests.app.django_tasks.add")
    settings.TASKS = {"default": {"BACKEND": "djtasks.backends.DjtasksBackend"}}
    assert isinstance(registry.get("tests.app.django_tasks.add"), DjangoTaskWrapper)


def test_get_result_of_an_ordinary_djtasks_task_or_an_unknown_id_does_not_exist(broker):
    ordinary = djtasks_tasks.add.delay(1, 2)
    for result_id in (ordinary.id, "no-such-id"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


@pytest.mark.parametrize(("stored", "expected"), [
    (states.PENDING, TaskResultStatus.READY),
    (states.STARTED, TaskResultStatus.RUNNING),
    (states.RETRY, TaskResultStatus.READY),
    (states.SUCCESS, TaskResultStatus.SUCCESSFUL),
    (states.FAILURE, TaskResultStatus.FAILED),
    (states.REVOKED, TaskResultStatus.FAILED),
])
def test_djtasks_states_map_onto_django_statuses(broker, stored, expected):
    result = django_tasks.add.enqueue(1, 2)
    now = timezone.now()
    ran = stored != states.PENDING
    TaskResult.objects.filter(task_id=result.id).update(
        status=stored, worker="djtasks@host.1/0.1" if ran else "",
        started=now if ran else None, finished=now if ran else None,
        result=3 if stored == states.SUCCESS else None,
        exception_type="builtins.OSError" if stored in states.EXCEPTION_STATES else "",
        exception_message="disk", traceback="Traceback...\nOSError: disk\n")
    result.refresh()
    assert result.status == expected
    assert result.is_finished == (expected in (TaskResultStatus.SUCCESSFUL,
                                               TaskResultStatus.FAILED))
    assert result.finished_at == (now if result.is_finished else None)
    assert [e.exception_class for e in result.errors] == (
        [OSError] if stored in states.EXCEPTION_STATES else [])
    assert result.worker_ids == (["djtasks@host.1"] if ran else [])


def test_a_revoked_task_is_failed_with_task_revoked_error(broker):
    result = django_tasks.add.enqueue(1, 2)
    revoke(result.id)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "djtasks.exceptions.TaskRevokedError"
    assert result.worker_ids == []  # it never ran


def test_an_old_row_with_a_short_exception_type_reads_as_a_builtins_path(broker):
    result = django_tasks.fail.enqueue("old")
    TaskResult.objects.filter(task_id=result.id).update(
        status=states.FAILURE, exception_type="ValueError", exception_message="old")
    result.refresh()
    assert result.errors[0].exception_class is ValueError


def test_validate_task_raises_invalid_task():
    later = timezone.now() + timedelta(minutes=1)
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        django_tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match="Queue 'reports' is not valid"):
        django_tasks.add.using(queue_name="reports")  # not in QUEUES
    with pytest.raises(InvalidTask, match="aware datetime"):
        django_tasks.add.using(run_after=later.replace(tzinfo=None))
    assert django_tasks.add.using(run_after=later, priority=-100).run_after == later


def test_a_queue_name_djtasks_cannot_carry_is_invalid(settings):
    settings.TASKS = {"default": {"BACKEND": "djtasks.backends.DjtasksBackend", "QUEUES": []}}
    with pytest.raises(InvalidTask, match="not a djtasks queue name"):
        django_tasks.add.using(queue_name="two words")
    assert django_tasks.add.using(queue_name="any.queue").queue_name == "any.queue"


def test_backend_options_are_checked(settings):
    for options, words in (({"PRIORITY": 3}, "unknown key"),
                           ({"ENQUEUE_ON_COMMIT": "yes"}, "True or False")):
        settings.TASKS = {"x": {"BACKEND": "djtasks.backends.DjtasksBackend",
                                "OPTIONS": options}}
        with pytest.raises(InvalidTaskBackend, match=words):
            task_backends["x"]
    settings.TASKS = {"x": {"BACKEND": "djtasks.backends.DjtasksBackend",
                            "QUEUES": ["fine", "not fine"]}}
    with pytest.raises(InvalidTaskBackend, match="'not fine'"):
        task_backends["x"]


def test_run_after_waits_in_the_broker_and_reads_back(broker, burst):
    later = timezone.now() + timedelta(minutes=5)
    result = django_tasks.add.using(run_after=later).enqueue(1, 1)
    assert broker.scheduled_count() == 1
    burst()
    result.refresh()
    assert result.status == TaskResultStatus.READY
    assert django_tasks.add.get_result(result.id).task.run_after == later


def test_priority_maps_onto_ten_djtasks_bands_in_order():
    assert [djtasks_priority(p) for p in (-100, -19, 0, 1, 100)] == [0, 4, 4, 5, 9]
    bands = [djtasks_priority(p) for p in range(-100, 101)]
    assert bands == sorted(bands)
    assert {bands.count(b) for b in range(10)} == {20, 21}


def test_higher_priority_runs_first(burst, counter, settings):
    key = counter("order")
    django_tasks.append.using(priority=-50).enqueue(key, "low")
    django_tasks.append.using(priority=90).enqueue(key, "high")
    burst(*BOTH_QUEUES)
    ran = redis.Redis.from_url(settings.DJTASKS["BROKER_URL"]).lrange(key, 0, -1)
    assert ran == [b"high", b"low"]


def test_get_result_gives_back_the_declared_priority_and_a_per_call_one_as_its_band(broker):
    declared = django_tasks.append.enqueue("k", "v")
    assert django_tasks.append.get_result(declared.id).task == django_tasks.append
    per_call = django_tasks.append.using(priority=50).enqueue("k", "v")
    row = TaskResult.objects.get(task_id=per_call.id)
    assert (row.priority, row.queue) == (7, "other")
    assert django_tasks.append.get_result(per_call.id).task.priority == 41  # band 7: 41..60


def test_enqueue_in_a_transaction_publishes_at_commit_and_a_rollback_leaves_nothing(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = django_tasks.add.enqueue(1, 1)
        assert TaskResult.objects.filter(task_id=rolled_back.id).exists()
        assert broker.queue_depths(["default"])["default"] == 0
        raise RuntimeError("roll back")
    assert not TaskResult.objects.filter(task_id=rolled_back.id).exists()
    assert broker.queue_depths(["default"])["default"] == 0
    with transaction.atomic():
        committed = django_tasks.add.enqueue(1, 1)
    assert broker.queue_depths(["default"])["default"] == 1
    assert default_task_backend.get_result(committed.id).status == TaskResultStatus.READY


def test_enqueue_on_commit_false_publishes_inside_the_transaction(broker, settings):
    settings.TASKS = {"default": {"BACKEND": "djtasks.backends.DjtasksBackend",
                                  "OPTIONS": {"ENQUEUE_ON_COMMIT": False}}}
    with transaction.atomic():
        django_tasks.add.enqueue(1, 1)
        assert broker.queue_depths(["default"])["default"] == 1


def test_always_eager_runs_at_enqueue_and_returns_the_outcome(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ALWAYS_EAGER": True}
    ok = django_tasks.context_of.enqueue("e")
    assert ok.status == TaskResultStatus.SUCCESSFUL
    assert ok.return_value["id"] == ok.id and ok.return_value["attempt"] == 1
    assert ok.enqueued_at <= ok.started_at <= ok.finished_at
    failed = django_tasks.fail.enqueue("eager")
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class is ValueError
    assert TaskResult.objects.count() == 0  # eager runs write no rows, as djtasks' do


def test_the_system_checks_accept_a_registered_wrapper(broker):
    django_tasks.add.enqueue(1, 1)
    call_command("check", "--fail-level", "WARNING", "--database", "default")
