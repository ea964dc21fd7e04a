"""The JSON codec and the message envelope, as specifications.

What round-trips exactly, what is lossy by design (tuples, str/int
subclasses), and what cannot travel at all (with the path to it).
"""

from __future__ import annotations

import enum
import json
import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from django.db import models
from django.http import HttpRequest
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from djtasks import codec
from djtasks.exceptions import DjtasksError, MessageError
from djtasks.message import PROTOCOL_VERSION, Message
from djtasks.signing import get_signer
from tests.app.models import Item

PARIS = ZoneInfo("Europe/Paris")


def roundtrip(value: Any) -> Any:
    return codec.loads(codec.dumps(value))


def assert_same(expected: Any, actual: Any) -> None:
    """Equal, and of the same type, all the way down (tuples expected as lists).

    Stricter than ``==``: datetimes must keep their zone and fold, Decimals
    their exact text (``-0.00``, ``NaN``), floats their sign, dicts their key
    types and order.
    """
    if isinstance(expected, tuple):
        expected = list(expected)
    assert type(actual) is type(expected), f"{actual!r} is not a {type(expected).__name__}"
    if isinstance(expected, list):
        assert len(actual) == len(expected)
        for e, a in zip(expected, actual, strict=True):
            assert_same(e, a)
    elif isinstance(expected, dict):
        assert len(actual) == len(expected)
        for (ek, ev), (ak, av) in zip(expected.items(), actual.items(), strict=True):
            assert_same(ek, ak)
            assert_same(ev, av)
    elif isinstance(expected, datetime | time):
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None)
        assert actual.fold == expected.fold
        assert actual.tzinfo == expected.tzinfo
        assert actual.utcoffset() == expected.utcoffset()
    elif isinstance(expected, Decimal):
        assert str(actual) == str(expected)
    elif isinstance(expected, float):
        assert actual == expected
        assert math.copysign(1, actual) == math.copysign(1, expected)
    else:
        assert actual == expected


# -- exact round trips ------------------------------------------------------


def test_naive_datetime_round_trips_naive():
    value = datetime(2026, 6, 1, 12, 30, 5, 123456)
    assert_same(value, roundtrip(value))


def test_aware_utc_datetime_round_trips_with_utc():
    value = datetime(2026, 6, 1, 12, 30, 5, 1, tzinfo=UTC)
    assert_same(value, roundtrip(value))


def test_fixed_offset_datetime_round_trips_with_its_offset():
    value = datetime(2026, 6, 1, 12, 30, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))
    assert_same(value, roundtrip(value))


def test_zoneinfo_datetime_keeps_its_zone_not_just_the_offset():
    value = datetime(2026, 6, 1, 12, 30, tzinfo=PARIS)
    back = roundtrip(value)
    assert isinstance(back.tzinfo, ZoneInfo)
    assert back.tzinfo.key == "Europe/Paris"
    assert_same(value, back)


def test_zoneinfo_datetime_keeps_fold_in_the_repeated_hour():
    # 2026-10-25 02:30 happens twice in Paris; fold=1 is the second (UTC+1).
    value = datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1)
    back = roundtrip(value)
    assert back.fold == 1
    assert back.utcoffset() == timedelta(hours=1)
    assert_same(value, back)


def test_naive_datetime_keeps_fold():
    value = datetime(2026, 10, 25, 2, 30, fold=1)
    assert roundtrip(value).fold == 1


def test_date_round_trips_as_date_not_datetime():
    value = date(1999, 12, 31)
    assert_same(value, roundtrip(value))


