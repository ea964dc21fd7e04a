"""The ``broker`` fixture: each contract test runs once per broker.

To add a broker, add its name to ``BROKERS`` and write a ``<name>_broker``
fixture that gives a fresh one per test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from djtasks.brokers import Broker, get_broker, make_broker
from djtasks.brokers.memory import MemoryBroker

BROKERS = ["redis", "memory"]


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


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
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
