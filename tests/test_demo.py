"""``make demo`` as a new user meets it: ``scripts/demo.sh`` and the example's
worker, run as real subprocesses on SQLite and the database broker."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.tasks import count
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.subprocess


def example_env(var_dir: Path, settings_module: str = "example_project.settings") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJTASKS_BROKER")}
    env.update(DJANGO_SETTINGS_MODULE=settings_module, EXAMPLE_VAR_DIR=str(var_dir),
               PYTHONUNBUFFERED="1")
    return env


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def enqueue(env: dict, call: str) -> str:
    """The id of the task ``call`` (Python, e.g. ``tasks.add.delay(1, 2)``) enqueues."""
    return manage(env, "shell", "-v0", "-c",
                  f"from tests.app import tasks\nprint({call}.id)").strip()


def stored_status(var_dir: Path, task_id: str) -> str | None:
    with sqlite3.connect(var_dir / "example.sqlite3") as db:
        row = db.execute("SELECT status FROM djtasks_taskresult WHERE task_id = ?",
                         (task_id,)).fetchone()
    return row[0] if row else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ctrl_c_on_the_demo_is_a_warm_shutdown_and_a_clean_exit(tmp_path, counter):
    env = example_env(tmp_path, "tests.settings_demo")
    env.update(PY=sys.executable, PORT=str(free_port()))
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        demo = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "example site:" in log.read_text(), 60, "the demo to start")
        key = counter("demo")
        task_id = enqueue(env, f"tasks.record_and_sleep.delay({key!r}, 2)")
        wait_until(lambda: count(key) == 1, 30, "the slow task to start")
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert demo.wait(60) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert stored_status(tmp_path, task_id) == "SUCCESS", log.read_text()
    assert "cold shutdown" not in log.read_text()


def test_each_djtasks_log_line_prints_once_with_the_examples_logging(tmp_path):
    env = example_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v0")
    task_id = manage(env, "shell", "-v0", "-c",
                     "from example_project.shop.tasks import send_welcome_email\n"
                     "print(send_welcome_email.delay(999_999).id)").strip()
    worker = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "runworker", "--pool", "solo", "--burst"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = worker.stdout + worker.stderr
    lines = [line for line in output.splitlines() if f"[{task_id}] failed in" in line]
    assert len(lines) == 1, output
