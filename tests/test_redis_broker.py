"""The Redis broker against its contract (djtasks/brokers/base.py), on a real Redis."""

import threading
import time

import pytest

from djtasks.brokers import make_broker
from djtasks.brokers.base import Fate, Started
from djtasks.message import Message

pytestmark = pytest.mark.usefixtures("redis_client")


def msg(i, queue="default", priority=0, eta=None) -> tuple[Message, bytes]:
    m = Message(id=f"m{i}", task="t", args=[i], kwargs={}, queue=queue, priority=priority,
                eta=eta)
    return m, m.encode()


def ids(deliveries) -> list[str]:
    return [d.id for d in deliveries]


def test_publish_then_consume_in_fifo_order(broker):
    broker.publish([msg(i) for i in range(5)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(10, 0)) == ["m0", "m1", "m2", "m3", "m4"]


def test_consume_takes_at_most_count(broker):
    broker.publish([msg(i) for i in range(5)])
    assert len(broker.consumer("c/0.1", ["default"]).fetch(2, 0)) == 2
    assert broker.queue_depths(["default"]) == {"default": 3}


def test_higher_priority_first_then_fifo(broker):
    broker.publish([msg(0, priority=0), msg(1, priority=9), msg(2, priority=5),
                    msg(3, priority=9)])
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(10, 0)) == ["m1", "m3", "m2", "m0"]


def test_no_queue_starves_another(broker):
    broker.publish([msg(i, queue="a") for i in range(10)])
    broker.publish([msg(100 + i, queue="b") for i in range(10)])
    consumer = broker.consumer("c/0.1", ["a", "b"])
    first_rounds = [consumer.fetch(1, 0)[0].queue for _ in range(4)]
    assert set(first_rounds) == {"a", "b"}


def test_ack_forgets_and_requeue_gives_back_to_the_front(broker):
    broker.publish([msg(i) for i in range(3)])
    got = broker.consumer("c/0.1", ["default"]).fetch(3, 0)
    broker.consumer("c/0.1", ["default"]).ack(["m0"])
    broker.consumer("c/0.1", ["default"]).requeue(["m1", "m2"])
    assert sorted(ids(broker.consumer("c/0.2", ["default"]).fetch(3, 0))) == ["m1", "m2"]
    assert len(got) == 3
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []  # m0 was acked


def test_release_gives_back_unacked_and_reports_the_running_task(broker):
    broker.publish([msg(i) for i in range(3)])
    broker.consumer("c/0.1", ["default"]).fetch(3, 0)
    assert broker.consumer("c/0.1", ["default"]).start("m0", ack=True) is Started.RUN  # acked
    released = broker.consumer("c/0.1", ["default"]).release()
    assert released.running == "m0"
    assert sorted(released.requeued) == ["m1", "m2"]
    assert broker.queue_depths(["default"]) == {"default": 2}


def test_reap_takes_back_only_consumers_whose_lease_ran_out(broker):
    broker.publish([msg(i) for i in range(2)])
    broker.consumer("dead/0.1", ["default"]).renew(0.1)
    broker.consumer("alive/0.1", ["default"]).renew(30)
    broker.consumer("dead/0.1", ["default"]).fetch(1, 0)
    broker.consumer("alive/0.1", ["default"]).fetch(1, 0)
    time.sleep(0.2)
    reaped = broker.reap()
    assert [(r.consumer, r.requeued) for r in reaped] == [("dead/0.1", ["m0"])]
    assert broker.reap() == []  # forgotten once reaped


def test_heartbeat_keeps_a_long_running_consumer_alive(broker):
    broker.publish([msg(0)])
    broker.consumer("slow/0.1", ["default"]).fetch(1, 0)
    for _ in range(4):
        broker.consumer("slow/0.1", ["default"]).renew(0.2)
        time.sleep(0.1)
        assert broker.reap() == []


def test_eta_waits_in_the_scheduled_set_until_due(broker):
    broker.publish([msg(0, eta=time.time() + 0.3)])
    assert broker.scheduled_count() == 1
    assert broker.consumer("c/0.1", ["default"]).fetch(1, 0) == []
    time.sleep(0.35)
    assert ids(broker.consumer("c/0.1", ["default"]).fetch(1, 0)) == ["m0"]
    assert broker.scheduled_count() == 0


