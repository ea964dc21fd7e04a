"""The ``DJTASKS`` settings dict: defaults, validation, lazy reading (``get_settings()``).

``settings.DJTASKS`` is read on first use and again whenever Django's
``setting_changed`` signal says it changed (``override_settings`` in tests).
Every key is documented in docs/settings.md. A wrong value raises
``ImproperlyConfigured`` naming the key and what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .options import QUEUE_NAME_RE, SETTING_OPTIONS

__all__ = ["QUEUE_NAME_RE", "Settings", "get_settings", "load", "on_reset"]

BROKER_SCHEMES = ("db", "redis", "rediss", "unix", "cache", "memory")


@dataclass(frozen=True)
class Settings:
    """Validated DJTASKS settings; see docs/settings.md for each key."""

    BROKER_URL: str = "db://default"
    DEFAULT_QUEUE: str = "default"
    ROUTES: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ALWAYS_EAGER: bool = False
    EAGER_PROPAGATES: bool = False
    ENQUEUE_ON_COMMIT: bool = True
    RESULT_EXPIRES: timedelta | None = timedelta(days=7)
    KEY_PREFIX: str = "djtasks"
    DEFAULT_PRIORITY: int = 0
    PREFETCH_MULTIPLIER: int = 4
    WORKER_LEASE: float = 30.0
    TRACK_STARTED: bool = True
    IGNORE_RESULT: bool = False
    ACKS_LATE: bool = False
    MAX_DEATHS: int = 3
    MAX_MESSAGE_BYTES: int = 1024 * 1024
    DATABASE_POLL_INTERVAL: float = 0.1
    OUTBOX_GRACE: float = 30.0
    BEAT_SCHEDULE: Mapping[str, Any] = field(default_factory=dict)
    BEAT_SYNC_INTERVAL: float = 5.0
    METRICS_TOKEN: str | None = None
    TIME_LIMIT: float | None = None
    SOFT_TIME_LIMIT: float | None = None


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _is_priority(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9


def _option_check(key: str) -> tuple[Callable[[Any], bool], str]:
    """The check of a setting that is a task option's default, from the option table."""
    option = SETTING_OPTIONS[key]

    def check(value: Any) -> bool:
        try:
            option.check(key, value)
        except TypeError:
            return False
        return value is not None

    try:
        option.check(key, object())
    except TypeError as exc:  # "KEY must be <expected>, not <value>"
        expected = str(exc).split(" must be ", 1)[1].rsplit(", not ", 1)[0]
    return check, expected


# key -> (check, what is expected)
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "BROKER_URL": (lambda v: isinstance(v, str), "a URL string such as 'redis://127.0.0.1:6379/0'"),
    "DEFAULT_QUEUE": (
        lambda v: isinstance(v, str) and bool(QUEUE_NAME_RE.match(v)),
        "a queue name of letters, digits and _.:- (1 to 200 characters)",
    ),
    "ROUTES": (lambda v: isinstance(v, Mapping), "a dict of task name or glob -> {'queue': name}"),
    "ALWAYS_EAGER": (_is_bool, "True or False"),
    "EAGER_PROPAGATES": (_is_bool, "True or False"),
    "ENQUEUE_ON_COMMIT": (_is_bool, "True or False"),
    "RESULT_EXPIRES": (
        lambda v: v is None or (isinstance(v, timedelta) and v > timedelta(0))
        or _is_positive_number(v),
        "a timedelta, a number of seconds, or None (keep results forever)",
    ),
    "KEY_PREFIX": (
        lambda v: isinstance(v, str) and bool(re.match(r"^[A-Za-z0-9_.:-]{1,50}$", v)),
        "a short string of letters, digits and _.:- (no braces: it becomes the hash tag)",
    ),
    "PREFETCH_MULTIPLIER": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000,
        "an int from 1 to 1000",
    ),
    "WORKER_LEASE": (_is_positive_number, "a number of seconds > 0"),
    "MAX_MESSAGE_BYTES": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1024,
        "an int of bytes >= 1024",
    ),
    "DATABASE_POLL_INTERVAL": (
        lambda v: _is_positive_number(v) and v <= 60,
        "a number of seconds > 0 and <= 60: how often idle workers of a db:// broker look "
        "for messages where the database has no LISTEN/NOTIFY",
    ),
    "OUTBOX_GRACE": (
        _is_positive_number,
        "a number of seconds > 0: how long a committed task's row may stay PENDING with "
        "its message unpublished before a worker publishes it",
    ),
    "METRICS_TOKEN": (
        lambda v: v is None or (isinstance(v, str) and len(v) >= 16 and v.isprintable()),
        "None, or a secret of 16 or more printable characters that a Prometheus scrape "
        "sends as 'Authorization: Bearer <token>' to djtasks.metrics.view",
    ),
    "TIME_LIMIT": (
        lambda v: v is None or _is_positive_number(v),
        "a number of seconds > 0 or None: runworker's default --time-limit",
    ),
    "SOFT_TIME_LIMIT": (
        lambda v: v is None or _is_positive_number(v),
        "a number of seconds > 0 or None: runworker's default --soft-time-limit",
    ),
    "MAX_DEATHS": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "an int >= 1: executors a message may kill before it is dead-lettered",
    ),
    "BEAT_SCHEDULE": (lambda v: isinstance(v, Mapping),
                      "a dict of schedule name -> {'task': ..., 'schedule': ...} or None"),
    "BEAT_SYNC_INTERVAL": (
        lambda v: _is_positive_number(v) and v <= 300,
        "a number of seconds > 0 and <= 300: how often beat runners read schedules "
        "from the database",
    ),
    # Defaults of task options: checked as the option table checks the option.
    **{key: _option_check(key) for key in SETTING_OPTIONS},
}


