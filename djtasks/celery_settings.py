"""Celery's Django settings (the ``CELERY_`` namespace) that djtasks honours.

A project moving from Celery keeps the settings Celery read through
``app.config_from_object("django.conf:settings", namespace="CELERY")``.
``TABLE`` maps each one djtasks has an equivalent for to its ``DJTASKS``
key; ``IGNORED`` says why each other well-known one is not used. A key in
``DJTASKS`` takes precedence over its Celery setting. The system check
``djtasks.W010`` lists every ``CELERY_*`` setting djtasks does not use, and
why (docs/migrating-from-celery.md#settings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core import checks

PREFIX = "CELERY_"


class Unusable(Exception):
    """A Celery value djtasks cannot take; its message says why."""


@dataclass(frozen=True)
class Mapped:
    """``CELERY_<celery>`` is ``DJTASKS[djtasks]``, through ``translate``
    (which raises ``Unusable`` for a value djtasks cannot take)."""

    djtasks: str
    translate: Callable[[Any], Any] = lambda value: value


def _broker_url(value: Any) -> Any:
    from .conf import BROKER_SCHEMES

    scheme = urlsplit(value).scheme if isinstance(value, str) else ""
    if scheme not in BROKER_SCHEMES:
        raise Unusable(f"djtasks has no {scheme or repr(value)} broker; set "
                       "DJTASKS['BROKER_URL'] (redis://... or db://default)")
    return value


def _routes(value: Any) -> Any:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Mapping) for k, v in value.items()):
        raise Unusable("only a dict of task name or glob -> {'queue': ...} is read "
                       "(no router functions, lists or regular expressions)")
    # Only the queue: AMQP exchanges and routing keys mean nothing on djtasks'
    # brokers, and Celery's priority scale is the reverse of djtasks'.
    return {pattern: {"queue": route["queue"]} for pattern, route in value.items()
            if "queue" in route}


def _prefetch(value: Any) -> Any:
    if value == 0:
        raise Unusable("0 (no limit) has no djtasks equivalent; PREFETCH_MULTIPLIER is 1 to 1000")
    return value


# Celery's setting (without the prefix) -> its DJTASKS key. Old names that
# Celery still reads under the namespace are listed beside the new ones.
TABLE: dict[str, Mapped] = {
    "TASK_ALWAYS_EAGER": Mapped("ALWAYS_EAGER"),
    "ALWAYS_EAGER": Mapped("ALWAYS_EAGER"),
    "TASK_EAGER_PROPAGATES": Mapped("EAGER_PROPAGATES"),
    "EAGER_PROPAGATES_EXCEPTIONS": Mapped("EAGER_PROPAGATES"),
    "BROKER_URL": Mapped("BROKER_URL", _broker_url),
    "TASK_DEFAULT_QUEUE": Mapped("DEFAULT_QUEUE"),
    "DEFAULT_QUEUE": Mapped("DEFAULT_QUEUE"),
    "TASK_ROUTES": Mapped("ROUTES", _routes),
    "ROUTES": Mapped("ROUTES", _routes),
    "RESULT_EXPIRES": Mapped("RESULT_EXPIRES"),
    "TASK_RESULT_EXPIRES": Mapped("RESULT_EXPIRES"),
    "TASK_ACKS_LATE": Mapped("ACKS_LATE"),
    "ACKS_LATE": Mapped("ACKS_LATE"),
    "TASK_TRACK_STARTED": Mapped("TRACK_STARTED"),
    "TRACK_STARTED": Mapped("TRACK_STARTED"),
    "TASK_IGNORE_RESULT": Mapped("IGNORE_RESULT"),
    "IGNORE_RESULT": Mapped("IGNORE_RESULT"),
    "TASK_TIME_LIMIT": Mapped("TIME_LIMIT"),
    "TASK_SOFT_TIME_LIMIT": Mapped("SOFT_TIME_LIMIT"),
    "WORKER_PREFETCH_MULTIPLIER": Mapped("PREFETCH_MULTIPLIER", _prefetch),
    "BEAT_SCHEDULE": Mapped("BEAT_SCHEDULE"),
}

_JSON_ONLY = "djtasks sends signed JSON only (docs/protocol.md)"

# Well-known Celery settings djtasks does not use, and why.
IGNORED: dict[str, str] = {
    "RESULT_BACKEND": "results are TaskResult rows in the project's database",
    "CACHE_BACKEND": "results are TaskResult rows in the project's database",
    "RESULT_EXTENDED": "TaskResult rows always keep the task's name, args and kwargs",
    "TASK_SERIALIZER": _JSON_ONLY,
    "RESULT_SERIALIZER": _JSON_ONLY,
    "ACCEPT_CONTENT": _JSON_ONLY,
    "TIMEZONE": "djtasks uses Django's TIME_ZONE and USE_TZ",
    "ENABLE_UTC": "djtasks uses Django's TIME_ZONE and USE_TZ",
    "BROKER_TRANSPORT_OPTIONS": "the visibility timeout is DJTASKS['WORKER_LEASE'], "
                                "renewed by the heartbeat",
    "BROKER_CONNECTION_RETRY_ON_STARTUP": "runworker waits for its broker; a --burst run fails",
    "BROKER_CONNECTION_RETRY": "runworker retries its broker with backoff",
    "BROKER_CONNECTION_MAX_RETRIES": "runworker retries its broker until it answers",
    "TASK_DEFAULT_PRIORITY": "djtasks runs priority 9 first, Celery's Redis transport 0: "
                             "set DJTASKS['DEFAULT_PRIORITY'] on djtasks' scale",
    "WORKER_CONCURRENCY": "use runworker --concurrency",
    "WORKER_MAX_TASKS_PER_CHILD": "use runworker --max-tasks-per-child",
    "WORKER_MAX_MEMORY_PER_CHILD": "use runworker --max-memory-per-child",
    "TASK_QUEUES": "queues need no declaring: a queue exists once a task is sent to it",
    "TASK_CREATE_MISSING_QUEUES": "queues need no declaring",
    "TASK_DEFAULT_EXCHANGE": "no AMQP exchanges: use queues and DJTASKS['ROUTES']",
    "TASK_DEFAULT_ROUTING_KEY": "no AMQP routing keys: use queues and DJTASKS['ROUTES']",
    "TASK_SEND_SENT_EVENT": "djtasks has no event stream",
    "WORKER_SEND_TASK_EVENTS": "djtasks has no event stream",
    "BEAT_SCHEDULER": "djtasks' beat reads BEAT_SCHEDULE and its own database schedules",
    "WORKER_HIJACK_ROOT_LOGGER": "runworker adds a root handler only when LOGGING gives none; "
                                 "connect setup_logging to configure logging yourself",
    "TASK_REJECT_ON_WORKER_LOST": "a task option (reject_on_worker_lost), not a setting",
    "TASK_ANNOTATIONS": "set options on the task, or a base= Task class",
}


def celery_settings() -> dict[str, Any]:
    """Every ``CELERY_*`` Django setting, by its name without the prefix."""
    return {name[len(PREFIX):]: getattr(django_settings, name)
            for name in dir(django_settings) if name.startswith(PREFIX)}


def translate(fields: set[str], djtasks: Mapping[str, Any]) -> tuple[dict[str, Any],
                                                                       dict[str, str]]:
    """``(values, ignored)``: the DJTASKS keys the Celery settings give
    (only keys in ``fields``, not set in ``djtasks``), and each Celery
    setting not used with why. Where a new and an old name give one key,
    the new one wins."""
    values: dict[str, Any] = {}
    ignored: dict[str, str] = {}
    given = celery_settings()
    # New names first: TABLE lists each new name before its old one.
    for name in sorted(given, key=lambda n: list(TABLE).index(n) if n in TABLE else len(TABLE)):
        value = given[name]
        mapped = TABLE.get(name)
        if mapped is None:
            ignored[name] = IGNORED.get(name, "djtasks has no such setting")
        elif mapped.djtasks not in fields:
            ignored[name] = f"djtasks has no {mapped.djtasks} setting yet"
        elif mapped.djtasks in djtasks:
            ignored[name] = f"DJTASKS[{mapped.djtasks!r}] is set and takes precedence"
        elif mapped.djtasks in values:
            ignored[name] = f"a newer Celery name for DJTASKS[{mapped.djtasks!r}] is set"
        else:
            try:
                values[mapped.djtasks] = mapped.translate(value)
            except Unusable as exc:
                ignored[name] = str(exc)
    return values, ignored


def source(djtasks_key: str) -> str | None:
    """The ``CELERY_*`` setting that gave ``djtasks_key``, for error messages."""
    from .conf import Settings

    values, _ = translate(set(Settings.__dataclass_fields__),
                          getattr(django_settings, "DJTASKS", None) or {})
    if djtasks_key not in values:
        return None
    given = celery_settings()
    return next(PREFIX + name for name, m in TABLE.items()
                if m.djtasks == djtasks_key and name in given)


@checks.register("djtasks")
def check_celery_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """djtasks.W010: a ``CELERY_*`` setting djtasks does not use, and why."""
    from .conf import Settings

    _, ignored = translate(set(Settings.__dataclass_fields__),
                           getattr(django_settings, "DJTASKS", None) or {})
    return [
        checks.Warning(
            f"{PREFIX}{name} is ignored: {why}.",
            hint="Remove it, or set the DJTASKS equivalent "
                 "(docs/migrating-from-celery.md#settings).",
            id="djtasks.W010",
        )
        for name, why in sorted(ignored.items())
    ]
