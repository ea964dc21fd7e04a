"""The outbox (DESIGN.md section 3): a committed task is never lost, on a
private redis-server stopped between the commit and the publish, and with the
web process SIGKILLed between them."""

import os
import subprocess
import sys

import pytest
from django.db import transaction

from djtasks import AsyncResult, states
from djtasks.brokers import get_broker
from djtasks.models import TaskResult
from djtasks.outbox import sweep
from tests.app import tasks
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def on_private_redis(settings, private_redis_server):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": private_redis_server.url}
    return private_redis_server


def depth() -> int:
    broker = get_broker()
    return broker.queue_depths(["default"])["default"] + broker.scheduled_count()


def test_a_task_committed_while_redis_is_down_is_published_once_redis_is_back(
        on_private_redis, burst, caplog):
    with transaction.atomic():
        result = tasks.add.delay(2, 3)
        on_private_redis.stop()  # down at the commit
    # The caller's request did not fail; the row is the record of the task.
    assert TaskResult.objects.get(task_id=result.id).status == states.PENDING
    assert "could not publish" in caplog.text
    on_private_redis.start()  # back, and empty
    assert sweep(get_broker(), grace=0) == [result.id]
    burst()
    assert result.get(timeout=1) == 5


def test_the_outbox_never_publishes_a_task_the_broker_holds(on_private_redis):
    queued = tasks.add.delay(1, 1)  # published, waiting in a backlog
    assert sweep(get_broker(), grace=0) == []
    assert sweep(get_broker(), grace=0) == []
    assert depth() == 1
    assert AsyncResult(queued.id).status == states.PENDING


def test_the_outbox_waits_for_its_grace_period(on_private_redis):
    with transaction.atomic():
        tasks.add.delay(1, 1)
        on_private_redis.stop()
    on_private_redis.start()
    assert sweep(get_broker(), grace=60) == []  # too young: its publish may be on its way
    assert depth() == 0


def test_delay_makes_one_round_trip_while_redis_is_up(on_private_redis, monkeypatch):
    from redis.connection import Connection

    tasks.add.delay(1, 1)  # the scripts are loaded: count from here
    sent: list[bytes] = []
    real = Connection.send_packed_command

    def spy(self, command, *args, **kwargs):
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", spy)
    tasks.add.delay(1, 1)
    assert len(sent) == 1 and b"EVALSHA" in sent[0]  # the publish, nothing for the outbox


@pytest.mark.subprocess
def test_a_task_committed_by_a_process_killed_before_publishing_runs(
        on_private_redis, worker_process, key_prefix):
    from django.db import connection

    # The web process commits, then dies (SIGKILL) before its on-commit publish.
    code = (
        "import os, signal\n"
        "from django.db import transaction\n"
        "from tests.app import tasks\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
        "    print(tasks.add.delay(20, 22).id, flush=True)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "DJTASKS_TEST_KEY_PREFIX": key_prefix,
           "DJTASKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
           "DJTASKS_TEST_BROKER_URL": on_private_redis.url}
    web = subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert web.returncode == -9, web.stderr
    task_id = web.stdout.strip().splitlines()[-1]
    assert TaskResult.objects.get(task_id=task_id).status == states.PENDING
    assert depth() == 0  # never published
    worker_process("--pool", "solo", lease=0.6, broker_url=on_private_redis.url,
                   extra_env={"DJTASKS_TEST_OUTBOX_GRACE": "0.5"})
    wait_until(lambda: AsyncResult(task_id).status == states.SUCCESS, timeout=20,
               what="the worker's outbox to publish the task and a worker to run it")
    assert AsyncResult(task_id).get(timeout=1) == 42