@pytest.mark.parametrize("value", [
    time(0, 0),
    time(23, 59, 59, 999999),
    time(8, 15, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    time(2, 30, fold=1),
], ids=["midnight", "microseconds", "fixed-offset", "fold"])
def test_time_round_trips(value):
    assert_same(value, roundtrip(value))


@pytest.mark.parametrize("value", [
    timedelta(0),
    timedelta(days=-1, seconds=5),
    timedelta(microseconds=-1),
    timedelta(days=3, hours=4, microseconds=7),
    timedelta.max,
    timedelta.min,
], ids=["zero", "negative-days", "negative-microsecond", "microseconds", "max", "min"])
def test_timedelta_round_trips(value):
    assert_same(value, roundtrip(value))


@pytest.mark.parametrize("text", [
    "0", "-0.00", "1.10", "3.14159265358979323846264338327950288",
    "NaN", "-Infinity", "1E+3", "1.5e-7", "-2.50E+10",
])
def test_decimal_round_trips_with_its_exact_text(text):
    value = Decimal(text)
    back = roundtrip(value)
    assert type(back) is Decimal
    assert str(back) == str(value)
    assert back.as_tuple() == value.as_tuple()


def test_uuid_round_trips_as_uuid():
    value = uuid4()
    assert_same(value, roundtrip(value))


@pytest.mark.parametrize("value", [math.inf, -math.inf], ids=["inf", "-inf"])
def test_infinite_float_round_trips(value):
    assert_same(value, roundtrip(value))


def test_nan_float_round_trips_as_nan():
    assert math.isnan(roundtrip(math.nan))


def _reject_constant(name: str) -> None:
    raise AssertionError(f"non-standard JSON token {name} in codec output")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_float_is_written_as_standard_json(value):
    # Arguments and results are stored in PostgreSQL jsonb columns, which
    # reject the NaN/Infinity tokens json.dumps writes by default.
    text = codec.dumps({"x": [value]})
    json.loads(text, parse_constant=_reject_constant)


def test_nested_lists_and_dicts_round_trip_with_every_type_inside():
    value = {
        "when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=PARIS),
        "items": [1, 2.5, None, True, "x", [Decimal("9.99"), date(2026, 1, 2)]],
        "deep": {"a": {"b": {"c": [timedelta(seconds=90), UUID(int=7), time(1, 2)]}}},
    }
    assert_same(value, roundtrip(value))


def test_dict_with_int_keys_keeps_int_keys():
    value = {1: "one", 2: "two", -3: [3]}
    assert_same(value, roundtrip(value))


def test_dict_with_uuid_and_date_keys_keeps_their_types():
    value = {UUID(int=1): "a", date(2026, 1, 1): "b", "plain": "c"}
    assert_same(value, roundtrip(value))


def test_dict_with_mixed_str_and_int_keys_keeps_them_apart():
    value = {"1": "text", 1: "number"}
    assert_same(value, roundtrip(value))


def test_user_dict_using_the_reserved_key_round_trips_unchanged():
    value = {codec.TAG: "datetime", "v": "2026-01-01T00:00:00"}
    back = roundtrip(value)
    assert_same(value, back)


def test_user_dict_using_the_reserved_key_nested_inside_a_list_round_trips():
    value = [{codec.TAG: "dict", "v": [[1, 2]]}, {"ok": {codec.TAG: None}}]
    assert_same(value, roundtrip(value))


def test_codec_decode_rebuilds_tagged_values_in_parsed_json():
    # What a JSONField gives back: parsed data, tags not yet rebuilt.
    value = {"at": datetime(2026, 1, 1, tzinfo=UTC), "ids": {1: UUID(int=2)}}
    parsed = json.loads(json.dumps(codec.encode(value)))
    assert_same(value, codec.decode(parsed))


# -- lossy by design ----------------------------------------------------------


def test_tuple_arrives_as_list():
    assert_same([1, [2, 3]], roundtrip((1, (2, 3))))


class Size(models.TextChoices):
    SMALL = "s", "Small"


class Level(enum.IntEnum):
    HIGH = 9


class Color(str, enum.Enum):  # noqa: UP042 - the mixin form, not StrEnum, is the point
    RED = "red"


def test_text_choices_member_arrives_as_plain_str_value():
    assert_same("s", roundtrip(Size.SMALL))


def test_int_enum_member_arrives_as_plain_int_value():
    assert_same(9, roundtrip(Level.HIGH))


def test_str_mixin_enum_member_arrives_as_its_value_not_its_name():
    # str(Color.RED) is 'Color.RED' on Python 3.11+; the value is 'red'.
    assert_same("red", roundtrip(Color.RED))


def test_str_subclass_dict_key_arrives_as_plain_str_key():
    assert_same({"s": 1}, roundtrip({Size.SMALL: 1}))


# -- what cannot travel ------------------------------------------------------


def unencodable(value: Any) -> codec.UnencodableValue:
    with pytest.raises(codec.UnencodableValue) as info:
        codec.dumps(value)
    return info.value


def test_unencodable_value_is_a_type_error():
    assert issubclass(codec.UnencodableValue, TypeError)


def test_set_is_unencodable_at_its_path():
    exc = unencodable({"tags": [1, {"a", "b"}]})
    assert exc.path == ("tags", 1)
    assert "sorted(tags[1])" in exc.hint


def test_frozenset_is_unencodable():
    assert unencodable([frozenset({1})]).path == (0,)


def test_bytes_are_unencodable_at_their_path():
    exc = unencodable({"blob": b"\x00\x01"})
    assert exc.path == ("blob",)
    assert "bytes" in exc.hint


def test_plain_object_is_unencodable_at_its_path():
    thing = object()
    exc = unencodable([[1, 2, thing]])
    assert exc.path == (0, 2)
    assert exc.value is thing


def test_model_instance_is_unencodable_and_the_hint_says_pk():
    item = Item(pk=4, name="x")
    exc = unencodable({"item": item})
    assert exc.path == ("item",)
    assert exc.value is item
    assert "item.pk" in exc.hint


def test_model_instance_passed_as_foo_id_hints_foo_pk():
    exc = unencodable({"item_id": Item(pk=4, name="x")})
    assert "item.pk" in exc.hint


@pytest.mark.django_db
def test_queryset_is_unencodable_at_its_path():
    exc = unencodable({"items": Item.objects.all()})
    assert exc.path == ("items",)
    assert "values_list('pk', flat=True)" in exc.hint


def test_manager_is_unencodable():
    assert unencodable([Item.objects]).path == (0,)


def test_http_request_is_unencodable_at_its_path():
    request = RequestFactory().get("/")
    exc = unencodable({"request": request})
    assert isinstance(exc.value, HttpRequest)
    assert exc.path == ("request",)
    assert "HttpRequest" in exc.hint


def test_open_file_is_unencodable_at_its_path(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("x")
    with open(path) as f:
        exc = unencodable({"upload": f})
    assert exc.path == ("upload",)
    assert "path" in exc.hint


def test_lazy_object_is_unencodable_and_the_hint_names_request_user_pk():
    lazy = SimpleLazyObject(lambda: Item(pk=1, name="x"))
    exc = unencodable({"user": lazy})
    assert exc.path == ("user",)
    assert "request.user.pk" in exc.hint


def test_unencodable_dict_key_names_the_key_in_its_path():
    exc = unencodable({"outer": {("a", 1): "v"}})
    assert exc.path == ("outer", ("a", 1))
    assert "dict key" in exc.hint


def test_unencodable_value_at_the_top_has_an_empty_path():
    assert unencodable({1, 2}).path == ()


# -- properties --------------------------------------------------------------

datetimes = st.datetimes(timezones=st.none() | st.timezones() | st.just(UTC))
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | datetimes | st.dates() | st.times() | st.timedeltas()
    | st.decimals(allow_nan=False) | st.uuids()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=25,
)


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_any_supported_value_round_trips_exactly(value):
    assert_same(value, roundtrip(value))


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values, max_size=4), st.dictionaries(st.text(), values, max_size=3))
def test_a_tasks_arguments_encode_as_encode_does(args, kwargs):
    # encode_arguments copies plain arguments without walking them; the result must not differ.
    assert codec.encode_arguments(args, kwargs) == (codec.encode(args, ("args",)),
                                                    codec.encode(kwargs, ("kwargs",)))


