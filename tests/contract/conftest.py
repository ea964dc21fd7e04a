"""The ``broker`` fixture: each contract test runs once per broker.

To add a broker, add its name to ``BROKERS`` and write a ``<name>_broker``
fixture that gives a fresh one per test.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

from djtasks.brokers import Broker, get_broker, make_broker
from djtasks.brokers.memory import MemoryBroker

BROKERS = ["redis", "memory", "db-default", "db-sqlite", "db-mariadb"]
DB_ALIASES = {"db-default": "default", "db-sqlite": "sqlite", "db-mariadb": "mariadb"}


def _mariadb_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 3306), timeout=1).close()
    except OSError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A database broker's test gets its database (transactional: the broker
    commits, and threads use their own connections). MariaDB that is down
    fails the test under CI and skips it elsewhere."""
    mariadb_up = _mariadb_up()
    for item in items:
        param = getattr(getattr(item, "callspec", None), "params", {}).get("broker")
        if param in DB_ALIASES:
            item.add_marker(pytest.mark.django_db(transaction=True,
                                                  databases=[DB_ALIASES[param]]))
            if param == "db-mariadb" and not mariadb_up and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason="MariaDB at 127.0.0.1:3306 is down"))


@pytest.fixture
def redis_broker(redis_client, key_prefix) -> Broker:  # type: ignore[no-untyped-def]
    """The Redis broker under this test's own key prefix (fails under CI if Redis is down)."""
    return get_broker()


@pytest.fixture
def memory_broker(settings, key_prefix) -> Iterator[Broker]:  # type: ignore[no-untyped-def]
    """A fresh memory broker, also the one ``get_broker()`` returns in this test."""
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "memory://contract"}
    broker = get_broker()
    assert isinstance(broker, MemoryBroker)
    yield broker
    broker.reset()


def _db_broker(settings, alias: str) -> Broker:  # type: ignore[no-untyped-def]
    settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": f"db://{alias}"}
    return get_broker()


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, settings) -> Broker:  # type: ignore[no-untyped-def]
    if request.param in DB_ALIASES:
        return _db_broker(settings, DB_ALIASES[request.param])
    return request.getfixturevalue(f"{request.param}_broker")


@pytest.fixture
def same_store(broker: Broker, key_prefix: str) -> Callable[[], Broker]:
    """``same_store()`` -> a broker object on the test broker's store, made as
    another worker would make it (for the memory broker, the same object)."""
    return lambda: make_broker(broker.url, key_prefix, broker.max_deaths)


class Clock:
    """A clock the test moves by hand: ``clock.t += 60`` (seconds)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(broker: Broker) -> Iterator[Clock]:
    """The test broker's clock, frozen at the real time until the test moves it."""
    broker.clock = clock = Clock(time.time())  # type: ignore[method-assign]
    yield clock
    del broker.clock
