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
