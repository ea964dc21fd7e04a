"""``DJTASKS`` settings: defaults, validation with messages that name the
key and what is expected, lazy re-reading, and URL redaction for logs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from djtasks import conf
from djtasks.brokers import redact_url


def config_error(raw: Any) -> str:
    with pytest.raises(ImproperlyConfigured) as info:
        conf.load(raw)
    return str(info.value)


# -- defaults ----------------------------------------------------------------


def test_no_djtasks_setting_gives_the_defaults():
    assert conf.load(None) == conf.Settings()


def test_empty_djtasks_gives_the_documented_defaults():
    s = conf.load({})
    assert s.BROKER_URL == "db://default"
    assert s.DEFAULT_QUEUE == "default"
    assert s.ROUTES == {}
    assert s.ALWAYS_EAGER is False
    assert s.ENQUEUE_ON_COMMIT is True
    assert timedelta(days=7) == s.RESULT_EXPIRES
    assert s.DEFAULT_PRIORITY == 0
    assert s.PREFETCH_MULTIPLIER == 4
    assert s.WORKER_LEASE == 30.0
    assert s.ACKS_LATE is False


def test_given_values_override_the_defaults():
    s = conf.load({"DEFAULT_QUEUE": "main", "PREFETCH_MULTIPLIER": 16, "ALWAYS_EAGER": True})
    assert (s.DEFAULT_QUEUE, s.PREFETCH_MULTIPLIER, s.ALWAYS_EAGER) == ("main", 16, True)


def test_djtasks_that_is_not_a_dict_is_improperly_configured():
    assert "DJTASKS must be a dict" in config_error(["BROKER_URL"])


# -- unknown keys and bad values ---------------------------------------------


def test_unknown_key_is_improperly_configured_naming_the_key():
    message = config_error({"BROKER_URLS": "redis://localhost"})
    assert "'BROKER_URLS'" in message
    assert "unknown key" in message


def test_unknown_key_error_lists_the_known_keys():
    assert "BROKER_URL" in config_error({"CONCURRENCY": 4})


@pytest.mark.parametrize("key,value,expected", [
    ("BROKER_URL", 6379, "a URL string"),
    ("DEFAULT_QUEUE", "my queue", "a queue name of letters, digits and _.:-"),
    ("DEFAULT_QUEUE", "", "a queue name"),
    ("PREFETCH_MULTIPLIER", 0, "an int from 1 to 1000"),
    ("PREFETCH_MULTIPLIER", 2.5, "an int from 1 to 1000"),
    ("WORKER_LEASE", -1, "a number of seconds > 0"),
    ("WORKER_LEASE", 0, "a number of seconds > 0"),
    ("DEFAULT_PRIORITY", 10, "an int from 0 (lowest) to 9 (highest)"),
    ("DEFAULT_PRIORITY", True, "an int from 0"),
    ("ALWAYS_EAGER", "yes", "True or False"),
    ("ENQUEUE_ON_COMMIT", 1, "True or False"),
    ("RESULT_EXPIRES", -60, "a timedelta, a number of seconds, or None"),
    ("RESULT_EXPIRES", "7d", "a timedelta"),
    ("ROUTES", [("a.*", "q")], "a dict of task name or glob"),
    ("KEY_PREFIX", "{tag}", "no braces"),
])
def test_bad_value_is_improperly_configured_naming_key_and_expectation(key, value, expected):
    message = config_error({key: value})
    assert f"DJTASKS[{key!r}]" in message
    assert expected in message


def test_negative_result_expires_timedelta_is_improperly_configured():
    # A negative number of seconds is refused; the same span as a timedelta must be too.
    message = config_error({"RESULT_EXPIRES": timedelta(seconds=-60)})
    assert "DJTASKS['RESULT_EXPIRES']" in message


@pytest.mark.parametrize("url,scheme", [("amqp://guest@localhost//", "amqp"),
                                        ("http://localhost:6379", "http")])
def test_unsupported_broker_scheme_is_improperly_configured_listing_supported_ones(url, scheme):
    message = config_error({"BROKER_URL": url})
    assert "DJTASKS['BROKER_URL']" in message
    assert repr(scheme) in message
    assert "redis://" in message and "cache://" in message


def test_db_broker_url_naming_an_unknown_database_is_improperly_configured():
    message = config_error({"BROKER_URL": "db://nosuchdb"})
    assert "DJTASKS['BROKER_URL']" in message
    assert "'nosuchdb', which is not in DATABASES" in message



@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "rediss://:pw@redis.example.com:6380/1", "unix:///tmp/redis.sock",
])
def test_redis_broker_urls_are_accepted(url):
    assert url == conf.load({"BROKER_URL": url}).BROKER_URL


def test_routes_with_unknown_option_is_improperly_configured_naming_route_and_option():
    message = config_error({"ROUTES": {"reports.*": {"queue": "reports", "exchange": "x"}}})
    assert "DJTASKS['ROUTES']['reports.*']" in message
    assert "exchange" in message
    assert "'queue' and 'priority'" in message


def test_routes_with_bad_queue_name_is_improperly_configured():
    message = config_error({"ROUTES": {"reports.*": {"queue": "two words"}}})
    assert "DJTASKS['ROUTES']['reports.*']['queue']" in message
    assert "a queue name" in message


def test_routes_with_bad_priority_is_improperly_configured():
    message = config_error({"ROUTES": {"reports.*": {"priority": 11}}})
    assert "DJTASKS['ROUTES']['reports.*']['priority']" in message


def test_route_that_is_not_a_dict_is_improperly_configured():
    message = config_error({"ROUTES": {"reports.*": "reports"}})
    assert "DJTASKS['ROUTES']" in message


def test_valid_routes_are_kept():
    routes = {"a.b": {"queue": "q1"}, "c.*": {"queue": "q2", "priority": 5}}
    assert routes == conf.load({"ROUTES": routes}).ROUTES


def test_result_expires_in_seconds_becomes_a_timedelta():
    assert timedelta(hours=1) == conf.load({"RESULT_EXPIRES": 3600}).RESULT_EXPIRES
    assert timedelta(seconds=1.5) == conf.load({"RESULT_EXPIRES": 1.5}).RESULT_EXPIRES


def test_result_expires_none_keeps_results_forever():
    assert conf.load({"RESULT_EXPIRES": None}).RESULT_EXPIRES is None


def test_worker_lease_int_becomes_float_seconds():
    lease = conf.load({"WORKER_LEASE": 10}).WORKER_LEASE
    assert lease == 10.0 and isinstance(lease, float)


# -- cache:// brokers --------------------------------------------------------


def test_cache_url_naming_a_django_redis_alias_is_accepted():
    assert conf.load({"BROKER_URL": "cache://redis"}).BROKER_URL == "cache://redis"


def test_cache_url_naming_a_missing_alias_is_improperly_configured_listing_known_ones():
    message = config_error({"BROKER_URL": "cache://sessions"})
    assert "'sessions'" in message
    assert "not in CACHES" in message
    assert "default" in message and "redis" in message


def test_cache_url_naming_a_non_django_redis_cache_is_improperly_configured():
    message = config_error({"BROKER_URL": "cache://default"})
    assert "'default'" in message
    assert "LocMemCache" in message
    assert "django-redis" in message


def test_cache_url_without_alias_is_improperly_configured():
    assert "needs a CACHES alias" in config_error({"BROKER_URL": "cache://"})


def test_cache_alias_is_checked_against_the_current_caches_setting(settings):
    settings.CACHES = {**settings.CACHES, "queue": settings.CACHES["redis"]}
    assert conf.load({"BROKER_URL": "cache://queue"}).BROKER_URL == "cache://queue"


# -- lazy reading ------------------------------------------------------------


def test_get_settings_reads_djtasks_from_django_settings(settings):
    assert settings.DJTASKS["KEY_PREFIX"] == conf.get_settings().KEY_PREFIX


def test_get_settings_returns_the_same_object_until_djtasks_changes():
    assert conf.get_settings() is conf.get_settings()


def test_get_settings_rereads_after_djtasks_changes(settings):
    before = conf.get_settings()
    settings.DJTASKS = {**settings.DJTASKS, "DEFAULT_QUEUE": "changed"}
    after = conf.get_settings()
    assert before.DEFAULT_QUEUE == "default"
    assert after.DEFAULT_QUEUE == "changed"


def test_get_settings_raises_for_a_bad_djtasks_set_at_run_time(settings):
    settings.DJTASKS = {**settings.DJTASKS, "DEFAULT_PRIORITY": 99}
    with pytest.raises(ImproperlyConfigured, match=re.escape("DJTASKS['DEFAULT_PRIORITY']")):
        conf.get_settings()


def test_get_settings_rereads_after_caches_changes(settings):
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "cache://redis"}
    conf.get_settings()
    settings.CACHES = {"default": settings.CACHES["default"]}
    with pytest.raises(ImproperlyConfigured, match="not in CACHES"):
        conf.get_settings()


# -- redact_url ----------------------------------------------------------------


@pytest.mark.parametrize("url,redacted", [
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://bob:s3cret@redis.example.com:6379/2", "redis://bob:***@redis.example.com:6379/2"),
    ("rediss://default:s3cret@cache.example.com:6380/0",
     "rediss://default:***@cache.example.com:6380/0"),
    ("rediss://:p@ss:word@cache.example.com/0", "rediss://:***@cache.example.com/0"),
])
def test_redact_url_hides_the_password(url, redacted):
    assert redact_url(url) == redacted


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0",
    "redis://bob@127.0.0.1:6379/0",
    "rediss://redis.example.com:6380/1",
    "unix:///tmp/redis.sock?db=2",
    "cache://redis",
])
def test_redact_url_leaves_a_url_without_password_alone(url):
    assert redact_url(url) == url


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0?password=s3cret",
    "unix:///tmp/redis.sock?db=0&password=s3cret",
])
def test_redact_url_hides_a_password_given_as_query_parameter(url):
    # redis-py reads ?password=...; unix:// URLs can only carry it this way.
    redacted = redact_url(url)
    assert "s3cret" not in redacted
    assert redacted.startswith(url.split("?")[0])
