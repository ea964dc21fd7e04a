"""Brokers, chosen by ``DJTASKS['BROKER_URL']``; one module per broker."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..conf import get_settings, on_reset
from .base import Broker, Consumer, DeadLetter, Delivery, Fate, Reaped, Started, WakeStart

__all__ = [
    "Broker", "Consumer", "DeadLetter", "Delivery", "Fate", "Reaped", "Started", "WakeStart",
    "get_broker", "redact_url",
]

_broker: Broker | None = None
_broker_pid: int | None = None


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, banners, errors).

    Covers ``user:password@host`` and redis-py's ``?password=`` parameter.
    """
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    head, sep, query = url.partition("?")
    if sep and "password" in query.lower():
        pairs = [
            (k, "***" if k.lower() == "password" else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        url = f"{head}?{urlencode(pairs, safe='*')}"
    return url


def envelope_priority(body: bytes) -> int:
    """The priority in a message body (``<JSON>:<signature>``), 0 if unreadable."""
    try:
        priority = int(json.loads(body.rpartition(b":")[0] or body).get("priority", 0))
    except (ValueError, AttributeError, TypeError):
        return 0
    return priority if 0 <= priority <= 9 else 0


def make_broker(url: str, key_prefix: str, max_deaths: int = 3) -> Broker:
    """A broker for ``url``: a new one for ``db://<alias>``, ``redis://``,
    ``rediss://``, ``unix://`` and ``cache://alias``; for ``memory://<name>`` this
    process's one memory broker of that URL and ``key_prefix``, so every caller
    shares its queues."""
    scheme = urlsplit(url).scheme
    if scheme == "db":
        from .database import DatabaseBroker

        return DatabaseBroker(url, key_prefix=key_prefix, max_deaths=max_deaths,
                              poll_interval=get_settings().DATABASE_POLL_INTERVAL)
    if scheme == "memory":
        from .memory import shared_broker

        return shared_broker(url, key_prefix, max_deaths)
    from .redis import RedisBroker

    if scheme == "cache":
        from django_redis import get_redis_connection

        parts = urlsplit(url)
        alias = parts.netloc or parts.path.lstrip("/")
        return RedisBroker(url, key_prefix=key_prefix, client=get_redis_connection(alias),
                           max_deaths=max_deaths)
    return RedisBroker(url, key_prefix=key_prefix, max_deaths=max_deaths)


def get_broker() -> Broker:
    """The broker of this process, made on first use (and again after a fork)."""
    global _broker, _broker_pid
    if _broker is None or _broker_pid != os.getpid():
        s = get_settings()
        _broker = make_broker(s.BROKER_URL, s.KEY_PREFIX, s.MAX_DEATHS)
        _broker_pid = os.getpid()
    return _broker


@on_reset
def reset_broker() -> None:
    """Forget this process's broker (settings changed, or a child after fork)."""
    global _broker
    if _broker is not None and _broker_pid == os.getpid():
        _broker.close()
    _broker = None