def _invalid(key: str, value: Any, expected: str, *path: str) -> ImproperlyConfigured:
    where = "".join(f"[{p!r}]" for p in (key, *path))
    return ImproperlyConfigured(f"DJTASKS{where} is {value!r}; expected {expected}.")


def validate_broker_url(url: str) -> None:
    """Raise ``ImproperlyConfigured`` unless ``url`` names a supported broker."""
    parts = urlsplit(url)
    if parts.scheme not in BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"DJTASKS['BROKER_URL'] has scheme {parts.scheme!r}; expected one of "
            f"{', '.join(s + '://' for s in BROKER_SCHEMES)}."
        )
    if parts.scheme == "db":
        alias = parts.netloc or parts.path.lstrip("/") or "default"
        databases = getattr(django_settings, "DATABASES", {})
        if alias not in databases:
            raise ImproperlyConfigured(
                f"DJTASKS['BROKER_URL'] names database alias {alias!r}, which is not in "
                f"DATABASES (known: {', '.join(sorted(databases)) or 'none'})."
            )
    if parts.scheme == "cache":
        alias = parts.netloc or parts.path.lstrip("/")
        if not alias:
            raise ImproperlyConfigured(
                "DJTASKS['BROKER_URL'] 'cache://' needs a CACHES alias, e.g. 'cache://default'."
            )
        caches = getattr(django_settings, "CACHES", {})
        if alias not in caches:
            raise ImproperlyConfigured(
                f"DJTASKS['BROKER_URL'] names cache alias {alias!r}, which is not in CACHES "
                f"(known: {', '.join(sorted(caches)) or 'none'})."
            )
        backend = caches[alias].get("BACKEND", "")
        if not backend.startswith("django_redis."):
            raise ImproperlyConfigured(
                f"DJTASKS['BROKER_URL'] names cache alias {alias!r} whose BACKEND is "
                f"{backend!r}; a cache:// broker needs django-redis "
                "('django_redis.cache.RedisCache')."
            )


def validate_routes(routes: Mapping[str, Any]) -> None:
    for pattern, route in routes.items():
        if not isinstance(pattern, str) or not isinstance(route, Mapping):
            raise _invalid("ROUTES", {pattern: route}, "task name or glob -> {'queue': name}")
        unknown = set(route) - {"queue", "priority"}
        if unknown:
            raise ImproperlyConfigured(
                f"DJTASKS['ROUTES'][{pattern!r}] has unknown option(s) "
                f"{', '.join(sorted(unknown))}; a route takes 'queue' and 'priority'."
            )
        queue = route.get("queue")
        if queue is not None and not (isinstance(queue, str) and QUEUE_NAME_RE.match(queue)):
            raise _invalid("ROUTES", queue, "a queue name", pattern, "queue")
        if "priority" in route and not _is_priority(route["priority"]):
            raise _invalid("ROUTES", route["priority"], "an int 0-9", pattern, "priority")


def load(raw: Mapping[str, Any] | None, celery: Mapping[str, Any] | None = None) -> Settings:
    """Validate a ``DJTASKS`` dict and return ``Settings``.

    ``celery`` holds DJTASKS keys given by Celery's settings
    (``celery_settings.translate``); ``raw``'s keys take precedence.
    Raises ``ImproperlyConfigured`` for an unknown key or a wrong value.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"DJTASKS must be a dict, not {type(raw).__name__}.")
    for key, value in (celery or {}).items():
        try:
            load({key: value})
        except ImproperlyConfigured as exc:
            from .celery_settings import source

            raise ImproperlyConfigured(f"{source(key)}, read as {exc}") from None
    raw = {**(celery or {}), **raw}
    unknown = sorted(set(raw) - set(_CHECKS))
    if unknown:
        raise ImproperlyConfigured(
            f"DJTASKS has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys are {', '.join(sorted(_CHECKS))} (see docs/settings.md)."
        )
    values = dict(raw)
    for key, value in values.items():
        check, expected = _CHECKS[key]
        if not check(value):
            raise _invalid(key, value, expected)
    if "BROKER_URL" in values:
        validate_broker_url(values["BROKER_URL"])
    if "ROUTES" in values:
        validate_routes(values["ROUTES"])
    if "BEAT_SCHEDULE" in values:
        from .beat.entries import validate_beat_schedule

        validate_beat_schedule(values["BEAT_SCHEDULE"])
    expires = values.get("RESULT_EXPIRES", Settings.RESULT_EXPIRES)
    if expires is not None and not isinstance(expires, timedelta):
        values["RESULT_EXPIRES"] = timedelta(seconds=expires)
    if "WORKER_LEASE" in values:
        values["WORKER_LEASE"] = float(values["WORKER_LEASE"])
    return Settings(**values)


_cached: Settings | None = None


def get_settings() -> Settings:
    """Return the validated ``DJTASKS`` settings, reading them on first use.

    Raises ``ImproperlyConfigured`` for a bad value (see ``load``).
    """
    global _cached
    if _cached is None:
        from .celery_settings import translate

        raw = getattr(django_settings, "DJTASKS", None)
        celery, _ = translate(set(Settings.__dataclass_fields__),
                              raw if isinstance(raw, Mapping) else {})
        _cached = load(raw, celery)
    return _cached


_reset_hooks: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> Callable[[], None]:
    """Register ``hook`` to run when DJTASKS or CACHES changes."""
    _reset_hooks.append(hook)
    return hook


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DJTASKS", "CACHES") or setting.startswith("CELERY_"):
        global _cached
        _cached = None
        for hook in _reset_hooks:
            hook()


setting_changed.connect(_setting_changed, dispatch_uid="djtasks.conf")
