"""A broker nobody can abuse: signatures, size limits, passwords and TLS."""

import os
import shutil
import socket
import subprocess
import time

import pytest
import redis as redis_py

from djtasks import AsyncResult, states
from djtasks.exceptions import TaskArgumentError
from djtasks.message import Message
from djtasks.models import TaskResult
from djtasks.signing import MessageSigner
from tests.app import tasks
from tests.app.tasks import count

pytestmark = pytest.mark.django_db(transaction=True)


def publish_body(broker, message: Message, body: bytes) -> None:
    broker.publish([(message, body)])


def test_a_message_signed_with_another_key_is_dead_lettered_and_never_run(
    burst, broker, counter
):
    key = counter("forged")
    forged = Message(id="forged-1", task="tests.app.tasks.record", args=[key], kwargs={},
                     queue="default")
    payload = forged.encode().rpartition(b":")[0]
    publish_body(broker, forged, MessageSigner("attacker's key", []).sign(payload))
    burst()
    assert count(key) == 0
    [dead] = broker.dead_letters()
    assert dead.id == "forged-1" and "signature does not match" in dead.reason


def test_a_foreign_message_is_dead_lettered_with_a_hint_to_set_key_prefix(
    burst, broker, counter
):
    # Another project on the same Redis database and KEY_PREFIX: its SECRET_KEY differs.
    foreign = Message(id="foreign-1", task="tests.app.tasks.record", args=[counter("x")],
                      kwargs={}, queue="default")
    payload = foreign.encode().rpartition(b":")[0]
    publish_body(broker, foreign, MessageSigner("another project's key", []).sign(payload))
    burst()
    [dead] = broker.dead_letters()
    assert "another project using the same Redis database" in dead.reason
    assert "each project needs its own KEY_PREFIX" in dead.reason


def test_an_altered_message_is_dead_lettered(burst, broker, counter):
    key = counter("altered")
    message = Message(id="altered-1", task="tests.app.tasks.record", args=[key], kwargs={},
                      queue="default")
    body = message.encode().replace(b'"args":[', b'"args":["x",', 1)
    publish_body(broker, message, body)
    burst()
    assert count(key) == 0
    assert "signature" in broker.dead_letters()[0].reason


def test_messages_signed_before_a_secret_key_rotation_still_run(burst, settings, counter):
    key = counter("rotated")
    result = tasks.record.delay(key)  # signed with the current key
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a brand new secret key for the rotation test"
    burst()
    assert result.get(timeout=1) == 1


def test_without_the_old_key_in_fallbacks_they_are_dead_lettered(burst, settings, broker):
    tasks.add.delay(1, 1)
    settings.SECRET_KEY = "a brand new secret key for the rotation test"
    burst()
    assert len(broker.dead_letters()) == 1


def test_a_name_that_is_not_a_registered_task_is_never_looked_up(burst, broker):
    message = Message(id="evil-1", task="os.system", args=["touch /tmp/djtasks-pwned"],
                      kwargs={}, queue="default")
    broker.publish([(message, message.encode())])
    burst()
    assert not os.path.exists("/tmp/djtasks-pwned")
    assert "no task is registered as 'os.system'" in broker.dead_letters()[0].reason


def test_a_message_over_max_message_bytes_is_refused_before_anything_is_written(broker):
    big = "x" * (1024 * 1024 + 1)
    with pytest.raises(TaskArgumentError, match="MAX_MESSAGE_BYTES"):
        tasks.echo.delay(big)
    assert TaskResult.objects.count() == 0
    assert broker.queue_depths(["default"]) == {"default": 0}


def test_max_message_bytes_is_a_setting(broker, settings):
    settings.DJTASKS = {**settings.DJTASKS, "MAX_MESSAGE_BYTES": 2048}
    tasks.echo.delay("x" * 1000)
    with pytest.raises(TaskArgumentError, match="2,048"):
        tasks.echo.delay("x" * 3000)


# -- passwords and TLS -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """Start a redis-server with a password (and TLS when asked) on free ports."""
    started = []

    def start(password: str, tls: bool = False):
        port = _free_port()
        args = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--requirepass", password]
        if tls:
            cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                 "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                 "-keyout", str(key), "-out", str(cert)],
                check=True, capture_output=True,
            )
            args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(port)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        scheme = "rediss" if tls else "redis"
        query = f"?ssl_ca_certs={tmp_path / 'redis.crt'}" if tls else ""
        url = f"{scheme}://:{password}@127.0.0.1:{port}/0{query}"
        client = redis_py.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_py.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return url

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_password_protected_redis_works_and_the_password_stays_hidden(
    private_redis, settings, burst
):
    url = private_redis("p4ssw0rd-secret")
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": url}
    result = tasks.add.delay(2, 3)
    out = burst()
    assert result.get(timeout=1) == 5
    assert "p4ssw0rd-secret" not in out and ":***@" in out


def test_a_wrong_password_fails_without_showing_it(private_redis, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    url = private_redis("right-password")
    settings.DJTASKS = {**settings.DJTASKS,
                        "BROKER_URL": url.replace("right-password", "wrong-password")}
    with pytest.raises(CommandError) as excinfo:
        call_command("runworker", burst=True, pool="solo")
    assert "wrong-password" not in str(excinfo.value)
    assert "refused" in str(excinfo.value) or "unreachable" in str(excinfo.value)


def test_rediss_tls_with_a_password_runs_tasks_end_to_end(private_redis, settings, burst):
    url = private_redis("tls-secret", tls=True)
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": url}
    result = tasks.add.delay(20, 22)
    out = burst()
    assert result.get(timeout=2) == 42
    assert "rediss://" in out and "tls-secret" not in out
    assert AsyncResult(result.id).status == states.SUCCESS
