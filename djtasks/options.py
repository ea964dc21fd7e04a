"""Validation of task and call options (``TypeError`` naming the option)."""

from __future__ import annotations

from typing import Any

from .conf import QUEUE_NAME_RE


def check_seconds(name: str, value: Any, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise TypeError(f"{name} must be a number of seconds >= 0, not {value!r}")


def check_limits(time_limit: Any, soft_time_limit: Any) -> None:
    for name, value in (("time_limit", time_limit), ("soft_time_limit", soft_time_limit)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise TypeError(f"{name} must be a number of seconds > 0, not {value!r}")


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


def check_priority(value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9
    ):
        raise TypeError(f"priority must be an int from 0 (lowest) to 9 (highest), not {value!r}")


def check_queue(value: Any) -> None:
    if value is not None and not (isinstance(value, str) and QUEUE_NAME_RE.match(value)):
        raise TypeError(
            f"queue must be a name of letters, digits and _.:- (1 to 200 characters), "
            f"not {value!r}"
        )