def test_a_body_is_signed_as_djangos_signer_formats_it():
    # The wire format (docs/protocol.md): <JSON>:<base64url HMAC-SHA256, "=" stripped>.
    from django.core.signing import b64_encode
    from django.utils.crypto import salted_hmac

    payload = b'{"v":1}'
    mac = salted_hmac("djtasks.message", payload, "djtasks-tests", algorithm="sha256")
    assert get_signer().sign(payload) == payload + b":" + b64_encode(mac.digest())


bad_leaves = (
    st.sets(st.integers(), max_size=3) | st.binary(max_size=5) | st.builds(object)
)


def _bury(bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A supported structure with ``bad`` somewhere inside it."""
    in_list = st.tuples(st.lists(values, max_size=3), bad, st.lists(values, max_size=3)).map(
        lambda t: [*t[0], t[1], *t[2]]
    )
    in_dict = st.tuples(st.dictionaries(st.text(), values, max_size=3), st.text(), bad).map(
        lambda t: {**t[0], t[1]: t[2]}
    )
    return in_list | in_dict


containing_bad = st.recursive(bad_leaves, _bury, max_leaves=6)


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


@hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(containing_bad)
def test_any_value_containing_a_set_bytes_or_object_raises_with_the_path_to_it(value):
    with pytest.raises(codec.UnencodableValue) as info:
        codec.dumps(value)
    found = _at(value, info.value.path)
    assert found is info.value.value
    assert isinstance(found, set | bytes) or type(found) is object


# -- the message envelope ----------------------------------------------------


def make_message(**overrides: Any) -> Message:
    fields: dict[str, Any] = dict(
        id=str(uuid4()),
        task="tests.app.tasks.add",
        args=[1, Decimal("2.50"), datetime(2026, 1, 1, tzinfo=PARIS)],
        kwargs={"on": date(2026, 2, 3), "ids": {UUID(int=5): [1, 2]}},
        queue="reports",
        priority=7,
        eta=1_800_000_000.5,
        expires=1_800_003_600.0,
        retries=2,
        parent_id="parent-1",
        root_id="root-1",
        created=1_799_999_999.25,
        options={"time_limit": 30, "soft_time_limit": 25.5},
    )
    fields.update(overrides)
    return Message(**fields)


def test_message_encode_is_signed_utf8_json_bytes_with_the_protocol_version():
    body = make_message(args=["é"]).encode()
    assert isinstance(body, bytes)
    data = json.loads(get_signer().unsign(body).decode("utf-8"))
    assert data["v"] == PROTOCOL_VERSION
    assert data["args"] == ["é"]


def test_message_round_trips_through_encode_and_decode():
    message = make_message()
    back = Message.decode(message.encode())
    for name in Message.__slots__:
        assert_same(getattr(message, name), getattr(back, name))


def test_message_decode_accepts_str_as_well_as_bytes():
    message = make_message()
    assert Message.decode(message.encode().decode()).id == message.id


def test_message_without_root_id_is_its_own_root():
    message = make_message(root_id=None, parent_id=None)
    assert Message.decode(message.encode()).root_id == message.id


def test_message_encode_raises_unencodable_value_with_args_path():
    with pytest.raises(codec.UnencodableValue) as info:
        make_message(args=[1, {2}]).encode()
    assert info.value.path == ("args", 1)


def envelope(**changes: Any) -> bytes:
    """A validly signed envelope with ``changes`` made to its fields."""
    data = json.loads(get_signer().unsign(make_message().encode()))
    for key, value in changes.items():
        if value is _DROP:
            del data[key]
        else:
            data[key] = value
    return get_signer().sign(json.dumps(data).encode())


_DROP = object()


def decode_error(body: bytes, *, sign: bool = True) -> str:
    """The MessageError text for ``body`` (signed first, unless ``sign`` is False)."""
    with pytest.raises(MessageError) as info:
        Message.decode(get_signer().sign(body) if sign and not _is_signed(body) else body)
    return str(info.value)


def _is_signed(body: bytes) -> bool:
    try:
        get_signer().unsign(body)
    except MessageError:
        return False
    return True


def test_message_error_is_a_djtasks_error():
    assert issubclass(MessageError, DjtasksError)


def test_decode_bad_json_raises_message_error_saying_it_is_not_json():
    assert "not a djtasks JSON envelope" in decode_error(b'{"v": 1, "id": ')


def test_decode_invalid_utf8_raises_message_error():
    assert "not a djtasks JSON envelope" in decode_error(b"\xff\xfe{}")


def test_decode_unknown_codec_tag_raises_message_error():
    body = envelope(args=[{codec.TAG: "pickle", "v": "gASV"}])
    assert "pickle" in decode_error(body)


def test_decode_malformed_tagged_value_raises_message_error():
    body = envelope(args=[{codec.TAG: "datetime", "v": "not a date"}])
    decode_error(body)


def test_decode_json_list_raises_message_error_saying_it_is_not_an_object():
    assert "is a list, not a JSON object" in decode_error(b"[1, 2, 3]")


def test_decode_other_protocol_version_raises_message_error_naming_it():
    reason = decode_error(envelope(v=2))
    assert "protocol version 2 is not supported" in reason


def test_decode_without_version_raises_message_error():
    assert "protocol version None" in decode_error(envelope(v=_DROP))


@pytest.mark.parametrize("field", ["id", "task", "args", "kwargs", "queue", "created"])
def test_decode_missing_field_raises_message_error_naming_it(field):
    assert f"no {field!r} field" in decode_error(envelope(**{field: _DROP}))


@pytest.mark.parametrize("field,value", [
    ("id", 123),
    ("task", None),
    ("args", {"x": 1}),
    ("kwargs", [1]),
    ("queue", 5),
    ("priority", "high"),
    ("retries", 1.5),
    ("created", "yesterday"),
    ("options", []),
    ("eta", "soon"),
])
def test_decode_wrongly_typed_field_raises_message_error_naming_it(field, value):
    assert f"field {field!r} is a {type(value).__name__}" in decode_error(
        envelope(**{field: value})
    )


def test_decode_kwargs_with_non_str_keys_raises_message_error():
    body = envelope(kwargs={codec.TAG: "dict", "v": [[1, 2]]})
    assert "kwargs has a key that is not a string" in decode_error(body)


@pytest.mark.parametrize("priority", [-1, 10, 42])
def test_decode_priority_outside_0_to_9_raises_message_error(priority):
    # A priority the broker has no list for would be published where no
    # worker reads (e.g. on retry): DESIGN.md 4, nothing is dropped silently.
    assert "priority" in decode_error(envelope(priority=priority))
