"""Fixtures: a real Redis (fails under CI when down), per-test key prefixes,
in-process and subprocess workers, and djtasks.testing's ``djtasks_capture``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.core.management import call_command
from django.db import connection

pytest_plugins = ["djtasks.testing"]  # the djtasks_capture fixture, as a project enables it

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("DJTASKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    """The shared test Redis. Under CI a Redis that is down fails the test."""
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_URL} is down and CI is set: start it, do not skip")
        pytest.skip(f"Redis at {REDIS_URL} is down")
    return redis.Redis.from_url(REDIS_URL)


@pytest.fixture(autouse=True)
def key_prefix(settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Each test gets its own Redis key prefix, deleted afterwards."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    settings.DJTASKS = {**settings.DJTASKS, "KEY_PREFIX": prefix}
    yield prefix
    if _redis_up():
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match="{" + prefix + "}*", count=1000))
        keys += list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def broker(redis_client, key_prefix):  # type: ignore[no-untyped-def]
    from djtasks.brokers import get_broker

    return get_broker()


@pytest.fixture
def counter(redis_client, key_prefix) -> Callable[[str], str]:  # type: ignore[no-untyped-def]
    """``counter("name")`` -> a Redis key the test tasks INCR, scoped to this test."""
    return lambda name: f"{key_prefix}:count:{name}"


def run_burst(*args: str, **options: object) -> str:
    """Run ``runworker --burst --pool solo`` in this process; return its output."""
    out = io.StringIO()
    options.setdefault("pool", "solo")
    call_command("runworker", *args, burst=True, stdout=out, stderr=out, **options)
    return out.getvalue()


@pytest.fixture
def burst(broker) -> Callable[..., str]:  # type: ignore[no-untyped-def]
    return run_burst


class WorkerProcess:
    """A real ``manage.py runworker`` subprocess in its own process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runworker", *args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never printed {text!r}:\n{self.output()}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def children(self) -> list[int]:
        """Pids of the supervisor's executor processes, sorted."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                             text=True).stdout
        return sorted(int(p) for p in out.split())

    def kill_group(self) -> None:
        """kill -9 the supervisor and every executor."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill_group()
        self._log.close()


@pytest.fixture
def worker_process(broker, key_prefix, tmp_path):  # type: ignore[no-untyped-def]
    """Start real workers: ``worker_process("-c", "2", lease=2)``; all killed at teardown."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, lease: float = 30, settings_module: str = "tests.settings",
        broker_url: str | None = None, extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DJTASKS_TEST_KEY_PREFIX": key_prefix,
            "DJTASKS_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "DJTASKS_TEST_LEASE": str(lease),
            "PYTHONUNBUFFERED": "1",
        }
        if broker_url is not None:
            env["DJTASKS_TEST_BROKER_URL"] = broker_url
        env.update(extra_env or {})
        w = WorkerProcess(list(args), env, tmp_path / f"worker-{len(started)}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def kill_and_outlive(
    start: Callable[..., WorkerProcess], worker: WorkerProcess, lease: float = 1.0
) -> WorkerProcess:
    """kill -9 ``worker`` (every process), wait until its ``lease`` (seconds)
    has run out, then run a burst worker to the end; return that one."""
    worker.kill_group()
    time.sleep(lease + 0.2)
    survivor = start("--pool", "solo", "--burst")
    assert survivor.wait(30) == 0, survivor.output()
    return survivor


def wait_until(predicate: Callable[[], object], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


class PrivateRedis:
    """A redis-server of the test's own on a free port (never the shared
    one), which the test may stop and start again on the same port."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _pings(client), timeout=10, what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture
def private_redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()
