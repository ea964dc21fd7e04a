"""Celery's signals: task signals sent with the task object as sender,
``connect`` as a decorator, headers on the publish signals, the receive-side
and worker-life signals, ``current_task`` and ``states``. Against a real
worker: in this process (``--burst``) or a subprocess for the process signals."""

from __future__ import annotations

import signal as os_signal
import uuid

import pytest

from djtasks import current_task, signals, states
from djtasks.brokers import get_broker
from djtasks.message import Message, dump_envelope
from tests.app import celery_tasks as ct
from tests.app import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def seen():
    """Connect receivers with ``connect(name, **kw)``; all disconnected afterwards."""
    got: list[tuple[str, dict]] = []
    connected = []

    def connect(name, **kw):
        def receive(sender, **kwargs):
            got.append((name, {"sender": sender, **kwargs}))
        getattr(signals, name).connect(receive, weak=False, **kw)
        connected.append((name, receive))

    yield got, connect
    for name, fn in connected:
        getattr(signals, name).disconnect(fn)


def test_task_signals_are_sent_with_the_task_object(seen, burst):
    got, connect = seen
    for name in ("task_prerun", "task_postrun", "task_success", "task_failure"):
        connect(name)
    tasks.add.delay(1, 2)
    tasks.fail.delay("x")
    burst()
    senders = {name: kw["sender"] for name, kw in got}
    assert senders["task_success"] is tasks.add and senders["task_success"].name == tasks.add.name
    assert senders["task_failure"] is tasks.fail


def test_connect_with_a_sender_task_receives_only_that_tasks_signals(seen, burst):
    got, connect = seen
    connect("task_success", sender=tasks.add)
    tasks.add.delay(1, 2)
    ct.one_arg.delay(9)
    burst()
    assert [kw["result"] for _, kw in got] == [3]


def test_connect_works_as_a_decorator_with_and_without_arguments(burst):
    got = []

    @signals.task_success.connect
    def plain(sender, result, **kwargs):
        got.append(("plain", result))

    @signals.task_success.connect(sender=ct.one_arg, weak=False)
    def filtered(sender, result, **kwargs):
        got.append(("filtered", result))

    try:
        assert plain.__name__ == "plain" and filtered.__name__ == "filtered"
        tasks.add.delay(1, 2)
        ct.one_arg.delay(7)
        burst()
    finally:
        signals.task_success.disconnect(plain)
        signals.task_success.disconnect(filtered, sender=ct.one_arg)
    assert sorted(got) == [("filtered", 7), ("plain", 3), ("plain", 7)]


def test_task_failure_einfo_is_an_exception_info(seen, burst):
    got, connect = seen
    connect("task_failure")
    tasks.fail.delay("boom")
    burst()
    einfo = got[0][1]["einfo"]
    assert isinstance(einfo.exception, ValueError) and einfo.type is ValueError
    assert "Traceback" in str(einfo) and "boom" in str(einfo)


def test_publish_signals_carry_the_message_headers(seen):
    got, connect = seen
    connect("before_task_publish")
    connect("after_task_publish")
    ct.show_headers.apply_async(headers={"tenant": "acme"})
    assert [(n, kw["headers"]) for n, kw in got] == [
        ("before_task_publish", {"tenant": "acme"}), ("after_task_publish", {"tenant": "acme"})]


def test_task_received_comes_before_prerun_with_the_request(seen, burst):
    got, connect = seen
    connect("task_received")
    connect("task_prerun")
    result = tasks.add.delay(2, 3)
    burst()
    assert [n for n, _ in got] == ["task_received", "task_prerun"]
    assert got[0][1]["request"].id == result.id


def _publish_raw(message: Message, body: bytes) -> None:
    get_broker().publish([(message, body)])


def test_task_unknown_for_a_message_naming_no_task(seen, burst):
    got, connect = seen
    connect("task_unknown")
    message = Message(id=f"u-{uuid.uuid4().hex}", task="nowhere.nothing", args=[], kwargs={},
                      queue="default")
    _publish_raw(message, dump_envelope(message.envelope()))
    burst()
    (name, kw), = got
    assert kw["name"] == "nowhere.nothing" and kw["id"] == message.id
    assert any(d.id == message.id for d in get_broker().dead_letters())


