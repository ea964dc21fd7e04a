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
from typing import Any

from ..message import Message


@dataclass(slots=True)
class Delivery:
    """One fetched message: its id, its queue and its undecoded body.

    ``revoked`` deliveries were dropped by the broker because their task
    was revoked; they are handed over only so the worker can record that.
    """

    id: str
    queue: str
    body: bytes
    revoked: bool = False


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
    """What ``release()``/``reap()`` took back from one consumer.

    ``running`` is the id of the task it started last (None if none) and
    ``fate`` what became of that message: ``"acked"`` (acked at start, or
    finished), ``"requeued"`` (acks_late: it runs again), ``"dropped"``
    (``reject_on_worker_lost=False``, or a hard time limit), ``"dead"``
    (it had killed ``max_deaths`` executors: dead-lettered) or ``""``.
    ``requeued`` lists the other ids given back (not the running one).
    """

    consumer: str
    running: str | None
    fate: str
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
    """The contract each broker module fulfils; tests/test_redis_broker.py checks it."""

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
        first within a queue (queues take turns), moving due scheduled
        messages to their queues on the way.
        Waits up to ``timeout`` seconds when there are none (0: no wait).
        Fetched messages belong to ``consumer`` until ``ack``/``requeue``.
        """

    @abstractmethod
    def ack(self, consumer: str, ids: Iterable[str]) -> None:
        """Forget fetched messages: they will never be delivered again (and
        forget how many executors they killed)."""

    @abstractmethod
    def start(self, consumer: str, task_id: str, acks: Iterable[str], *,
              ack_it: bool, redeliver: bool = True) -> int:
        """Record that ``consumer`` starts ``task_id``, ack it too if
        ``ack_it`` (acks_late=False), and ack the other ``acks``, in one
        round trip. Returns 1 to run it; 0 if it was revoked meanwhile (it
        is acked); -1 if ``consumer`` no longer holds it (its lease ran out
        and the message went back to its queue: another worker runs it).
        ``redeliver=False``: if the consumer dies running it, do not requeue
        it (``reject_on_worker_lost=False``).
        """

    @abstractmethod
    def defer(self, consumer: str, task_id: str, eta: float) -> None:
        """Move a fetched message back to the broker, to be delivered at ``eta``."""

    @abstractmethod
    def take_token(self, name: str, rate: float) -> float:
        """Take a token from the shared bucket of ``name`` (``rate`` per
        second); return 0 if taken, else seconds until one is available."""

    @abstractmethod
    def requeue(self, consumer: str, ids: Iterable[str]) -> None:
        """Give fetched messages back to the front of their queues."""

    @abstractmethod
    def heartbeat(self, consumers: Iterable[str], lease: float) -> None:
        """Keep ``consumers`` alive for ``lease`` more seconds."""

    @abstractmethod
    def release(self, consumer: str, *, drop_running: str | None = None,
                shutdown: bool = False) -> Reaped:
        """Give back every message ``consumer`` holds and forget it.

        ``drop_running=id`` acks the task it was running, if that is ``id``,
        instead of requeueing it (its executor was killed for a hard time
        limit or a terminate). ``shutdown``
        requeues an acks_late running task without counting it as a death
        (the worker stopped it, the task did not kill it).
        """

    @abstractmethod
    def running_task(self, consumer: str) -> str | None:
        """The id ``consumer`` started last, if it is still recorded."""

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        """Never deliver these tasks again (remembered a day); with
        ``terminate``, workers also kill them where they are running.
        Returns the ids that no consumer is running now."""

    @abstractmethod
    def to_terminate(self, consumers: Sequence[str]) -> dict[str, str]:
        """Consumers (of ``consumers``) running a task revoked with terminate,
        mapped to that task's id."""

    @abstractmethod
    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        """Record a worker's heartbeat info (JSON data) under its name."""

    @abstractmethod
    def unregister_worker(self, name: str) -> None: ...

    @abstractmethod
    def workers(self) -> dict[str, dict[str, Any]]:
        """Every registered worker's last heartbeat info."""

    @abstractmethod
    def reap(self) -> list[Reaped]:
        """Release every consumer whose lease has run out (its worker died)."""

    @abstractmethod
    def dead_letter(self, consumer: str, delivery: Delivery, reason: str) -> None:
        """Move a fetched message to the dead-letter store with ``reason``."""

    @abstractmethod
    def requeue_dead_letter(self, task_id: str) -> bool:
        """Put a dead letter back on its queue; False if there is none by that id."""

    @abstractmethod
    def delete_dead_letter(self, task_id: str) -> bool: ...

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
