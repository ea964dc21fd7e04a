"""Exactly once with real runners: three ``manage.py runbeat`` processes race
for every tick of a one-second schedule; one is SIGKILLed in the middle of a
tick (inside the claim's transaction on the database broker, between the
commit and the publish on Redis). Every tick runs exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest
from django.db import connection

from djtasks import outbox
from djtasks.beat.models import ScheduleState
from djtasks.beat.runner import tick_task_id
from djtasks.brokers import get_broker
from djtasks.models import TaskResult
from tests.app.tasks import _redis
from tests.conftest import ROOT, run_burst, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


def start_runner(env: dict[str, str], log) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "runbeat"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.mark.parametrize("broker_url", ["redis", "db://default"])
def test_three_runners_one_killed_mid_tick_run_every_tick_exactly_once(
        broker_url, settings, redis_client, key_prefix, counter, tmp_path):
    if broker_url != "redis":
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": broker_url}
    key, marker = counter("race"), tmp_path / "stalled"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.beat.settings_beat",
           "DJTASKS_TEST_KEY_PREFIX": key_prefix,
           "DJTASKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
           "DJTASKS_TEST_BEAT_COUNTER": key, "DJTASKS_TEST_BEAT_EVERY": "1",
           "PYTHONUNBUFFERED": "1"}
    if broker_url != "redis":
        env["DJTASKS_TEST_BROKER_URL"] = broker_url
    logs = [open(tmp_path / f"beat-{i}.log", "wb") for i in range(3)]  # noqa: SIM115
    runners = [start_runner({**env, "DJTASKS_TEST_BEAT_STALL": str(marker)}, logs[0]),
               start_runner(env, logs[1]), start_runner(env, logs[2])]
    output = lambda: "\n".join((tmp_path / f"beat-{i}.log").read_text() for i in range(3))  # noqa: E731
    try:
        wait_until(marker.exists, timeout=60, what="the first runner to stall in a tick")
        os.killpg(runners[0].pid, signal.SIGKILL)  # mid-tick
        runners[0].wait(10)
        stalled_id = marker.read_text()
        time.sleep(4)  # the other two carry on
    finally:
        for runner in runners[1:]:
            if runner.poll() is None:
                runner.send_signal(signal.SIGTERM)
        for runner in runners:
            try:
                runner.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
        for log in logs:
            log.close()
    assert all(r.returncode == 0 for r in runners[1:]), output()
    if broker_url == "redis":
        outbox.sweep(get_broker(), grace=0)  # what a worker's outbox does after OUTBOX_GRACE
    run_burst()

    counts = {datetime.fromisoformat(k.decode()): int(v)
              for k, v in _redis().hgetall(key).items()}
    ticks = sorted(counts)
    assert len(ticks) >= 4, output()
    assert all(n == 1 for n in counts.values()), counts
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == \
        [timedelta(seconds=1)] * (len(ticks) - 1), ticks  # no tick left out
    assert stalled_id in {tick_task_id("race", t) for t in ticks}  # the killed one's tick ran
    assert ScheduleState.objects.get(name="race").total_runs == len(ticks)
    assert TaskResult.objects.filter(task_name="tests.app.tasks.record_tick").count() == len(ticks)
