"""The Redis broker (redis-py), the production broker.

Key layout (docs/protocol.md), every key under one hash tag ``{prefix}`` so
the Lua scripts beside this module are valid on Redis Cluster:

- ``{p}:q:<queue>:<priority>``  list of frames waiting, one list per priority 0-9
- ``{p}:wake:<queue>``          list of wake tokens idle consumers block on
- ``{p}:scheduled``             zset of frames waiting for their eta (score)
- ``{p}:inflight:<consumer>``   hash id -> frame fetched by that consumer
- ``{p}:consumers``             zset consumer -> lease deadline
- ``{p}:running``               hash consumer -> "<id>\\n<flags>\\n<sha1 of frame>", last started
- ``{p}:dead``                  hash id -> dead letter (JSON header line + body)
- ``{p}:started:<consumer>``    set of tasks it started whose rows are not yet written
- ``{p}:etas``                  hash id -> eta of a scheduled message
- ``{p}:revoked``               zset task id -> later of revoke time and eta (kept a day past it)
- ``{p}:terminate``             zset task id -> time: revoked with terminate=True
- ``{p}:deaths``                hash id -> executors that died running it
- ``{p}:workers``               hash worker name -> JSON info (heartbeat)
- ``{p}:published``             zset "<id>\\n<created>" -> later of created and eta (a day)
- ``{p}:duty:<name>``           string: the worker holding a duty (the outbox sweep), with a TTL
- ``{p}:rate:<task name>``      hash: the task's rate-limit token bucket
- ``{p}:malformed``             counter naming dead letters that need a unique key
- ``{p}:done:<task id>``        pub/sub channel: the task has a new state
- ``{p}:chord:<chord id>``      set of a chord's members that are done, with a TTL

A frame is ``<id>\\n<list key>\\n<body>``: the id and destination are readable
by the scripts without decoding the JSON body.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import BrokerError, BrokerUnavailable
from ..message import Message
from . import envelope_priority, redact_url
from .base import (
    MAX_BLOCK,
    PRIORITIES,
    REVOKE_MEMORY,
    Broker,
    Consumer,
    DeadLetter,
    Delivery,
    DoneListener,
    Fate,
    Held,
    Place,
    Reaped,
    Started,
    WakeStart,
)

_LUA = Path(__file__).with_name("lua")
SCAN_LIMIT = 100_000  # frames per list that locate() reads, at most
SCAN_CHUNK = 1000  # frames per LRANGE
WAKE_PLAN_BYTES = 16384  # at most, the task names a waiting fetch sends to start one of


def _script(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text()


def _with_start_and_fetch(name: str) -> str:
    """Script ``name`` (startfetch.lua, wakefetch.lua), with start.lua and
    fetch.lua as the functions it calls."""
    return "".join(f"local function {part}(KEYS, ARGV)\n{_script(part)}\nend\n"
                   for part in ("start", "fetch")) + _script(name)


_STARTED = {1: Started.RUN, 0: Started.REVOKED, -1: Started.LOST}  # start.lua's reply


def _bulk(value: Any) -> bytes:
    """One command argument in RESP, encoded as redis-py's ``Encoder`` does:
    bytes as they are, str as UTF-8, int and float by ``repr``."""
    if type(value) is str:
        data = value.encode()
    elif isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        data = repr(value).encode()
    else:
        raise TypeError(f"a {type(value).__name__} cannot be a Redis command argument")
    return b"$%d\r\n%b\r\n" % (len(data), data)


class Packed:
    """A run of command arguments packed into RESP once, for the many calls
    that send it (a consumer's keys): one item among a hot call's keys or
    arguments, standing for all of ``args``."""

    __slots__ = ("args", "data")

    def __init__(self, args: Iterable[Any]) -> None:
        self.args = tuple(args)
        self.data = b"".join(map(_bulk, self.args))


def _flat(parts: Sequence[Any]) -> tuple[int, bytes]:
    """How many arguments ``parts`` (values and ``Packed`` runs) are, and their RESP."""
    count, chunks = 0, []
    for part in parts:
        if type(part) is Packed:
            count += len(part.args)
            chunks.append(part.data)
        else:
            count += 1
            chunks.append(_bulk(part))
    return count, b"".join(chunks)


def _unpacked(parts: Sequence[Any]) -> list[Any]:
    """``parts`` with each ``Packed`` run spread out: plain arguments."""
    out: list[Any] = []
    for part in parts:
        if type(part) is Packed:
            out += part.args
        else:
            out.append(part)
    return out


# start.lua's ARGV[3..5] for (redeliver, ack, track), packed once.
_START_FLAGS = {(redeliver, ack, track): Packed(["" if redeliver else "k", "1" if ack else "",
                                                 "1" if track else ""])
                for redeliver in (True, False) for ack in (True, False) for track in (True, False)}


class _HeldConnection:
    """EVALSHA for the hot calls (publish, fetch, start) on one connection
    held per thread and process, instead of one taken from the pool and
    given back per call: they skip redis-py's ``Script``, pool, packing and
    event layers, which cost about as much as the round trip itself. The
    command is packed here, with a consumer's keys packed once (``Packed``).

    Still redis-py's ``Connection``, checked before each use as the pool
    checks one it hands out (a connection the server closed, or with
    unread data, is replaced), with the client's retry policy and health
    check. A forked child never uses its parent's connection: a new one is
    made when the pid changes.
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pool = pool
        self._local = threading.local()
        self._heads: dict[str, bytes] = {}  # sha -> "EVALSHA <sha>" packed

    def _connection(self) -> Any:
        held = getattr(self._local, "held", None)
        pid = os.getpid()
        if held is None or held[0] != pid:
            held = self._local.held = (pid, self.pool.make_connection())
        conn: Any = held[1]
        if getattr(self._local, "owed", False):
            # A reply ``evalsha_begin`` sent for was never read (the caller
            # was interrupted between the halves): it would be taken for
            # this call's, whether it has arrived yet or not.
            self._local.owed = False
            conn.disconnect()
        try:
            if conn._sock is not None and conn.can_read():  # closed by the server, or stray data
                conn.disconnect()
        except RedisConnectionError:
            conn.disconnect()  # send_packed_command connects again
        return conn

    def _packed_evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> bytes:
        head = self._heads.get(script.sha)
        if head is None:
            head = self._heads[script.sha] = _bulk("EVALSHA") + _bulk(script.sha)
        nkeys, packed_keys = _flat(keys)
        nargs, packed_args = _flat(args)
        return (b"*%d\r\n" % (3 + nkeys + nargs) + head + _bulk(nkeys) + packed_keys
                + packed_args)

    def evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``; ``keys`` and ``args`` are values and ``Packed`` runs."""
        conn = self._connection()
        packed = [self._packed_evalsha(script, keys, args)]

        def call() -> Any:
            conn.send_packed_command(packed)
            return conn.read_response()

        return self._loaded(conn, script, call)

    def evalsha_begin(self, script: Script, keys: Sequence[Any],
                      args: Sequence[Any]) -> Callable[[], Any]:
        """``evalsha`` in two halves, for a script that may run twice
        (publish.lua): the command is written now, under the client's retry
        policy, and the returned function reads its reply. If that read
        fails on a dropped connection, or the server lacks the script, the
        command is sent again as ``evalsha`` would."""
        conn = self._connection()
        packed = [self._packed_evalsha(script, keys, args)]
        conn.retry.call_with_retry(lambda: conn.send_packed_command(packed),
                                   lambda _: conn.disconnect())
        self._local.owed = True
        sent = True

        def call() -> Any:
            nonlocal sent
            if not sent:  # a retry, or after loading the script: the whole command again
                conn.send_packed_command(packed)
            sent = False
            return conn.read_response()

        def reply() -> Any:
            self._local.owed = False
            try:
                return self._loaded(conn, script, call)
            except RedisError:
                raise  # a whole error reply read, or the connection already dropped
            except BaseException:
                conn.disconnect()  # interrupted mid-read: what is left must not be read later
                raise

        return reply

    def evalsha_after_blpop(self, wake: Packed, timeout: float, script: Script,
                            keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """BLPOP the keys of ``wake`` for up to ``timeout`` seconds, then
        EVALSHA ``script``, both sent in one write; returns the script's
        reply. Redis runs a client's commands in order, the next only once
        a blocked one returns, so the script runs the moment a wake token
        arrives (or the BLPOP times out): a woken consumer has its frames
        without a round trip of its own."""
        conn = self._connection()
        nwake = len(wake.args)
        blpop = b"*%d\r\n" % (nwake + 2) + _bulk("BLPOP") + wake.data + _bulk(timeout)
        packed = [blpop, self._packed_evalsha(script, keys, args)]

        def call() -> Any:
            conn.send_packed_command(packed)
            try:
                conn.read_response()  # the wake token, or None: only a hint, as ever
            except BaseException:
                conn.disconnect()  # the fetch's reply would be read by the next command
                raise
            return conn.read_response()

        return self._loaded(conn, script, call)

    def _loaded(self, conn: Any, script: Script, call: Any) -> Any:
        """``call()`` with the client's retry policy, once more after loading
        ``script`` if the server did not have it."""
        try:
            return conn.retry.call_with_retry(call, lambda _: conn.disconnect())
        except NoScriptError:  # a restarted or flushed server: load it, as Script does
            conn.send_command("SCRIPT", "LOAD", script.script)
            conn.read_response()
            return conn.retry.call_with_retry(call, lambda _: conn.disconnect())

    def close(self) -> None:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            held[1].disconnect()
        self._local = threading.local()


def _published(message: Message) -> str:
    """The member of ``{p}:published`` that stands for one message."""
    return f"{message.id}\n{message.created!r}"


class RedisBroker(Broker):
    """A broker on one Redis server (or a django-redis connection).

    ``client`` is a redis-py client; when None, one is made from ``url``.
    """

    def __init__(self, url: str, *, key_prefix: str, client: redis.Redis | None = None,
                 max_deaths: int = 3, publish_memory: float = 86400.0) -> None:
        self.url = url
        self.max_deaths = max_deaths
        self.publish_memory = publish_memory
        if client is None:
            client = redis.Redis.from_url(
                url, socket_timeout=MAX_BLOCK + 10, socket_connect_timeout=5,
                socket_keepalive=True, health_check_interval=30,
            )
        self.client = client
        self.prefix = "{" + key_prefix + "}:"
        self.scheduled_key = self.prefix + "scheduled"
        self.etas_key = self.prefix + "etas"
        self.consumers_key = self.prefix + "consumers"
        self.dead_key = self.prefix + "dead"
        self.running_key = self.prefix + "running"
        self.revoked_key = self.prefix + "revoked"
        self.terminate_key = self.prefix + "terminate"
        self.deaths_key = self.prefix + "deaths"
        self.workers_key = self.prefix + "workers"
        self.published_key = self.prefix + "published"
        self._publish_keys = [Packed([self.scheduled_key, self.etas_key, self.published_key])]
        self._publish = client.register_script(_script("publish"))
        self._fetch = client.register_script(_script("fetch"))
        self._requeue = client.register_script(_script("requeue"))
        self._reap = client.register_script(_script("reap"))
        self._start = client.register_script(_script("start"))
        self._start_fetch = client.register_script(_with_start_and_fetch("startfetch"))
        self._wake_fetch = client.register_script(_with_start_and_fetch("wakefetch"))
        self._defer = client.register_script(_script("defer"))
        self._rate = client.register_script(_script("rate"))
        self._revoke = client.register_script(_script("revoke"))
        self._lead = client.register_script(_script("lead"))
        self._purge = client.register_script(_script("purge"))
        self._chord = client.register_script(_script("chord"))
        # A plain pool (also django-redis', Sentinel's): the hot calls hold a
        # connection of their own. Anything else (a cluster client) goes
        # through Script.
        pool = getattr(client, "connection_pool", None)
        self._held = _HeldConnection(pool) if isinstance(pool, redis.ConnectionPool) else None
        # A wait must end well before the client's socket timeout (a cache://
        # client's own setting): a read that timed out would lose the reply of
        # the fetch sent behind the BLPOP, and that fetch's frames with it.
        socket_timeout = (pool.connection_kwargs.get("socket_timeout")
                          if isinstance(pool, redis.ConnectionPool) else None)
        self.max_wait = min(MAX_BLOCK, socket_timeout / 2) if socket_timeout else MAX_BLOCK
        self._queue_keys: dict[tuple[str, int], tuple[str, str]] = {}

    def _eval(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` (a hot call) as ``_call`` does, on the held connection.
        ``keys`` and ``args`` are values and ``Packed`` runs."""
        if self._held is None:
            return self._call(script, keys=_unpacked(keys), args=_unpacked(args))
        return self._call(self._held.evalsha, script, keys, args)

    # -- keys ----------------------------------------------------------------

    def list_key(self, queue: str, priority: int) -> str:
        return f"{self.prefix}q:{queue}:{priority}"

    def wake_key(self, queue: str) -> str:
        return f"{self.prefix}wake:{queue}"

    def inflight_key(self, consumer: str) -> str:
        return f"{self.prefix}inflight:{consumer}"

    def started_key(self, consumer: str) -> str:
        return f"{self.prefix}started:{consumer}"

    def done_channel(self, task_id: str) -> str:
        return f"{self.prefix}done:{task_id}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisAuthenticationError as exc:  # a ConnectionError to redis-py, not "down"
            raise BrokerError(f"Redis at {redact_url(self.url)} refused: {exc}") from exc
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise BrokerUnavailable(
                f"Redis at {redact_url(self.url)} is unreachable: {exc}") from exc
        except RedisError as exc:
            raise BrokerError(f"Redis at {redact_url(self.url)} refused: {exc}") from exc

    # -- transport -----------------------------------------------------------

    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        if items:
            self._eval(self._publish, self._publish_keys, self._publish_argv(items))

    def publish_begin(self, items: Sequence[tuple[Message, bytes]]) -> Callable[[], None]:
        if not items or self._held is None:
            return super().publish_begin(items)
        reply = self._call(self._held.evalsha_begin, self._publish, self._publish_keys,
                           self._publish_argv(items))
        return partial(self._call, reply)

    def _publish_argv(self, items: Sequence[tuple[Message, bytes]]) -> list[Any]:
        """publish.lua's ARGV for ``items``."""
        argv: list[Any] = [self.clock()]
        keys = self._queue_keys
        for message, body in items:
            pair = keys.get((message.queue, message.priority))
            if pair is None:  # made once per queue and priority (a few hundred at most kept)
                if len(keys) >= 1000:
                    keys.clear()
                pair = keys[message.queue, message.priority] = (
                    self.list_key(message.queue, message.priority), self.wake_key(message.queue))
            list_key, wake_key = pair
            frame = f"{message.id}\n{list_key}\n".encode() + body
            argv += [message.id, list_key, wake_key, frame,
                     "" if message.eta is None else repr(message.eta), _published(message)]
        return argv

    def published(self, messages: Sequence[Message]) -> set[str]:
        if not messages:
            return set()
        scores = self._call(self.client.zmscore, self.published_key,
                            [_published(m) for m in messages])
        return {m.id for m, score in zip(messages, scores, strict=True) if score is not None}

    def consumer(self, name: str, queues: Sequence[str]) -> RedisConsumer:
        return RedisConsumer(self, name, list(queues))

    def reap(self) -> list[Reaped]:
        now = self.clock()
        # Forget revocations a day past their score (revoke time or eta), and
        # what was published longer ago than the outbox looks back.
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(self.revoked_key, "-inf", now - REVOKE_MEMORY)
        pipe.zremrangebyscore(self.published_key, "-inf", now - self.publish_memory)
        self._call(pipe.execute)
        return self._run_reap(repr(now), "", [])

    def _run_reap(self, now: str, mode: str, consumers: list[str]) -> list[Reaped]:
        keys = [self.consumers_key, self.running_key, self.deaths_key, self.dead_key]
        args = [self.prefix, now, self.max_deaths, mode, *consumers]
        flat = [x.decode() if isinstance(x, bytes) else x
                for x in self._call(self._reap, keys=keys, args=args)]
        out, i = [], 0
        while i < len(flat):
            consumer, running, fate = flat[i:i + 3]
            n = int(flat[i + 3])
            requeued = flat[i + 4:i + 4 + n]
            i += 4 + n
            m = int(flat[i])
            unsettled = flat[i + 1:i + 1 + m]
            i += 1 + m
            out.append(Reaped(consumer, running or None, Fate(fate), requeued, unsettled))
        return out

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

    def purge(self, queue: str) -> list[str]:
        keys = [self.scheduled_key, self.etas_key, *(self.list_key(queue, p) for p in PRIORITIES)]
        ids = self._call(self._purge, keys=keys, args=[repr(self.clock())])
        return [i.decode(errors="replace") for i in ids]

    def in_flight(self, queues: Sequence[str]) -> dict[str, int]:
        # A frame is "<id>\n<list key>\n<body>": its list key names its queue.
        consumers = self._call(self.client.zrange, self.consumers_key, 0, -1)
        pipe = self.client.pipeline(transaction=False)
        for name in consumers:
            pipe.hvals(self.inflight_key(name.decode()))
        keys = {self.list_key(q, p).encode(): q for q in queues for p in PRIORITIES}
        counts = dict.fromkeys(queues, 0)
        for frames in self._call(pipe.execute) if consumers else []:
            for frame in frames:
                queue = keys.get(frame.split(b"\n", 2)[1])
                if queue is not None:
                    counts[queue] += 1
        return counts

    def ping(self) -> None:
        self._call(self.client.ping)

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
        self.client.close()

    # -- inspection ----------------------------------------------------------

    def _queue_of(self, frame: bytes) -> str:
        list_key = frame.split(b"\n", 2)[1].decode(errors="replace")
        return list_key[len(self.prefix) + 2:-2]  # <prefix>q:<queue>:<priority>

    def locate(self, task_id: str, queues: Sequence[str]) -> list[Held]:
        head = task_id.encode() + b"\n"
        out: list[Held] = []
        due: list[Held] = []  # still in the scheduled zset, but ready: a fetch moves it
        eta = self._call(self.client.hget, self.etas_key, task_id)
        if eta is not None:
            for frame in self._call(self.client.zrangebyscore, self.scheduled_key, eta, eta):
                queue = self._queue_of(frame)
                if not frame.startswith(head):
                    continue
                if float(eta) > self.clock():
                    out.append(Held(Place.SCHEDULED, queue, eta=float(eta)))
                elif queue in queues:
                    due.append(Held(Place.READY, queue))
        consumers = [c.decode() for c in self._call(self.client.zrange, self.consumers_key, 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for c in consumers:
            pipe.hget(self.inflight_key(c), task_id)
        for c, frame in zip(consumers, self._call(pipe.execute) if consumers else [], strict=True):
            if frame is not None:
                out.append(Held(Place.FETCHED, self._queue_of(frame), consumer=c))
        out += due
        # Read, not searched in Redis: a Lua loop over a long list would block it.
        for queue in queues:
            for priority in PRIORITIES:
                key = self.list_key(queue, priority)
                for start in range(0, SCAN_LIMIT, SCAN_CHUNK):
                    frames = self._call(self.client.lrange, key, start, start + SCAN_CHUNK - 1)
                    out += [Held(Place.READY, queue) for f in frames if f.startswith(head)]
                    if len(frames) < SCAN_CHUNK:
                        break
        return out

    def is_revoked(self, task_id: str) -> bool:
        return self._call(self.client.zscore, self.revoked_key, task_id) is not None

    # -- revocations ---------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        now = self.clock()
        idle = self._call(
            self._revoke,
            keys=[self.revoked_key, self.terminate_key, self.running_key, self.etas_key],
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

    # -- rate limits ---------------------------------------------------------

    def take_token(self, name: str, rate: float) -> float:
        wait = self._call(self._rate, keys=[f"{self.prefix}rate:{name}"],
                          args=[repr(rate), repr(self.clock())])
        return float(wait)

    # -- workers -------------------------------------------------------------

    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        self._call(self.client.hset, self.workers_key, name, json.dumps(info))

    def unregister_worker(self, name: str) -> None:
        self._call(self.client.hdel, self.workers_key, name)

    def workers(self) -> dict[str, dict[str, Any]]:
        raw = self._call(self.client.hgetall, self.workers_key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def lead(self, duty: str, holder: str, ttl: float) -> bool:
        return bool(self._call(self._lead, keys=[f"{self.prefix}duty:{duty}"],
                               args=[holder, int(ttl * 1000)]))

    # -- chords --------------------------------------------------------------

    def chord_members_done(self, chord_id: str, member_ids: Sequence[str], size: int,
                           ttl: float) -> bool:
        return bool(self._call(self._chord, keys=[f"{self.prefix}chord:{chord_id}"],
                               args=[size, max(int(ttl * 1000), 1), *member_ids]))

    def forget_chord(self, chord_id: str) -> None:
        self._call(self.client.delete, f"{self.prefix}chord:{chord_id}")

    # -- dead letters --------------------------------------------------------

    def requeue_dead_letter(self, letter_id: str) -> bool:
        value = self._call(self.client.hget, self.dead_key, letter_id)
        if value is None:
            return False
        header, body = value.split(b"\n", 1)
        meta = json.loads(header)
        queue, original_id = meta["queue"], meta.get("id")
        if original_id is None:  # a malformed frame: nothing to run, only to discard
            return False
        list_key = self.list_key(queue, envelope_priority(body))
        frame = f"{original_id}\n{list_key}\n".encode() + body
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(list_key, frame)
        pipe.lpush(self.wake_key(queue), b"1")
        pipe.ltrim(self.wake_key(queue), 0, 15)
        pipe.hdel(self.dead_key, letter_id)
        pipe.hdel(self.deaths_key, letter_id)
        self._call(pipe.execute)
        return True

    def delete_dead_letter(self, letter_id: str) -> bool:
        return bool(self._call(self.client.hdel, self.dead_key, letter_id))

    def dead_letter_count(self) -> int:
        return int(self._call(self.client.hlen, self.dead_key))

    def dead_letters(self) -> list[DeadLetter]:
        out = []
        for key, value in self._call(self.client.hgetall, self.dead_key).items():
            header, body = value.split(b"\n", 1)
            meta = json.loads(header)
            out.append(DeadLetter(key.decode(), meta["queue"], body, meta["reason"], meta["time"]))
        return sorted(out, key=lambda d: d.time, reverse=True)

    # -- result notices ------------------------------------------------------

    def notify_done(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.publish(self.done_channel(task_id), b"1")
        self._call(pipe.execute)

    def listen_done(self, task_id: str) -> DoneListener:
        return _RedisDoneListener(self, task_id)


class RedisConsumer(Consumer):
    """A consumer's handle: its in-flight hash, started set and lease."""

    fetches_with_start = True  # startfetch.lua
    starts_on_wake = True  # wakefetch.lua

    def __init__(self, broker: RedisBroker, name: str, queues: list[str]) -> None:
        self.broker, self.name, self.queues = broker, name, queues
        self.inflight_key = broker.inflight_key(name)
        self._rotation = 0
        # What every hot call sends the same, packed once (fetch.lua's keys
        # per rotation of the queue order, on first use).
        b = broker
        self._wake_keys = [b.wake_key(q) for q in queues]
        self._wake = Packed(self._wake_keys)
        self._start_keys = Packed([self.inflight_key, b.running_key, b.revoked_key,
                                   b.started_key(name), b.deaths_key])
        self._fetch_keys: dict[int, Packed] = {}
        self._name = Packed([name])
        self._fetch_args = Packed([len(queues), b.revoked_key, b.dead_key, b.prefix,
                                   b.etas_key])

    def __repr__(self) -> str:
        return f"<RedisConsumer {self.name}>"

    def _fetch_call(self, count: int, now: float) -> tuple[list[Any], list[Any]]:
        """fetch.lua's keys and arguments (``Packed`` runs among them)."""
        # Rotate the queue order on each fetch so no queue starves another.
        self._rotation = rotation = (self._rotation + 1) % len(self.queues)
        keys = self._fetch_keys.get(rotation)
        if keys is None:
            b, queues = self.broker, self.queues
            ordered = [*queues[rotation:], *queues[:rotation]]
            keys = self._fetch_keys[rotation] = Packed(
                [self.inflight_key, b.scheduled_key, *self._wake_keys,
                 *(b.list_key(q, p) for q in ordered for p in PRIORITIES)])
        # fetch.lua's ARGV: count, now, then the wake key count and key names.
        return [keys], [count, now, self._fetch_args]

    def fetch(self, count: int, timeout: float, *,
              start: WakeStart | None = None) -> list[Delivery]:
        b = self.broker
        now = b.clock()
        keys, args = self._fetch_call(count, now)
        frames, next_eta, revoked = b._eval(b._fetch, keys, args)
        if not frames and not revoked and timeout > 0:
            wait = min(timeout, b.max_wait)
            if next_eta is not None:
                wait = min(wait, max(float(next_eta) - now, 0.001))
            wait = max(wait, 0.001)
            if b._held is None:
                b._call(b.client.blpop, self._wake_keys, timeout=wait)
            elif (groups := self._groups(start)) is not None:
                # The fetch rides behind the BLPOP, with the clock read before it,
                # and starts the first frame: a woken executor has its frames, and
                # its first task started, in the BLPOP's own round trip.
                (frames, _, revoked), started = b._call(
                    b._held.evalsha_after_blpop, self._wake, wait, b._wake_fetch,
                    [self._start_keys, *keys], [len(self._start_keys.args), groups, *args])
                if started:
                    first, *rest = self._deliveries(frames, revoked)
                    first.started = True
                    return [first, *rest]
            else:
                # The fetch rides behind the BLPOP, with the clock read before it:
                # a woken executor has its frames in the BLPOP's own round trip.
                frames, _, revoked = b._call(b._held.evalsha_after_blpop, self._wake, wait,
                                             b._fetch, keys, args)
            if not frames and not revoked:
                # Nothing yet, or only an eta that came due during the wait,
                # which a fetch on the clock read now moves to its list.
                args[1] = b.clock()
                frames, _, revoked = b._eval(b._fetch, keys, args)
        return self._deliveries(frames, revoked)

    def _groups(self, start: WakeStart | None) -> Packed | None:
        """wakefetch.lua's consumer name and flag groups for ``start``; None
        (fetch.lua instead) without a plan, or with one too large to send on
        every wait (over ``WAKE_PLAN_BYTES``)."""
        if start is None:
            return None
        by_flags: dict[tuple[bool, bool, bool], list[str]] = {}
        for name, flags in start.flags.items():
            by_flags.setdefault(flags, []).append(name)
        args: list[Any] = [self.name, len(by_flags)]
        for (ack, redeliver, track), names in sorted(by_flags.items()):
            args += [*_START_FLAGS[redeliver, ack, track].args, "\n" + "\n".join(names) + "\n"]
        packed = Packed(args)
        return packed if len(packed.data) <= WAKE_PLAN_BYTES else None

    def _deliveries(self, frames: list[bytes], revoked: list[bytes]) -> list[Delivery]:
        return ([self._delivery(f) for f in frames]
                + [self._delivery(f, revoked=True) for f in revoked])

    def _delivery(self, frame: bytes, *, revoked: bool = False) -> Delivery:
        # fetch.lua let through only printable-ASCII ids and our own list keys.
        head, list_key, body = frame.split(b"\n", 2)
        queue = list_key.decode("utf-8", "replace")[len(self.broker.prefix) + 2:-2]
        # The token is the sha1 that start.lua writes into the running marker.
        return Delivery(id=head.decode("ascii"), queue=queue, body=body, revoked=revoked,
                        token="" if revoked else hashlib.sha1(frame).hexdigest())

    def _start_args(self, task_id: str, ack: bool, redeliver: bool, track: bool,
                    acks: Iterable[str], token: str) -> tuple[list[Any], int]:
        """start.lua's arguments (its keys are ``_start_keys``) and how many they are."""
        flags = _START_FLAGS[bool(redeliver), bool(ack), bool(track)]
        args = [self._name, task_id, flags, token, *acks]
        return args, len(args) + 2  # the flags are three

    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = (), token: str = "") -> Started:
        b = self.broker
        args, _ = self._start_args(task_id, ack, redeliver, track, acks, token)
        return _STARTED[int(b._eval(b._start, [self._start_keys], args))]

    def start_and_fetch(self, task_id: str, count: int, *, ack: bool, redeliver: bool = True,
                        track: bool = True, acks: Iterable[str] = (), token: str = ""
                        ) -> tuple[Started, list[Delivery]]:
        # One round trip: startfetch.lua runs start.lua, then fetch.lua.
        b = self.broker
        start_args, nargs = self._start_args(task_id, ack, redeliver, track, acks, token)
        fetch_keys, fetch_args = self._fetch_call(count, b.clock())
        code, (frames, _, revoked) = b._eval(
            b._start_fetch, [self._start_keys, *fetch_keys],
            [len(self._start_keys.args), nargs, *start_args, *fetch_args])
        return _STARTED[int(code)], self._deliveries(frames, revoked)

    def ack(self, ids: Iterable[str], *, settled: Iterable[str] = ()) -> None:
        ids, settled = list(ids), list(settled)
        if not ids and not settled:
            return
        b = self.broker
        pipe = b.client.pipeline(transaction=False)
        if ids:
            pipe.hdel(self.inflight_key, *ids)
            pipe.hdel(b.deaths_key, *ids)  # it ended: its death count no longer matters
        if settled:
            pipe.srem(b.started_key(self.name), *settled)
        b._call(pipe.execute)

    def requeue(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            b = self.broker
            b._call(b._requeue, keys=[self.inflight_key], args=[b.prefix, *ids])

    def defer(self, task_id: str, eta: float) -> None:
        b = self.broker
        b._call(b._defer, keys=[self.inflight_key, b.scheduled_key], args=[task_id, repr(eta)])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        b = self.broker
        header = json.dumps({"id": delivery.id, "queue": delivery.queue, "reason": reason,
                             "time": b.clock()})
        key = delivery.id
        if b._call(b.client.hexists, b.dead_key, key):  # keep both letters
            key = f"{delivery.id}:{b._call(b.client.incr, b.prefix + 'malformed')}"
        pipe = b.client.pipeline(transaction=True)
        pipe.hset(b.dead_key, key, header.encode() + b"\n" + delivery.body)
        pipe.hdel(self.inflight_key, delivery.id)
        if delivery.started:
            # The fetch's start of it was this consumer's last: it runs nothing,
            # so no reaper may take it for a task lost while running.
            pipe.hdel(b.running_key, self.name)
            pipe.srem(b.started_key(self.name), delivery.id)
        b._call(pipe.execute)

    def renew(self, lease: float) -> None:
        b = self.broker
        b._call(b.client.zadd, b.consumers_key, {self.name: b.clock() + lease})

    def release(self, *, drop_running: str | None = None, shutdown: bool = False) -> Reaped:
        mode = f"drop:{drop_running}" if drop_running else "shutdown" if shutdown else ""
        reaped = self.broker._run_reap("", mode, [self.name])
        return reaped[0] if reaped else Reaped(self.name, None, Fate.NONE, [])


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
