"""The message: one versioned JSON envelope per task run (docs/protocol.md)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import codec
from .exceptions import MessageError
from .options import MESSAGE_OPTIONS, OPTIONS
from .signing import get_signer

PROTOCOL_VERSION = 1
_MAX_TIMESTAMP = 253402300800.0  # 10000-01-01: datetime cannot go further
_NUMBER = (int, float)
_json_decode = json.JSONDecoder().decode

def utc_datetime(ts: float | None) -> datetime | None:
    """A message's timestamp (seconds) as an aware UTC datetime, or None."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True)
class Message:
    """One request to run a task.

    Times (``eta``, ``expires``, ``created``) are Unix timestamps in seconds.
    ``args``/``kwargs`` hold Python values; ``encode()`` runs them through the
    codec, so an unencodable argument raises ``codec.UnencodableValue``.
    ``encoded_arguments()`` keeps their encoded form: a decoded message has it
    from the wire, so the worker writes result rows without encoding again.
    """

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int = 0
    eta: float | None = None
    expires: float | None = None
    retries: int = 0
    parent_id: str | None = None
    root_id: str | None = None
    created: float = field(default_factory=time.time)
    options: dict[str, Any] = field(default_factory=dict)
    encoded_args: Any = field(default=None, repr=False, compare=False)
    encoded_kwargs: Any = field(default=None, repr=False, compare=False)

    def next_attempt(self, *, args: list[Any] | None, kwargs: dict[str, Any] | None,
                     eta: float | None, now: float) -> Message:
        """The message of this task's next run (a retry): the same id, queue,
        priority, expiry, per-call options and lineage, ``retries + 1``, new
        arguments if given. Follows Celery's ``Task.retry``."""
        same = args is None and kwargs is None  # then the wire form is reused
        return replace(
            self, args=self.args if args is None else list(args),
            kwargs=self.kwargs if kwargs is None else dict(kwargs), eta=eta,
            retries=self.retries + 1, created=now, options=dict(self.options),
            encoded_args=self.encoded_args if same else None,
            encoded_kwargs=self.encoded_kwargs if same else None,
        )

    def encoded_arguments(self) -> tuple[Any, Any]:
        """``args`` and ``kwargs`` as codec-encoded JSON data, encoded once."""
        if self.encoded_args is None:
            self.encoded_args, self.encoded_kwargs = codec.encode_arguments(self.args,
                                                                            self.kwargs)
        return self.encoded_args, self.encoded_kwargs

    def encode(self) -> bytes:
        """The signed envelope: UTF-8 JSON and its signature (docs/protocol.md)."""
        return dump_envelope(self.envelope())

    def envelope(self) -> dict[str, Any]:
        """The envelope as JSON-ready data, arguments run through the codec."""
        args, kwargs = self.encoded_arguments()
        return {
            "v": PROTOCOL_VERSION,
            "id": self.id,
            "task": self.task,
            "args": args,
            "kwargs": kwargs,
            "queue": self.queue,
            "priority": self.priority,
            "eta": self.eta,
            "expires": self.expires,
            "retries": self.retries,
            "parent_id": self.parent_id,
            "root_id": self.root_id or self.id,
            "created": self.created,
            "options": self.options,
        }

    @classmethod
    def decode(cls, body: bytes | str) -> Message:
        """Check the signature and rebuild a message; raise ``MessageError``
        saying what is wrong with it. Nothing in the body is evaluated: it is
        JSON data and a task name looked up in the registry."""
        if isinstance(body, str):
            body = body.encode()
        payload = get_signer().unsign(body)
        try:
            # UTF-8, as dump_envelope writes it: json.loads(bytes) would first
            # guess among UTF-8, -16 and -32.
            data = _json_decode(payload.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError) as exc:
            raise MessageError(f"the body is not a djtasks JSON envelope: {exc}") from None
        if not isinstance(data, dict):
            raise MessageError(f"the envelope is a {type(data).__name__}, not a JSON object")
        version = data.get("v")
        if version != PROTOCOL_VERSION:
            raise MessageError(
                f"protocol version {version!r} is not supported (this worker reads "
                f"version {PROTOCOL_VERSION})"
            )
        try:
            encoded_args, encoded_kwargs = data["args"], data["kwargs"]
            message = cls(
                id=data["id"],
                task=data["task"],
                args=encoded_args,
                kwargs=encoded_kwargs,
                queue=data["queue"],
                priority=data["priority"],
                eta=data["eta"],
                expires=data["expires"],
                retries=data["retries"],
                parent_id=data["parent_id"],
                root_id=data["root_id"],
                created=data["created"],
                options=data["options"],
            )
        except KeyError as exc:
            raise MessageError(f"the envelope has no {exc.args[0]!r} field") from None
        # Tagged values live only in the arguments; their wire form is kept.
        try:
            message.args = codec.decode(encoded_args)
            message.kwargs = codec.decode(encoded_kwargs)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
            raise MessageError(f"the body is not a djtasks JSON envelope: {exc}") from None
        message.encoded_args, message.encoded_kwargs = encoded_args, encoded_kwargs
        problem = message._type_problem()
        if problem:
            raise MessageError(problem)
        return message

    def _type_problem(self) -> str | None:
        # JSON data has exact types, so a valid envelope without options (the
        # common one) passes this one test; anything else is told apart below.
        eta, expires, created = self.eta, self.expires, self.created
        if (type(self.id) is str and type(self.task) is str and type(self.args) is list
                and type(self.kwargs) is dict and type(self.queue) is str
                and type(self.priority) is int and 0 <= self.priority <= 9
                and type(self.retries) is int and 0 <= self.retries < 2**31
                and type(created) in _NUMBER and 0 <= created < _MAX_TIMESTAMP
                and (eta is None or type(eta) in _NUMBER and 0 <= eta < _MAX_TIMESTAMP)
                and (expires is None
                     or type(expires) in _NUMBER and 0 <= expires < _MAX_TIMESTAMP)
                and type(self.options) is dict and not self.options
                and all(type(k) is str for k in self.kwargs)):
            return None
        checks = (
            ("id", str), ("task", str), ("args", list), ("kwargs", dict), ("queue", str),
            ("priority", int), ("retries", int), ("created", int | float), ("options", dict),
        )
        for name, kind in checks:
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"field {name!r} is a {type(value).__name__}"
        if not 0 <= self.priority <= 9:
            return f"field 'priority' is {self.priority}, not 0 to 9"
        if not 0 <= self.retries < 2**31:
            return f"field 'retries' is {self.retries}, not 0 to 2**31 - 1"
        for name in ("eta", "expires", "created"):
            value = getattr(self, name)
            if value is None and name != "created":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"field {name!r} is a {type(value).__name__}, not a timestamp"
            if not 0 <= value < _MAX_TIMESTAMP:  # also catches nan
                return f"field {name!r} is {value!r}, not a timestamp between 1970 and 9999"
        if any(not isinstance(k, str) for k in self.kwargs):
            return "kwargs has a key that is not a string"
        for key, value in self.options.items():
            if key not in MESSAGE_OPTIONS:
                return f"option {key!r} is unknown (known: {', '.join(sorted(MESSAGE_OPTIONS))})"
            try:
                OPTIONS[key].check(key, value)
            except TypeError as exc:
                return f"option {exc}"
            if value is None:
                return f"option {key!r} is null"
        return None


# json.dumps with these options would make this encoder anew for each body.
_ENVELOPE_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dump_envelope(envelope: dict[str, Any]) -> bytes:
    """Write an envelope from ``Message.envelope()`` as signed UTF-8 JSON bytes."""
    return get_signer().sign(_ENVELOPE_JSON.encode(envelope).encode())
