"""``Transport.publish_with_rows`` (djtasks/brokers/base.py): messages and
their PENDING ``TaskResult`` rows written together, on every broker whose
publish joins a database transaction (``atomic_with``); the others refuse."""

from __future__ import annotations

import pytest
from django.db import transaction

from djtasks import states
from djtasks.brokers import Broker
from djtasks.message import Message
from djtasks.models import TaskResult
from tests.contract.test_broker import ids, msg


@pytest.fixture
def results(broker: Broker):  # type: ignore[no-untyped-def]
    """The ``TaskResult`` rows on the broker's database (skips the other brokers)."""
    if broker.atomic_with is None:
        pytest.skip("publish does not join a database transaction")
    return TaskResult.objects.using(broker.atomic_with)


def fields(row: TaskResult) -> dict:
    return {f.attname: getattr(row, f.attname) for f in TaskResult._meta.concrete_fields
            if not f.primary_key}


def test_a_broker_outside_the_database_refuses_to_write_rows(broker):
    if broker.atomic_with is not None:
        pytest.skip("publish joins a database transaction")
    m, body = msg(0)
    with pytest.raises(NotImplementedError):
        broker.publish_with_rows([(m, body)], [m])


def test_the_messages_and_their_pending_rows_are_written_together(broker, results):
    m, body = msg(0, queue="reports", priority=3)
    broker.publish_with_rows([(m, body)], [m])
    row = results.get(task_id="m0")
    assert fields(row) == fields(TaskResult.from_message(m, states.PENDING))
    assert ids(broker.consumer("c/0.1", ["reports"]).fetch(1, 0)) == ["m0"]


def test_a_message_without_a_row_is_published_alone(broker, results):
    broker.publish_with_rows([msg(0)], [])
    assert broker.queue_depths(["default"]) == {"default": 1}
    assert not results.exists()


def test_a_rollback_leaves_neither_the_messages_nor_their_rows(broker, results):
    m, body = msg(0)
    with pytest.raises(RuntimeError), transaction.atomic(using=broker.atomic_with):
        broker.publish_with_rows([(m, body)], [m])
        assert results.filter(task_id="m0").exists()  # in the caller's transaction
        raise RuntimeError("roll back")
    assert not results.exists()
    assert broker.queue_depths(["default"]) == {"default": 0}


def test_a_reused_task_id_is_taken_over_by_the_new_message(broker, results):
    old = Message(id="m0", task="t.old", args=[1], kwargs={"a": 1}, queue="reports",
                  priority=3, parent_id="p0")
    broker.publish_with_rows([(old, old.encode())], [old])
    results.filter(task_id="m0").update(status=states.SUCCESS, result=1, worker="w/0.1")
    new = Message(id="m0", task="t", args=[2], kwargs={}, queue="default",
                  created=old.created + 1)
    broker.publish_with_rows([(new, new.encode())], [new])  # never an IntegrityError
    row = results.get(task_id="m0")
    assert fields(row) == fields(TaskResult.from_message(new, states.PENDING))
    assert broker.queue_depths(["default", "reports"]) == {"default": 1, "reports": 1}