def test_a_due_eta_message_is_delivered_once_among_racing_consumers(broker, settings):
    n = 200
    broker.publish([msg(i, eta=time.time() + 0.2) for i in range(n)])
    time.sleep(0.25)
    seen: list[str] = []
    lock = threading.Lock()

    def consume(name: str) -> None:
        own = make_broker(settings.DJTASKS["BROKER_URL"], settings.DJTASKS["KEY_PREFIX"])
        while True:
            got = own.consumer(name, ["default"]).fetch(7, 0)
            if not got:
                return
            with lock:
                seen.extend(ids(got))

    threads = [threading.Thread(target=consume, args=(f"c/{i}.1",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(seen) == sorted(f"m{i}" for i in range(n))  # each exactly once


def test_blocking_consume_wakes_when_a_message_arrives(broker, settings):
    other = make_broker(settings.DJTASKS["BROKER_URL"], settings.DJTASKS["KEY_PREFIX"])
    timer = threading.Timer(0.2, lambda: other.publish([msg(0)]))
    timer.start()
    started = time.monotonic()
    got = broker.consumer("c/0.1", ["default"]).fetch(1, 1.0)
    waited = time.monotonic() - started
    while not got and time.monotonic() - started < 2:  # a wake may land between fetches
        got = broker.consumer("c/0.1", ["default"]).fetch(1, 1.0)
    assert ids(got) == ["m0"]
    assert waited < 0.9


def test_blocking_consume_returns_empty_after_its_timeout(broker):
    started = time.monotonic()
    assert broker.consumer("c/0.1", ["default"]).fetch(1, 0.3) == []
    assert 0.25 <= time.monotonic() - started < 1.0


def test_dead_letter_keeps_the_body_and_reason(broker):
    broker.publish([msg(0)])
    [d] = broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).dead_letter(d, "could not decode")
    [dead] = broker.dead_letters()
    assert (dead.id, dead.queue, dead.reason, dead.body) == ("m0", "default",
                                                            "could not decode", d.body)
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_done_notice_wakes_a_listener(broker):
    with broker.listen_done("task-1") as listener:
        threading.Timer(0.1, lambda: broker.notify_done(["task-1"])).start()
        assert listener.wait(2) is True
    with broker.listen_done("task-2") as listener:
        assert listener.wait(0.1) is False


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


def test_start_refuses_a_message_the_consumer_no_longer_holds(broker):
    broker.publish([msg(0)])
    broker.consumer("stalled/0.1", ["default"]).fetch(1, 0)
    broker.consumer("stalled/0.1", ["default"]).release()  # its lease ran out
    assert broker.consumer("stalled/0.1", ["default"]).start("m0", ack=True) is Started.LOST
    assert broker.queue_depths(["default"]) == {"default": 1}  # still there, once


def test_start_refuses_and_acks_a_revoked_message(broker):
    broker.publish([msg(0)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.revoke(["m0"])
    assert broker.consumer("c/0.1", ["default"]).start("m0", ack=False) is Started.REVOKED
    assert broker.consumer("c/0.1", ["default"]).release().requeued == []


def test_a_retry_with_the_same_id_is_not_mistaken_for_the_running_task(broker):
    m, body = msg(0)
    broker.publish([(m, body)])
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=False, redeliver=False)  # acks_late
    broker.consumer("c/0.1", ["default"]).ack(["m0"])  # it ended
    m.retries = 1
    broker.publish([(m, m.encode())])  # its retry, same id
    broker.consumer("c/0.1", ["default"]).fetch(1, 0)
    released = broker.consumer("c/0.1", ["default"]).release()  # dies before starting the retry
    assert released.fate is Fate.ACKED and released.requeued == ["m0"]
    assert broker.queue_depths(["default"]) == {"default": 1}
    assert broker.client.hget(broker.deaths_key, "m0") is None


def test_two_frames_with_one_id_never_share_an_in_flight_slot(broker):
    broker.publish([msg(0), msg(0)])
    got = broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    assert [d.id for d in got] == ["m0"]
    assert broker.queue_depths(["default"]) == {"default": 1}  # the twin waits its turn


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


def test_revoke_reports_which_tasks_are_not_running(broker):
    broker.publish([msg(0), msg(1)])
    broker.consumer("c/0.1", ["default"]).fetch(2, 0)
    broker.consumer("c/0.1", ["default"]).start("m0", ack=True)
    assert broker.revoke(["m0", "m1"]) == ["m1"]
