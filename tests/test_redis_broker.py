"""What only the Redis broker does; the contract itself is tests/contract/."""

import time

import pytest

from djtasks.brokers import make_broker
from djtasks.brokers.base import Fate, Started
from djtasks.exceptions import BrokerError
from djtasks.message import Message

pytestmark = pytest.mark.usefixtures("redis_client")


def msg(i, queue="default", priority=0, eta=None) -> tuple[Message, bytes]:
    m = Message(id=f"m{i}", task="t", args=[i], kwargs={}, queue=queue, priority=priority,
                eta=eta)
    return m, m.encode()


def ids(deliveries) -> list[str]:
    return [d.id for d in deliveries]


def test_keys_share_one_hash_tag(broker, redis_client, key_prefix):
    broker.publish([msg(0), msg(1, eta=time.time() + 60)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    keys = [k.decode() for k in redis_client.scan_iter(match="*" + key_prefix + "*")]
    assert keys and all(k.startswith("{" + key_prefix + "}:") for k in keys)


def test_cache_url_reuses_the_django_redis_connection(settings, key_prefix):
    from django_redis import get_redis_connection

    broker = make_broker("cache://redis", key_prefix)
    assert broker.client is get_redis_connection("redis")
    broker.publish([msg(0)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(1, 0)) == ["m0"]


def test_a_malformed_frame_is_dead_lettered_without_losing_its_neighbours(broker):
    list_key = broker.list_key("default", 0)
    broker.publish([msg(0)])
    broker.client.rpush(list_key, b"no newline at all", b"\xff\xfe\n" + list_key.encode()
                        + b"\nbody", b"x\n{other}:q:default:0\nbody")
    broker.publish([msg(1)])
    got = broker.consumer("c/0.1", ["default"]).fetch(10, 0)
    assert [d.id for d in got] == ["m0", "m1"]
    reasons = [d.reason for d in broker.dead_letters()]
    assert len(reasons) == 3 and all("malformed frame" in r for r in reasons)
    [letter] = [d for d in broker.dead_letters() if d.body == b"no newline at all"]
    assert broker.requeue_dead_letter(letter.id) is False  # nothing to run, only to discard


def test_a_death_is_counted_in_the_deaths_hash_and_an_ack_forgets_it(broker):
    broker.publish([msg(0)])
    for name in ("c/0.1", "c/1.1"):
        c = broker.consumer(name, ["default"])
        c.fetch(1, 0)
        assert c.start("m0", ack=False) is Started.RUN
        if name == "c/0.1":
            assert c.release().fate is Fate.REQUEUED
    assert broker.client.hget(broker.deaths_key, "m0") == b"1"
    broker.consumer("c/1.1", ["default"]).ack(["m0"])
    assert broker.client.hget(broker.deaths_key, "m0") is None


def test_a_retry_with_the_same_id_counts_no_death(broker):
    m, body = msg(0)
    broker.publish([(m, body)])
    c = broker.consumer("c/0.1", ["default"])
    c.fetch(1, 0)
    c.start("m0", ack=False)
    c.ack(["m0"])
    m = m.next_attempt(args=None, kwargs=None, eta=None, now=time.time())
    broker.publish([(m, m.encode())])
    c.fetch(1, 0)
    assert c.release().fate is Fate.ACKED
    assert broker.client.hget(broker.deaths_key, "m0") is None


# -- the hot calls' held connection --------------------------------------------------


def test_the_hot_calls_pack_arguments_as_redis_py_does():
    from redis.connection import Connection

    from djtasks.brokers.redis import Packed, _bulk, _flat

    args = ["key", "k\u00e9y", b"\x00\xffbody", 7, 0, -3, 1796139454.4213862, 0.001, ""]
    packed = b"".join(Connection().pack_command(*args))
    count, data = _flat([Packed(args[:3]), *args[3:6], Packed(args[6:])])
    assert count == len(args)
    assert b"*%d\r\n" % count + data == packed
    with pytest.raises(TypeError):
        _bulk(True)  # as redis-py's Encoder refuses a bool


def test_the_hot_calls_reconnect_after_the_server_restarts(private_redis_server):
    broker = make_broker(private_redis_server.url, "held")
    broker.publish([msg(0)])
    private_redis_server.stop()
    private_redis_server.start()  # the same port, no data, no scripts loaded
    broker.publish([msg(1)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m1"]


def test_the_hot_calls_load_their_script_again_after_a_script_flush(private_redis_server):
    broker = make_broker(private_redis_server.url, "held")
    broker.publish([msg(0)])
    broker.client.script_flush()
    broker.publish([msg(1)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0", "m1"]


def test_a_forked_child_publishes_on_a_connection_of_its_own(private_redis_server):
    import os

    broker = make_broker(private_redis_server.url, "held")
    broker.publish([msg(0)])
    parent_id = broker.client.client_id()
    held = broker._held._connection()
    pid = os.fork()
    if pid == 0:  # the child: publish, and say whether it used the parent's socket
        code = 1
        try:
            broker.publish([msg(1)])
            code = 2 if broker._held._connection() is held else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    broker.publish([msg(2)])  # the parent's connection still works
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0", "m1", "m2"]
    assert broker.client.client_id() == parent_id


def test_a_publish_begun_is_on_its_list_before_its_reply_is_read(broker):
    broker.publish([msg(9, queue="other")])  # publish.lua is loaded: no NOSCRIPT to wait for
    finish = broker.publish_begin([msg(0)])
    deadline = time.monotonic() + 5
    while broker.client.llen(broker.list_key("default", 0)) == 0:  # another connection looks
        assert time.monotonic() < deadline, "the publish was not sent by publish_begin"
        time.sleep(0.001)
    finish()
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0"]


@pytest.mark.parametrize("retries", [0, 1])
def test_a_publish_begun_whose_connection_drops_follows_the_clients_retries(
        private_redis_server, retries):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from djtasks.brokers.redis import RedisBroker

    client = redis.Redis.from_url(private_redis_server.url, retry=Retry(NoBackoff(), retries))
    broker = RedisBroker(private_redis_server.url, key_prefix="held", client=client)
    broker.publish([msg(9, queue="other")])  # publish.lua is loaded: no NOSCRIPT to wait for
    client.execute_command("CLIENT", "PAUSE", 10000, "WRITE")  # the publish waits
    finish = broker.publish_begin([msg(0)])
    client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    client.execute_command("CLIENT", "UNPAUSE")
    assert client.llen(broker.list_key("default", 0)) == 0  # it went with its connection
    if retries:
        finish()  # its reply cannot be read: sent again on a new connection
        assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0"]
    else:
        with pytest.raises(BrokerError):  # as a publish whose connection drops: the caller knows
            finish()


def test_a_publish_begun_and_never_finished_does_not_answer_the_next_call(
        private_redis_server):
    broker = make_broker(private_redis_server.url, "owed")
    broker.publish([msg(9, queue="other")])  # publish.lua is loaded: its reply is 1
    broker.client.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # that reply comes late
    broker.publish_begin([msg(0)])  # the caller was interrupted: this reply is never read
    consumer = broker.consumer("c/0.1", ["default"])
    first = ids(consumer.fetch(5, 0))  # its own reply, not publish.lua's 1
    assert first in ([], ["m0"])  # the message may have gone with the dropped connection
    broker.publish([msg(1)])
    assert ids(consumer.fetch(5, 0)) == ["m1"]


def test_a_wait_ends_well_before_the_clients_socket_timeout(private_redis_server):
    import redis

    from djtasks.brokers.redis import RedisBroker

    # Under a second: a wait of MAX_BLOCK would outlast it.
    client = redis.Redis.from_url(private_redis_server.url, socket_timeout=0.8)
    broker = RedisBroker(private_redis_server.url, key_prefix="short", client=client)
    assert broker.max_wait == 0.4
    assert broker.consumer("c/0.1", ["default"]).fetch(1, 5.0) == []  # no TimeoutError


def test_a_publish_begun_on_a_server_that_is_down_raises_at_once(private_redis_server):
    broker = make_broker(private_redis_server.url, "held")
    private_redis_server.stop()
    with pytest.raises(BrokerError):
        broker.publish_begin([msg(0)])


def test_a_publish_begun_loads_its_script_when_the_server_lacks_it(private_redis_server):
    broker = make_broker(private_redis_server.url, "held")
    broker.client.script_flush()
    broker.publish_begin([msg(0)])()  # NOSCRIPT is read with the reply: loaded, sent again
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(5, 0)) == ["m0"]


def test_a_woken_consumer_has_its_frame_in_the_wait_s_own_round_trip(broker, monkeypatch):
    import threading

    from redis.connection import Connection

    consumer = broker.consumer("c/0.1", ["default"])
    assert consumer.fetch(1, 0) == []  # connected, the script loaded: count from here
    sent: list[bytes] = []
    real = Connection.send_packed_command

    def spy(self, command, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():  # the consumer's writes
            sent.append(command if isinstance(command, bytes) else b"".join(command))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", spy)
    publisher = threading.Timer(0.3, broker.publish, [[msg(0)]])
    publisher.start()
    try:
        assert ids(consumer.fetch(1, timeout=5)) == ["m0"]
    finally:
        publisher.join()
    # The empty fetch, then the BLPOP with the fetch behind it: one write each.
    assert len(sent) == 2 and b"BLPOP" in sent[1] and b"EVALSHA" in sent[1]


def test_an_eta_that_comes_due_during_the_wait_is_fetched_by_it(broker):
    consumer = broker.consumer("c/0.1", ["default"])
    broker.publish([msg(0, eta=time.time() + 0.3)])
    started = time.monotonic()
    assert ids(consumer.fetch(1, timeout=5)) == ["m0"]
    assert time.monotonic() - started < 2  # the wait ends at the eta, not at its timeout


def test_a_start_whose_reply_was_lost_is_asked_again_and_runs(broker, monkeypatch):
    from redis.connection import Connection
    from redis.exceptions import ConnectionError as RedisConnectionError

    broker.publish([msg(0)])
    consumer = broker.consumer("c/0.1", ["default"])
    [delivery] = consumer.fetch(1, 0)
    real = Connection.read_response
    lost = []

    def read_response(self, *args, **kwargs):
        reply = real(self, *args, **kwargs)  # the start has run on the server
        if not lost:
            lost.append(reply)
            self.disconnect()
            raise RedisConnectionError("the reply was lost")
        return reply

    monkeypatch.setattr(Connection, "read_response", read_response)
    with pytest.raises(BrokerError):
        consumer.start("m0", ack=True, token=delivery.token)  # the executor waits, asks again
    assert lost == [1]  # it ran: at most once, so the task was acked then
    # Asked again, the start finds the marker the first one wrote, of this frame.
    assert consumer.start("m0", ack=True, token=delivery.token) is Started.RUN
    assert broker.client.hget(broker.inflight_key("c/0.1"), "m0") is None
    assert broker.client.hget(broker.running_key, "c/0.1").startswith(b"m0\n")


def test_a_start_after_the_lease_ran_out_is_lost_even_if_it_started_before(broker):
    broker.publish([msg(0)])
    consumer = broker.consumer("c/0.1", ["default"])
    [delivery] = consumer.fetch(1, 0)
    assert consumer.start("m0", ack=True, token=delivery.token) is Started.RUN
    consumer.release()  # as a reaper does: its marker goes too
    assert consumer.start("m0", ack=True, token=delivery.token) is Started.LOST
