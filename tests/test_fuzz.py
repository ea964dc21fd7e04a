"""Fuzzing the worker's decode path: any bytes end as a dead letter or a run,
never a crash, a hang, or a message left behind."""

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from djtasks.brokers import Delivery
from djtasks.message import Message
from djtasks.models import TaskResult
from djtasks.signing import get_signer
from djtasks.worker.executor import Executor

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = settings(max_examples=150, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def executor(broker):
    ex = Executor(broker, consumer="fuzz/0.1", hostname="fuzz", queues=["default"],
                  prefetch=10)
    from djtasks.worker.results import ResultWriter

    ex.results = ResultWriter(broker, ex.consumer, interval=0.001)
    yield ex
    ex.results.stop()


_counter = iter(range(10**9))


def deliver(broker, executor, body: bytes | Callable[[str], bytes]) -> str:
    """Publish ``body`` (or ``body(id)``) under a fresh id, fetch it and let the
    executor handle it."""
    message_id = f"fuzz-{next(_counter)}"
    if callable(body):
        body = body(message_id)
    holder = Message(id=message_id, task="x", args=[], kwargs={}, queue="default")
    broker.publish([(holder, body)])
    [delivery] = executor.consumer.fetch(1, 0)
    assert isinstance(delivery, Delivery) and delivery.id == message_id
    executor.handle(delivery)
    executor.results.sync()
    executor._flush_acks()
    return message_id


def settled(broker, message_id: str) -> bool:
    """Dead-lettered, or run (a row), and in any case not left in flight."""
    in_flight = broker.client.hexists(broker.inflight_key("fuzz/0.1"), message_id)
    dead = any(d.id == message_id for d in broker.dead_letters())
    ran = TaskResult.objects.filter(task_id=message_id).exists()
    return not in_flight and (dead or ran)


@FUZZ
@given(body=st.binary(max_size=600))
def test_random_bytes_are_dead_lettered(broker, executor, body):
    message_id = deliver(broker, executor, body)
    assert settled(broker, message_id)


def _valid(message_id: str = "placeholder") -> bytes:
    """A valid envelope's JSON payload (unsigned) for tests.app.tasks.add(1, 2)."""
    m = Message(id=message_id, task="tests.app.tasks.add", args=[1, 2], kwargs={},
                queue="default")
    return get_signer().unsign(m.encode())


@FUZZ
@given(cut=st.integers(min_value=0, max_value=400))
def test_truncated_signed_envelopes_are_dead_lettered(broker, executor, cut):
    payload = _valid()[:cut]
    message_id = deliver(broker, executor, get_signer().sign(payload))
    assert settled(broker, message_id)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(field=st.sampled_from(["v", "id", "task", "args", "kwargs", "queue", "priority", "eta",
                              "expires", "retries", "parent_id", "root_id", "created",
                              "options"]),
       value=json_values)
def test_signed_envelopes_with_a_random_field_value_end_settled(broker, executor, field,
                                                                value):
    def body(message_id: str) -> bytes:
        data = json.loads(_valid(message_id))
        data[field] = value
        return get_signer().sign(json.dumps(data).encode())

    message_id = deliver(broker, executor, body)
    # A wrong field is a dead letter; a harmless change runs the task (SUCCESS,
    # or FAILURE when the arguments no longer fit add()).
    assert settled(broker, message_id)
