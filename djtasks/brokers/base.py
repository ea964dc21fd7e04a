"""The broker interface: what every broker module implements.

A broker moves message bodies between callers and workers. It never looks
inside a body except for the id, queue, priority and eta the caller gives
it. Consumers are named (one per executor); a consumer's fetched messages
stay in the broker, owned by that consumer, until they are acked or given
back, so a consumer that dies loses nothing: once its lease runs out, any
worker's ``reap()`` hands its messages back to their queues.

Times are Unix timestamps or durations in seconds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..message import Message


@dataclass(slots=True)
class Delivery:
    """One fetched message: its id, its queue and its undecoded body."""

    id: str
    queue: str
    body: bytes


@dataclass(slots=True)
class DeadLetter:
    """A message the worker could not run, with the reason and when (timestamp)."""

    id: str
    queue: str
    body: bytes
    reason: str
    time: float


@dataclass(slots=True)
class Reaped:
    """What ``release()``/``reap()`` took back from one consumer: the id of
    the task it started last (None if none) and the ids given back."""

    consumer: str
    running: str | None
    requeued: list[str]


class DoneListener(ABC):
    """Returned by ``Broker.listen_done``."""

    def __enter__(self) -> DoneListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def wait(self, timeout: float) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...


class Broker(ABC):
    """The contract each broker module fulfils; tests/test_broker_contract.py checks it."""

    url: str

    @abstractmethod
    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        """Put each ``(message, body)`` on ``message.queue``, or schedule it
        for ``message.eta`` if that is in the future. All items go in one
        round trip. Raises ``BrokerError`` if the broker cannot be reached.
        """

    @abstractmethod
    def consume(
        self, consumer: str, queues: Sequence[str], count: int, timeout: float
    ) -> list[Delivery]:
        """Fetch up to ``count`` messages for ``consumer``, highest priority
        first, moving due scheduled messages to their queues on the way.
        Waits up to ``timeout`` seconds when there are none (0: no wait).
        Fetched messages belong to ``consumer`` until ``ack``/``requeue``.
        """

    @abstractmethod
    def ack(self, consumer: str, ids: Iterable[str]) -> None:
        """Forget fetched messages: they will never be delivered again."""

    @abstractmethod
    def start(self, consumer: str, task_id: str, acks: Iterable[str]) -> None:
        """Record that ``consumer`` starts ``task_id`` and ack ``acks`` (which
        holds ``task_id`` itself unless it is acks_late), in one round trip.
        A consumer that dies is reported by ``reap()`` with this id.
        """

    @abstractmethod
    def requeue(self, consumer: str, ids: Iterable[str]) -> None:
        """Give fetched messages back to the front of their queues."""

    @abstractmethod
    def heartbeat(self, consumers: Iterable[str], lease: float) -> None:
        """Keep ``consumers`` alive for ``lease`` more seconds."""

    @abstractmethod
    def release(self, consumer: str) -> Reaped:
        """Give back every message ``consumer`` holds and forget it."""

    @abstractmethod
    def reap(self) -> list[Reaped]:
        """Release every consumer whose lease has run out (its worker died)."""

    @abstractmethod
    def dead_letter(self, consumer: str, delivery: Delivery, reason: str) -> None:
        """Move a fetched message to the dead-letter store with ``reason``."""

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter store, newest first."""

    @abstractmethod
    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each queue (not counting scheduled ones)."""

    @abstractmethod
    def scheduled_count(self) -> int:
        """Messages waiting for their eta."""

    @abstractmethod
    def notify_done(self, ids: Sequence[str]) -> None:
        """Tell waiting ``AsyncResult.get()`` calls that these tasks have a new state."""

    @abstractmethod
    def listen_done(self, task_id: str) -> DoneListener:
        """A context manager whose ``wait(timeout)`` returns True once
        ``notify_done`` names ``task_id`` (False after ``timeout`` seconds).
        Open it before reading the state, so no notice falls in between.
        """

    @abstractmethod
    def ping(self) -> None:
        """Raise ``BrokerError`` unless the broker answers."""

    @abstractmethod
    def close(self) -> None:
        """Close connections (after fork, at shutdown)."""

    def describe(self) -> str:
        """The broker URL with any password hidden, for banners and logs."""
        from . import redact_url

        return redact_url(self.url)
