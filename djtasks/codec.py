"""The JSON codec for task arguments and results. No pickle.

``encode(value)`` returns a structure that ``json.dumps`` can write;
``decode`` (an ``object_hook``) turns it back. These round-trip exactly:
``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``dict`` (any keys
of the scalar types below, kept with their type), ``datetime`` (naive, or
aware with its ``ZoneInfo`` zone or fixed offset, and ``fold``), ``date``,
``time``, ``timedelta``, ``Decimal`` and ``UUID``, the non-finite floats
``inf``, ``-inf`` and ``nan`` (tagged: standard JSON has no such numbers),
and text holding NUL characters (tagged: PostgreSQL's jsonb refuses them).

Lossy by design, as in Celery's JSON serializer: a ``tuple`` arrives as a
``list``; subclasses of ``str``/``int``/``float`` (``TextChoices`` members,
``SafeString``) arrive as the plain base type.

Anything else raises ``UnencodableValue`` naming where in the value it was;
``Task`` turns that into ``TaskArgumentError`` with the task's name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from io import IOBase
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

TAG = "__djt__"  # the reserved key of a tagged value; user dicts using it are escaped


class UnencodableValue(TypeError):
    """``value`` at ``path`` (a tuple of keys and indexes) cannot be encoded."""

    def __init__(self, path: tuple[Any, ...], value: Any, hint: str) -> None:
        super().__init__(hint)
        self.path = path
        self.value = value
        self.hint = hint


def _encode_datetime(v: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {TAG: "datetime"}
    tz = v.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key:
        out["v"] = v.replace(tzinfo=None).isoformat()
        out["tz"] = tz.key
    else:
        out["v"] = v.isoformat()
    if v.fold:
        out["fold"] = 1
    return out


def _encode_time(v: time) -> dict[str, Any]:
    out: dict[str, Any] = {TAG: "time"}
    if isinstance(v.tzinfo, ZoneInfo) and v.tzinfo.key:
        out["v"] = v.replace(tzinfo=None).isoformat()
        out["tz"] = v.tzinfo.key
    else:
        out["v"] = v.isoformat()
    if v.fold:
        out["fold"] = 1
    return out


_SCALAR_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: _encode_datetime,
    date: lambda v: {TAG: "date", "v": v.isoformat()},
    time: _encode_time,
    timedelta: lambda v: {TAG: "timedelta", "v": [v.days, v.seconds, v.microseconds]},
    Decimal: lambda v: {TAG: "decimal", "v": str(v)},
    UUID: lambda v: {TAG: "uuid", "v": str(v)},
}
_KEY_TYPES = (str, int, float, bool, type(None), datetime, date, time, timedelta, Decimal, UUID)


def encode(value: Any, path: tuple[Any, ...] = ()) -> Any:
    """Return ``value`` as plain JSON data, tagging the types listed above.

    Raises ``UnencodableValue`` with the path of the first value that cannot
    travel (a model instance, a QuerySet, a file, a set, bytes, ...).
    """
    cls = type(value)
    if cls is str:
        # PostgreSQL's jsonb cannot hold \u0000: carry such text in pieces.
        return value if "\x00" not in value else {TAG: "nul", "v": value.split("\x00")}
    if cls is int or cls is bool or value is None:
        return value
    if cls is float:
        # JSON has no Infinity/NaN (PostgreSQL's jsonb refuses them): tag them.
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if cls is list or cls is tuple:
        return [encode(item, (*path, i)) for i, item in enumerate(value)]
    if cls is dict:
        if all(type(k) is str and "\x00" not in k for k in value) and TAG not in value:
            return {k: encode(v, (*path, k)) for k, v in value.items()}
        pairs = []
        for k, v in value.items():
            if not isinstance(k, _KEY_TYPES):
                raise UnencodableValue(
                    (*path, k), k,
                    f"a dict key of type {type(k).__name__} cannot travel; "
                    "use str, int, float, bool, None, date/time, Decimal or UUID keys",
                )
            pairs.append([encode(k, (*path, k)), encode(v, (*path, k))])
        return {TAG: "dict", "v": pairs}
    encoder = _SCALAR_ENCODERS.get(cls)
    if encoder is not None:
        return encoder(value)
    # Subclasses (TextChoices members, SafeString, IntEnum, datetime subclasses):
    # encode as the base type. bool before int, datetime before date.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return encode(float(value), path)
    if isinstance(value, str):
        return encode(str.__str__(value), path)  # str() of a (str, Enum) member is its name
    for base in (datetime, date, time, timedelta, Decimal, UUID):
        if isinstance(value, base):
            return _SCALAR_ENCODERS[base](value)
    if isinstance(value, list | tuple):
        return [encode(item, (*path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return encode(dict(value), path)
    raise UnencodableValue(path, value, describe_unencodable(value, path))


def _plain(values: Any) -> bool:
    """Whether every one of ``values`` is a str, int, bool, None or finite
    float that ``encode`` returns as it is (no tag, no subclass)."""
    for v in values:
        cls = type(v)
        if cls is str:
            if "\x00" in v:
                return False
        elif cls is float:
            if not math.isfinite(v):
                return False
        elif not (cls is int or cls is bool or v is None):
            return False
    return True


def encode_arguments(args: Any, kwargs: Any) -> tuple[Any, Any]:
    """``encode(args, ("args",))`` and ``encode(kwargs, ("kwargs",))``: a
    task's arguments. Most are a few plain values, copied without walking
    them value by value; anything else is encoded as ``encode`` does."""
    if type(args) is list and _plain(args):
        encoded_args: Any = list(args)
    else:
        encoded_args = encode(args, ("args",))
    if type(kwargs) is dict and not kwargs:
        return encoded_args, {}
    return encoded_args, encode(kwargs, ("kwargs",))


def describe_unencodable(value: Any, path: tuple[Any, ...]) -> str:
    """Say why ``value`` cannot be a task argument and what to pass instead."""
    name = path_name(path)
    # Imported here: the codec must work before Django's apps are loaded.
    from django.db.models import Manager, Model, QuerySet
    from django.http import HttpRequest
    from django.utils.functional import LazyObject, Promise

    if isinstance(value, LazyObject):
        wrapped = getattr(value, "_wrapped", None)
        inner = type(wrapped).__name__ if isinstance(wrapped, Model) else "object"
        return (
            f"pass {name}.pk instead of the lazy {inner} "
            f"(request.user is a lazy object; pass request.user.pk)"
        )
    if isinstance(value, Model):
        model = type(value).__name__
        owner = name[:-3] if name.endswith("_id") else name  # user_id=<User> -> user.pk
        return f"pass {owner}.pk instead of the {model} instance"
    if isinstance(value, QuerySet):
        return (
            f"pass list({name}.values_list('pk', flat=True)) instead of the QuerySet "
            f"of {value.model.__name__}"
        )
    if isinstance(value, Manager):
        return f"pass a list of ids instead of the {value.model.__name__} manager"
    if isinstance(value, HttpRequest):
        return (
            "pass the values the task needs (request.user.pk, dict(request.GET), a URL) "
            "instead of the HttpRequest"
        )
    if isinstance(value, Promise):
        return f"pass str({name}) instead of the lazy translation string"
    if isinstance(value, IOBase) or _is_django_file(value):
        return f"pass a path or a storage name instead of the file object {name}"
    if isinstance(value, set | frozenset):
        return f"pass sorted({name}) or list({name}) instead of a {type(value).__name__}"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"pass {name} as text (decode it, or base64-encode binary data) instead of bytes"
    return (
        f"a {type(value).__module__}.{type(value).__qualname__} cannot travel in a JSON "
        "message; pass ids, str, int, float, bool, None, lists, dicts, datetime, date, "
        "time, timedelta, Decimal or UUID"
    )


def _is_django_file(value: Any) -> bool:
    from django.core.files import File

    return isinstance(value, File)


def path_name(path: tuple[Any, ...]) -> str:
    """The name a user would write for the value at ``path``: ``user``, ``items[2]``."""
    if not path:
        return "the value"
    head, *rest = path
    text = str(head)
    for part in rest:
        text += f"[{part!r}]"
    return text


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "date": lambda d: date.fromisoformat(d["v"]),
    "timedelta": lambda d: timedelta(days=d["v"][0], seconds=d["v"][1], microseconds=d["v"][2]),
    "decimal": lambda d: Decimal(d["v"]),
    "uuid": lambda d: UUID(d["v"]),
    "float": lambda d: float(d["v"]),
    "nul": lambda d: "\x00".join(d["v"]),
    "dict": lambda d: {_hashable(k): v for k, v in d["v"]},
}


def _decode_datetime(d: dict[str, Any]) -> datetime:
    value = datetime.fromisoformat(d["v"])
    if "tz" in d:
        value = value.replace(tzinfo=ZoneInfo(d["tz"]))
    if d.get("fold"):
        value = value.replace(fold=1)
    return value


def _decode_time(d: dict[str, Any]) -> time:
    value = time.fromisoformat(d["v"])
    if "tz" in d:
        value = value.replace(tzinfo=ZoneInfo(d["tz"]))
    return value.replace(fold=1) if d.get("fold") else value


_DECODERS["datetime"] = _decode_datetime
_DECODERS["time"] = _decode_time


def _hashable(key: Any) -> Any:
    if isinstance(key, list):  # cannot happen for keys we encoded; keep decode total
        return tuple(_hashable(k) for k in key)
    return key


def decode_hook(obj: dict[str, Any]) -> Any:
    """``json.loads`` object_hook that rebuilds tagged values."""
    tag = obj.get(TAG)
    if tag is None:
        return obj
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise ValueError(f"unknown codec tag {tag!r}")
    return decoder(obj)


def dumps(value: Any) -> str:
    """Encode ``value`` and write it as compact JSON text."""
    return json.dumps(encode(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    """Read JSON text written by ``dumps`` and rebuild tagged values."""
    return json.loads(text, object_hook=decode_hook)


def decode(value: Any) -> Any:
    """Rebuild tagged values in already-parsed JSON data (a JSONField's value)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        return decode_hook({k: decode(v) for k, v in value.items()})
    return value
