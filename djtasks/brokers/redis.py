"""The Redis broker (redis-py), the production broker.

Key layout (docs/protocol.md), every key under one hash tag ``{prefix}`` so
the Lua scripts beside this module are valid on Redis Cluster:

- ``{p}:q:<queue>:<priority>``  list of frames waiting, one list per priority 0-9
- ``{p}:wake:<queue>``          list of wake tokens idle consumers block on
- ``{p}:scheduled``             zset of frames waiting for their eta (score)
- ``{p}:inflight:<consumer>``   hash id -> frame fetched by that consumer
- ``{p}:consumers``             zset consumer -> lease deadline
- ``{p}:running``               hash consumer -> id of the task it started last
- ``{p}:dead``                  hash id -> dead letter (reason header + frame)
- ``{p}:done:<task id>``        pub/sub channel: the task has a new state

A frame is ``<id>\\n<list key>\\n<body>``: the id and destination are readable
by the scripts without decoding the JSON body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import BrokerError
from ..message import Message
from . import redact_url
from .base import Broker, DeadLetter, Delivery, DoneListener, Reaped

_LUA = Path(__file__).with_name("lua")
PRIORITIES = range(9, -1, -1)  # fetch order: 9 (highest) first
MAX_BLOCK = 1.0  # seconds an idle consume() blocks at most, so stop flags are seen


def _script(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


class RedisBroker(Broker):
    """A broker on one Redis server (or a django-redis connection).

    ``client`` is a redis-py client; when None, one is made from ``url``.
    """

    def __init__(self, url: str, *, key_prefix: str, client: redis.Redis | None = None) -> None:
        self.url = url
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=MAX_BLOCK + 10, socket_connect_timeout=5,
                socket_keepalive=True, health_check_interval=30,
            )
        self.client = client
        self.prefix = "{" + key_prefix + "}:"
        self.scheduled_key = self.prefix + "scheduled"
        self.consumers_key = self.prefix + "consumers"
        self.dead_key = self.prefix + "dead"
        self.running_key = self.prefix + "running"
        self._publish = client.register_script(_script("publish"))
        self._fetch = client.register_script(_script("fetch"))
        self._requeue = client.register_script(_script("requeue"))
        self._reap = client.register_script(_script("reap"))
        self._rotation = 0

    # -- keys ----------------------------------------------------------------

    def list_key(self, queue: str, priority: int) -> str:
        return f"{self.prefix}q:{queue}:{priority}"

    def wake_key(self, queue: str) -> str:
        return f"{self.prefix}wake:{queue}"

    def inflight_key(self, consumer: str) -> str:
        return f"{self.prefix}inflight:{consumer}"

    def done_channel(self, task_id: str) -> str:
        return f"{self.prefix}done:{task_id}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BrokerError(f"Redis at {redact_url(self.url)} is unreachable: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"Redis at {redact_url(self.url)} refused: {exc}") from exc

    # -- publishing ----------------------------------------------------------

    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        if not items:
            return
        argv: list[Any] = [time.time()]
        for message, body in items:
            list_key = self.list_key(message.queue, message.priority)
            frame = f"{message.id}\n{list_key}\n".encode() + body
            argv += [list_key, self.wake_key(message.queue), frame,
                     "" if message.eta is None else repr(message.eta)]
        self._call(self._publish, keys=[self.scheduled_key], args=argv)

    # -- consuming -----------------------------------------------------------

    def consume(
        self, consumer: str, queues: Sequence[str], count: int, timeout: float
    ) -> list[Delivery]:
        # Rotate the queue order on each fetch so no queue starves another.
        self._rotation = (self._rotation + 1) % len(queues)
        ordered = [*queues[self._rotation:], *queues[:self._rotation]]
        wake = [self.wake_key(q) for q in queues]
        keys = [self.inflight_key(consumer), self.scheduled_key, *wake]
        keys += [self.list_key(q, p) for q in ordered for p in PRIORITIES]
        now = time.time()
        frames, next_eta = self._call(self._fetch, keys=keys, args=[count, now, len(wake)])
        if not frames and timeout > 0:
            wait = min(timeout, MAX_BLOCK)
            if next_eta is not None:
                wait = min(wait, max(float(next_eta) - now, 0.001))
            self._call(self.client.blpop, wake, timeout=max(wait, 0.001))
            frames, _ = self._call(self._fetch, keys=keys, args=[count, time.time(), len(wake)])
        return [self._delivery(f) for f in frames]

    def _delivery(self, frame: bytes) -> Delivery:
        head, list_key, body = frame.split(b"\n", 2)
        queue = list_key.decode()[len(self.prefix) + 2:-2]
        return Delivery(id=head.decode(), queue=queue, body=body)

    def ack(self, consumer: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._call(self.client.hdel, self.inflight_key(consumer), *ids)

    def start(self, consumer: str, task_id: str, acks: Iterable[str]) -> None:
        # One round trip; MULTI is not needed: both commands only ever
        # shrink what a dead consumer would give back.
        pipe = self.client.pipeline(transaction=False)
        acks = list(acks)
        if acks:
            pipe.hdel(self.inflight_key(consumer), *acks)
        pipe.hset(self.running_key, consumer, task_id)
        self._call(pipe.execute)

    def requeue(self, consumer: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            self._call(self._requeue, keys=[self.inflight_key(consumer)], args=[self.prefix, *ids])

    # -- leases --------------------------------------------------------------

    def heartbeat(self, consumers: Iterable[str], lease: float) -> None:
        deadline = time.time() + lease
        mapping = {c: deadline for c in consumers}
        if mapping:
            self._call(self.client.zadd, self.consumers_key, mapping)

    def release(self, consumer: str) -> Reaped:
        reaped = self._run_reap(["", consumer])
        return reaped[0] if reaped else Reaped(consumer, None, [])

    def reap(self) -> list[Reaped]:
        return self._run_reap([repr(time.time())])

    def _run_reap(self, args: list[str]) -> list[Reaped]:
        flat = self._call(self._reap, keys=[self.consumers_key, self.running_key],
                          args=[self.prefix, *args])
        out, i = [], 0
        while i < len(flat):
            consumer, running, n = flat[i].decode(), flat[i + 1].decode(), int(flat[i + 2])
            requeued = [x.decode() for x in flat[i + 3:i + 3 + n]]
            out.append(Reaped(consumer, running or None, requeued))
            i += 3 + n
        return out

    # -- dead letters --------------------------------------------------------

    def dead_letter(self, consumer: str, delivery: Delivery, reason: str) -> None:
        header = json.dumps({"queue": delivery.queue, "reason": reason, "time": time.time()})
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.dead_key, delivery.id, header.encode() + b"\n" + delivery.body)
        pipe.hdel(self.inflight_key(consumer), delivery.id)
        self._call(pipe.execute)

    def dead_letters(self) -> list[DeadLetter]:
        out = []
        for key, value in self._call(self.client.hgetall, self.dead_key).items():
            header, body = value.split(b"\n", 1)
            meta = json.loads(header)
            out.append(DeadLetter(key.decode(), meta["queue"], body, meta["reason"], meta["time"]))
        return sorted(out, key=lambda d: d.time, reverse=True)

    # -- introspection -------------------------------------------------------

    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            for p in PRIORITIES:
                pipe.llen(self.list_key(q, p))
        counts = self._call(pipe.execute)
        n = len(PRIORITIES)
        return {q: sum(counts[i * n:(i + 1) * n]) for i, q in enumerate(queues)}

    def scheduled_count(self) -> int:
        return int(self._call(self.client.zcard, self.scheduled_key))

    # -- results -------------------------------------------------------------

    def notify_done(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.publish(self.done_channel(task_id), b"1")
        self._call(pipe.execute)

    def listen_done(self, task_id: str) -> DoneListener:
        return _RedisDoneListener(self, task_id)

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        self.client.close()


class _RedisDoneListener(DoneListener):
    def __init__(self, broker: RedisBroker, task_id: str) -> None:
        self.broker = broker
        self.pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
        broker._call(self.pubsub.subscribe, broker.done_channel(task_id))

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.broker._call(self.pubsub.get_message, timeout=remaining) is not None:
                return True

    def close(self) -> None:
        self.pubsub.close()