def test_task_rejected_for_a_message_that_cannot_be_decoded(seen, burst):
    got, connect = seen
    connect("task_rejected")
    message = Message(id=f"r-{uuid.uuid4().hex}", task="tests.app.tasks.add", args=[],
                      kwargs={}, queue="default")
    _publish_raw(message, b"not a djtasks envelope")
    burst()
    (name, kw), = got
    assert kw["message"].id == message.id and kw["exc"]
    assert any(d.id == message.id for d in get_broker().dead_letters())


def test_worker_init_is_sent_before_worker_ready(seen, burst):
    got, connect = seen
    connect("worker_init")
    connect("worker_ready")
    burst()
    assert [n for n, _ in got] == ["worker_init", "worker_ready"]


def _signals_env(key: str, **extra: str) -> dict[str, str]:
    return {"DJTASKS_TEST_SIGNALS": key, **extra}


def test_worker_process_init_runs_in_each_prefork_child(worker_process):
    key = f"signals:{uuid.uuid4().hex}"
    c = f"pids:{uuid.uuid4().hex}"
    results = [ct.process_pid.delay(c) for _ in range(4)]
    worker = worker_process("--pool", "prefork", "-c", "2", "--burst",
                            extra_env=_signals_env(key))
    assert worker.wait(30) == 0, worker.output()
    entries = ct.journal(key)
    inits = {pid for name, pid in entries if name == "worker_process_init"}
    (supervisor,) = {pid for name, pid in entries if name == "worker_init"}
    assert len(inits) == 2 and supervisor not in inits
    assert {r.get(timeout=5) for r in results} <= inits


def test_worker_shutting_down_on_sigterm(worker_process):
    key = f"signals:{uuid.uuid4().hex}"
    worker = worker_process("--pool", "solo", extra_env=_signals_env(key))
    worker.wait_for_output("djtasks worker")
    wait_until(lambda: ct.journal(key), what="worker_init")
    worker.signal(os_signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert ["worker_shutting_down", "SIGTERM", "Warm", 0] in ct.journal(key)


def test_a_setup_logging_receiver_leaves_logging_to_the_project(worker_process):
    key = f"signals:{uuid.uuid4().hex}"
    tasks.add.delay(1, 1)
    worker = worker_process("--pool", "solo", "--burst", "--loglevel", "WARNING",
                            extra_env=_signals_env(key, DJTASKS_TEST_SETUP_LOGGING="1"))
    assert worker.wait(30) == 0, worker.output()
    assert ["setup_logging", "WARNING"] in ct.journal(key)
    # runworker did not set the djtasks logger to WARNING: LOGGING's INFO stands.
    assert "succeeded in" in worker.output()


def test_without_a_setup_logging_receiver_runworker_configures_logging(worker_process):
    tasks.add.delay(1, 1)
    worker = worker_process("--pool", "solo", "--burst", "--loglevel", "WARNING")
    assert worker.wait(30) == 0, worker.output()
    assert "succeeded in" not in worker.output()


# -- current_task and states ------------------------------------------------------


def test_current_task_is_falsy_outside_a_task():
    assert not current_task
    with pytest.raises(RuntimeError, match="no task is running"):
        current_task.request  # noqa: B018


def test_current_task_is_the_running_task(burst):
    key = f"journal:{uuid.uuid4().hex}"
    result = ct.journaled.delay(key, "succeed")
    burst()
    run = next(e for e in ct.journal(key) if e[0] == "run")
    assert run[1] == result.id


def test_states_are_importable_as_celerys_are():
    from djtasks import states as djstates

    assert djstates is states
    assert states.SUCCESS == "SUCCESS" and states.FAILURE in states.READY_STATES
    assert states.PENDING in states.UNREADY_STATES
    assert {states.FAILURE, states.REVOKED} == states.PROPAGATE_STATES
    assert (states.IGNORED, states.REJECTED, states.RECEIVED) == (
        "IGNORED", "REJECTED", "RECEIVED")
    assert set(states.ALL_STATES) >= {states.PENDING, states.STARTED, states.RETRY}
