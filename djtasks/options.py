"""The one option table: every task and call option, declared once.

Each ``Option`` says its default, how a value is checked, and where it may
be given: on ``@shared_task`` (``task``), per call to ``apply_async``
(``call``), carried in the message so a worker applies it (``carried``),
and the ``DJTASKS`` setting that gives its default (``setting``). ``Task``,
``apply_async``, the message decoder, ``conf`` and the system checks all
read this table (docs/celery.md lists the options with Celery's names).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_seconds(name: str, value: Any, *, allow_none: bool = True) -> None:
    """Raise ``TypeError`` unless ``value`` is a number of seconds >= 0 (or None)."""
    if value is None and allow_none:
        return
    if not _number(value) or value < 0:
        raise TypeError(f"{name} must be a number of seconds >= 0, not {value!r}")


def check_limit(name: str, value: Any) -> None:
    """A time limit: None, or a number of seconds > 0."""
    if value is not None and (not _number(value) or value <= 0):
        raise TypeError(f"{name} must be a number of seconds > 0, not {value!r}")


def check_priority(name: str, value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9
    ):
        raise TypeError(f"{name} must be an int from 0 (lowest) to 9 (highest), not {value!r}")


def check_queue(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and QUEUE_NAME_RE.match(value)):
        raise TypeError(
            f"{name} must be a name of letters, digits and _.:- (1 to 200 characters), "
            f"not {value!r}"
        )


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")


def _check_max_retries(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 0):
        raise TypeError(f"{name} must be an int >= 0 or None, not {value!r}")


def _check_delay(name: str, value: Any) -> None:
    check_seconds(name, value, allow_none=False)


def _check_backoff(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        check_seconds(name, value, allow_none=False)


def _check_exceptions(name: str, value: Any) -> None:
    if not isinstance(value, tuple | list) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in value
    ):
        raise TypeError(f"{name} must be exception classes, not {value!r}")


def _check_retry_kwargs(name: str, value: Any) -> None:
    # The keywords autoretry passes to Task.retry (Celery's retry_kwargs).
    allowed = {"countdown", "max_retries"}
    if not isinstance(value, dict) or not set(value) <= allowed:
        raise TypeError(f"{name} must be a dict with keys from {sorted(allowed)}, not {value!r}")
    check_seconds(f"{name}['countdown']", value.get("countdown"))
    _check_max_retries(f"{name}['max_retries']", value.get("max_retries"))


def _json_plain(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def _check_headers(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, dict) and _json_plain(value)):
        raise TypeError(f"{name} must be a dict of str to JSON values (str, number, bool, None, "
                        f"list, dict), not {value!r}")


def _check_expires(name: str, value: Any) -> None:
    if not isinstance(value, datetime):
        check_seconds(name, value)


def _check_rate(name: str, value: Any) -> None:
    parse_rate(value)


def _is_signature(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("task"), str)


def _check_signatures(name: str, value: Any) -> None:
    """``link``/``link_error``: a signature, or a list of them (djtasks/canvas.py)."""
    if value is None or _is_signature(value):
        return
    if not isinstance(value, list | tuple) or not all(_is_signature(v) for v in value):
        raise TypeError(f"{name} must be a signature (task.s(...)) or a list of signatures, "
                        f"not {value!r}")


def _check_chord(name: str, value: Any) -> None:
    if not (isinstance(value, dict) and isinstance(value.get("id"), str)
            and isinstance(value.get("size"), int) and _is_signature(value.get("body"))):
        raise TypeError(f"{name} must be a chord header's state (id, size, body), not {value!r}")


def _check_group_id(name: str, value: Any) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        raise TypeError(f"{name} must be a group id (1 to 255 characters), not {value!r}")


def _check_index(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{name} must be an int >= 0, not {value!r}")


_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | None) -> float | None:
    """Tasks per second from a Celery rate limit: ``"10/s"``, ``"100/m"``,
    ``"1000/h"``, or a number (per second). None means no limit.

    Raises ``TypeError`` for anything else.
    """
    if rate is None:
        return None
    if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
        return float(rate)
    if isinstance(rate, str):
        count, _, unit = rate.partition("/")
        try:
            value = float(count)
        except ValueError:
            value = -1.0
        if value > 0 and (unit or "s") in _RATE_UNITS:
            return value / _RATE_UNITS[unit or "s"]
    raise TypeError(
        f"rate_limit must look like '10/s', '100/m' or '1000/h' (or a number per second), "
        f"not {rate!r}"
    )


@dataclass(frozen=True, slots=True)
class Option:
    """One option. ``check(name, value)`` raises ``TypeError`` naming the option."""

    name: str
    default: Any
    check: Callable[[str, Any], None]
    task: bool = True  # @shared_task(name=...)
    call: bool = False  # apply_async(name=...), overriding the task's
    carried: bool = False  # travels in Message.options; the worker applies it
    setting: str | None = None  # DJTASKS key that is the default when the task gives None


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("queue", None, check_queue, call=True),
    Option("priority", None, check_priority, call=True, setting="DEFAULT_PRIORITY"),
    Option("max_retries", 3, _check_max_retries),
    Option("default_retry_delay", 180, _check_delay),
    Option("autoretry_for", (), _check_exceptions),
    Option("retry_backoff", False, _check_backoff),
    Option("retry_backoff_max", 600, _check_delay),
    Option("retry_jitter", True, _check_bool),
    Option("acks_late", None, _check_bool, setting="ACKS_LATE"),
    Option("reject_on_worker_lost", None, _check_bool),
    Option("ignore_result", None, _check_bool, call=True, carried=True, setting="IGNORE_RESULT"),
    Option("track_started", None, _check_bool, setting="TRACK_STARTED"),
    Option("expires", None, _check_expires, call=True),
    Option("time_limit", None, check_limit, call=True, carried=True),
    Option("soft_time_limit", None, check_limit, call=True, carried=True),
    Option("rate_limit", None, _check_rate),
    # The tick a beat run stands for (a timestamp), as ``request.scheduled_for``.
    Option("scheduled_for", None, check_seconds, task=False, carried=True),
    Option("dont_autoretry_for", (), _check_exceptions),
    Option("retry_kwargs", {}, _check_retry_kwargs),
    # Expected errors: logged at INFO without a traceback; the row is still FAILURE.
    Option("throws", (), _check_exceptions),
    Option("typing", True, _check_bool),  # bind arguments to the signature at call time
    # Per call only; it travels so the worker sees it (self.request.headers).
    Option("headers", None, _check_headers, task=False, call=True, carried=True),
    # The canvas (djtasks/canvas.py, docs/canvas.md): what the worker does
    # once the task has ended, carried as signatures in JSON.
    Option("link", None, _check_signatures, task=False, call=True, carried=True),
    Option("link_error", None, _check_signatures, task=False, call=True, carried=True),
    Option("chain", None, _check_signatures, task=False, carried=True),
    Option("chord", None, _check_chord, task=False, carried=True),
    Option("group_id", None, _check_group_id, task=False, carried=True),
    Option("group_index", None, _check_index, task=False, carried=True),
    Option("errback", None, _check_bool, task=False, carried=True),
)}

TASK_OPTIONS = tuple(o for o in OPTIONS.values() if o.task)
CALL_OPTIONS = tuple(o for o in OPTIONS.values() if o.call)
MESSAGE_OPTIONS = frozenset(o.name for o in OPTIONS.values() if o.carried)
SETTING_OPTIONS = {o.setting: o for o in OPTIONS.values() if o.setting}


_TUPLES = frozenset({"autoretry_for", "dont_autoretry_for", "throws"})


def task_options(given: dict[str, Any], defaults: Callable[[str, Any], Any]) -> dict[str, Any]:
    """Validate ``@shared_task`` options: every task option's value, from
    ``given`` or else ``defaults(name, table default)`` (a Task subclass's
    class attribute). Raises ``TypeError`` for an unknown option or a bad
    value, naming it."""
    unknown = sorted(set(given) - {o.name for o in TASK_OPTIONS})
    if unknown:
        raise TypeError(
            f"unknown task option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(o.name for o in TASK_OPTIONS))}"
        )
    values = {}
    for option in TASK_OPTIONS:
        value = given[option.name] if option.name in given else defaults(option.name,
                                                                        option.default)
        option.check(option.name, value)
        values[option.name] = tuple(value) if option.name in _TUPLES else value
    return values


def call_options(given: dict[str, Any]) -> None:
    """Check per-call overrides (``apply_async``); None means "the task's"."""
    for option in CALL_OPTIONS:
        value = given.get(option.name)
        if value is not None:
            option.check(option.name, value)
