"""The Redis broker (redis-py), the production broker.

Key layout (docs/protocol.md), every key under one hash tag ``{prefix}`` so
the Lua scripts beside this module are valid on Redis Cluster:

- ``{p}:q:<queue>:<priority>``  list of frames waiting, one list per priority 0-9
- ``{p}:wake:<queue>``          list of wake tokens idle consumers block on
- ``{p}:scheduled``             zset of frames waiting for their eta (score)
- ``{p}:inflight:<consumer>``   hash id -> frame fetched by that consumer
- ``{p}:consumers``             zset consumer -> lease deadline
- ``{p}:running``               hash consumer -> id of the task it started last
- ``{p}:dead``                  hash id -> dead letter (JSON header line + body)
- ``{p}:revoked``               zset task id -> time revoked (remembered a day)
- ``{p}:terminate``             zset task id -> time: revoked with terminate=True
- ``{p}:deaths``                hash id -> executors that died running it
- ``{p}:workers``               hash worker name -> JSON info (heartbeat)
- ``{p}:rate:<task name>``      hash: the task's rate-limit token bucket
- ``{p}:malformed``             counter naming dead letters that need a unique key
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
REVOKE_MEMORY = 86400.0  # seconds a revocation is remembered


def _script(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


class RedisBroker(Broker):
    """A broker on one Redis server (or a django-redis connection).

    ``client`` is a redis-py client; when None, one is made from ``url``.
    """

    def __init__(self, url: str, *, key_prefix: str, client: redis.Redis | None = None,
                 max_deaths: int = 3) -> None:
        self.url = url
        self.max_deaths = max_deaths
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
        self.revoked_key = self.prefix + "revoked"
        self.terminate_key = self.prefix + "terminate"
        self.deaths_key = self.prefix + "deaths"
        self.workers_key = self.prefix + "workers"
        self._publish = client.register_script(_script("publish"))
        self._fetch = client.register_script(_script("fetch"))
        self._requeue = client.register_script(_script("requeue"))
        self._reap = client.register_script(_script("reap"))
        self._start = client.register_script(_script("start"))
        self._defer = client.register_script(_script("defer"))
        self._rate = client.register_script(_script("rate"))
        self._revoke = client.register_script(_script("revoke"))
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
        args = [count, now, len(wake), self.revoked_key, self.dead_key, self.prefix]
        frames, next_eta, revoked = self._call(self._fetch, keys=keys, args=args)
        if not frames and not revoked and timeout > 0:
            wait = min(timeout, MAX_BLOCK)
            if next_eta is not None:
                wait = min(wait, max(float(next_eta) - now, 0.001))
            self._call(self.client.blpop, wake, timeout=max(wait, 0.001))
            args[1] = time.time()
            frames, _, revoked = self._call(self._fetch, keys=keys, args=args)
        return ([self._delivery(f) for f in frames]
                + [self._delivery(f, revoked=True) for f in revoked])

    def _delivery(self, frame: bytes, *, revoked: bool = False) -> Delivery:
        # fetch.lua let through only printable-ASCII ids and our own list keys.
        head, list_key, body = frame.split(b"\n", 2)
        queue = list_key.decode("utf-8", "replace")[len(self.prefix) + 2:-2]
        return Delivery(id=head.decode("ascii"), queue=queue, body=body, revoked=revoked)

    def ack(self, consumer: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(self.inflight_key(consumer), *ids)
            pipe.hdel(self.deaths_key, *ids)  # it ended: its death count no longer matters
            self._call(pipe.execute)

    def start(self, consumer: str, task_id: str, acks: Iterable[str], *,
              ack_it: bool, redeliver: bool = True) -> int:
        keys = [self.inflight_key(consumer), self.running_key, self.revoked_key]
        args = [consumer, task_id, "" if redeliver else "k", "1" if ack_it else "", *acks]
        return int(self._call(self._start, keys=keys, args=args))

    def defer(self, consumer: str, task_id: str, eta: float) -> None:
        self._call(self._defer, keys=[self.inflight_key(consumer), self.scheduled_key],
                   args=[task_id, repr(eta)])

    def take_token(self, name: str, rate: float) -> float:
        wait = self._call(self._rate, keys=[f"{self.prefix}rate:{name}"],
                          args=[repr(rate), repr(time.time())])
        return float(wait)

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

    def release(self, consumer: str, *, drop_running: str | None = None,
                shutdown: bool = False) -> Reaped:
        mode = f"drop:{drop_running}" if drop_running else "shutdown" if shutdown else ""
        reaped = self._run_reap("", mode, [consumer])
        return reaped[0] if reaped else Reaped(consumer, None, "", [])

    def reap(self) -> list[Reaped]:
        # Forget revocations older than a day while we are here.
        self._call(self.client.zremrangebyscore, self.revoked_key, "-inf",
                   time.time() - REVOKE_MEMORY)
        return self._run_reap(repr(time.time()), "", [])

    def _run_reap(self, now: str, drop: str, consumers: list[str]) -> list[Reaped]:
        keys = [self.consumers_key, self.running_key, self.deaths_key, self.dead_key]
        args = [self.prefix, now, self.max_deaths, drop, *consumers]
        flat = self._call(self._reap, keys=keys, args=args)
        out, i = [], 0
        while i < len(flat):
            consumer, running, fate = (x.decode() for x in flat[i:i + 3])
            n = int(flat[i + 3])
            requeued = [x.decode() for x in flat[i + 4:i + 4 + n]]
            out.append(Reaped(consumer, running or None, fate, requeued))
            i += 4 + n
        return out

    def running_task(self, consumer: str) -> str | None:  # the marker's first line
        marker = self._call(self.client.hget, self.running_key, consumer)
        return None if marker is None else marker.decode().split("\n", 1)[0]

    # -- revoking ------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        now = time.time()
        idle = self._call(self._revoke,
                          keys=[self.revoked_key, self.terminate_key, self.running_key],
                          args=[repr(now), "1" if terminate else "", *task_ids])
        if terminate:
            self._call(self.client.zremrangebyscore, self.terminate_key, "-inf",
                       now - REVOKE_MEMORY)
        return [i.decode() for i in idle]

    def to_terminate(self, consumers: Sequence[str]) -> dict[str, str]:
        if not consumers:
            return {}
        markers = self._call(self.client.hmget, self.running_key, list(consumers))
        running = {
            c: m.decode().split("\n", 1)[0]
            for c, m in zip(consumers, markers, strict=True) if m
        }
        if not running:
            return {}
        scores = self._call(self.client.zmscore, self.terminate_key, list(running.values()))
        return {c: t for (c, t), s in zip(running.items(), scores, strict=True) if s is not None}

    # -- workers -------------------------------------------------------------

    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        self._call(self.client.hset, self.workers_key, name, json.dumps(info))

    def unregister_worker(self, name: str) -> None:
        self._call(self.client.hdel, self.workers_key, name)

    def workers(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self.workers_key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    # -- dead letters --------------------------------------------------------

    def dead_letter(self, consumer: str, delivery: Delivery, reason: str) -> None:
        header = json.dumps({"id": delivery.id, "queue": delivery.queue, "reason": reason,
                             "time": time.time()})
        key = delivery.id
        if self._call(self.client.hexists, self.dead_key, key):  # keep both letters
            key = f"{delivery.id}:{self._call(self.client.incr, self.prefix + 'malformed')}"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.dead_key, key, header.encode() + b"\n" + delivery.body)
        pipe.hdel(self.inflight_key(consumer), delivery.id)
        self._call(pipe.execute)

    def requeue_dead_letter(self, task_id: str) -> bool:
        value = self._call(self.client.hget, self.dead_key, task_id)
        if value is None:
            return False
        header, body = value.split(b"\n", 1)
        meta = json.loads(header)
        queue, original_id = meta["queue"], meta.get("id")
        if original_id is None:  # a malformed frame: nothing to run, only to discard
            return False
        try:  # the body is <JSON>:<signature>
            priority = int(json.loads(body.rpartition(b":")[0] or body).get("priority", 0))
        except (ValueError, AttributeError, TypeError):
            priority = 0
        list_key = self.list_key(queue, priority if 0 <= priority <= 9 else 0)
        frame = f"{original_id}\n{list_key}\n".encode() + body
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(list_key, frame)
        pipe.lpush(self.wake_key(queue), b"1")
        pipe.ltrim(self.wake_key(queue), 0, 15)
        pipe.hdel(self.dead_key, task_id)
        pipe.hdel(self.deaths_key, task_id)
        self._call(pipe.execute)
        return True

    def delete_dead_letter(self, task_id: str) -> bool:
        return bool(self._call(self.client.hdel, self.dead_key, task_id))

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
