"""The broker contract: a transport with consumer handles, and small roles.

A broker moves message bodies between callers and workers. It never looks
inside a body except for the id, queue, priority and eta the caller gives
it. docs/brokers.md describes the contract; tests/contract/ holds the one
test suite every broker passes.

- ``Transport``: publish, hand out ``Consumer`` handles, reap dead
  consumers, queue depths.
- ``Consumer``: one executor's handle. Its fetched messages stay in the
  broker, owned by it, until they are acked or given back, so a consumer
  that dies loses nothing: once its lease runs out, any worker's ``reap()``
  hands its messages back to their queues.
- Roles: ``DeadLetters``, ``Revocations``, ``RateLimits``,
  ``WorkerRegistry``, ``ResultNotices``, ``Purging``, ``Inspection``,
  ``ChordCounters``. ``Broker`` is all of them.

Times are Unix timestamps or durations in seconds, read from ``clock``.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..message import Message

# Shared by every broker.
PRIORITIES = range(9, -1, -1)  # fetch order: 9 (highest) first
MAX_BLOCK = 1.0  # seconds an idle fetch waits at most, so stop flags are seen
REVOKE_MEMORY = 86400.0  # seconds a revocation is remembered past its score


@dataclass(slots=True)
class Delivery:
    """One fetched message: its id, its queue and its undecoded body.

    ``revoked`` deliveries were dropped by the broker because their task
    was revoked; they are handed over only so the worker can record that.
    ``offered`` deliveries are not held yet (the database broker on
    PostgreSQL hands over the message a wake-up notice carried): the
    consumer's first call about it takes it, and finds whether another
    consumer took it first (``Consumer.hold``).
    ``token`` names this very message to its broker (the sha1 of its frame
    on Redis, its row's id on a database): a start asked again with it
    after its reply was lost knows its own start by it (``Consumer.start``).
    ``started`` deliveries were started by the waiting fetch that returned
    them (``Consumer.fetch(..., start=...)``), as ``start`` would with the
    flags ``WakeStart`` gives their task: the consumer runs them without
    starting them again, and settles them however they end.
    """

    id: str
    queue: str
    body: bytes
    revoked: bool = False
    offered: bool = False
    token: str = ""
    started: bool = False


@dataclass(frozen=True, slots=True)
class WakeStart:
    """The tasks a waiting fetch may start itself, so a consumer woken by a
    publish runs the first message without a start round trip of its own:
    task name -> ``(ack, redeliver, track)``, the flags the worker would
    pass to ``Consumer.start`` for it. A task left out (one with a rate
    limit, or one the worker does not know) is never started by a fetch.
    """

    flags: Mapping[str, tuple[bool, bool, bool]]


@dataclass(slots=True)
class DeadLetter:
    """A message the worker could not run, with the reason and when (timestamp)."""

    id: str
    queue: str
    body: bytes
    reason: str
    time: float


class Started(enum.Enum):
    """What ``Consumer.start`` found."""

    RUN = "run"  # recorded as running: run it
    REVOKED = "revoked"  # revoked meanwhile: acked, do not run it
    LOST = "lost"  # this consumer no longer holds it (its lease ran out): another runs it


class Fate(enum.Enum):
    """What ``release()``/``reap()`` did with the task a consumer was running."""

    NONE = ""  # it was running nothing
    ACKED = "acked"  # acked at start (at most once), or it had finished
    REQUEUED = "requeued"  # acks_late: back on its queue, it runs again
    DROPPED = "dropped"  # reject_on_worker_lost=False, or killed on purpose (time limit)
    DEAD = "dead"  # it had killed max_deaths executors: dead-lettered


@dataclass(slots=True)
class Reaped:
    """What ``release()``/``reap()`` took back from one consumer.

    ``running`` is the id of the task it started last (None if none) and
    ``fate`` what became of that message. ``requeued`` lists the other ids
    given back (fetched and never started, or acks_late and not yet acked:
    they run again). ``unsettled`` lists the other tasks
    it started (with ``track=True``) whose rows it never reported written
    (``Consumer.ack(settled=...)``): their results were lost with it.
    """

    consumer: str
    running: str | None
    fate: Fate
    requeued: list[str]
    unsettled: list[str] = field(default_factory=list)


class Consumer(ABC):
    """One executor's handle on the broker: what it fetched is its own.

    Made by ``Transport.consumer(name, queues)``; the name is unique per
    executor life (``host.pid/slot.generation``). Every method raises
    ``BrokerError`` if the broker cannot be reached.
    """

    name: str
    queues: list[str]
    # Whether ``start_and_fetch`` fetches too (in the start's round trip).
    fetches_with_start = False
    starts_on_wake = False  # a waiting fetch honours ``start``

    @abstractmethod
    def fetch(self, count: int, timeout: float, *,
              start: WakeStart | None = None) -> list[Delivery]:
        """Fetch up to ``count`` messages, highest priority first within a
        queue (queues take turns, so none starves), moving due scheduled
        messages to their queues on the way; frames of revoked tasks come
        back with ``revoked=True`` and are already forgotten. Waits up to
        ``timeout`` seconds when there are none (0: no wait). Fetched
        messages belong to this consumer until ``ack``/``requeue``/``defer``/
        ``dead_letter``/``release``: a delivery is never held by two
        consumers at once. A waiting fetch may instead hand over one offered
        delivery (``Delivery.offered``), held only once taken (``hold``).

        With ``start`` (where ``starts_on_wake``: Redis), a fetch that waited
        may also start the first delivery it returns, in the same round
        trip, when ``start`` names its task and its message names no
        ``expires`` and no per-call ``ignore_result``; that delivery comes
        back with ``started=True``. A start on wake is one ``start`` would
        make: the same acks, running marker and unsettled set.
        """

    @abstractmethod
    def start(self, task_id: str, *, ack: bool, redeliver: bool = True, track: bool = True,
              acks: Iterable[str] = (), token: str = "") -> Started:
        """Record that this consumer starts ``task_id`` (a fetched message),
        in one round trip (one transaction on a database) with acking the
        other ``acks``.

        ``ack`` acks the message itself now (acks_late=False: at most once).
        ``redeliver=False``: if the consumer dies running it, do not requeue
        it (``reject_on_worker_lost=False``). ``track`` keeps the task among
        this consumer's unsettled ones until ``ack(settled=[task_id])``, so a
        dead consumer's lost results are reported (``Reaped.unsettled``).
        ``token`` (``Delivery.token``): a start asked again after its reply
        was lost, the message acked by it, is ``Started.RUN`` again if this
        consumer's running marker names this very message; without it, LOST.
        """

    def start_and_fetch(self, task_id: str, count: int, *, ack: bool, redeliver: bool = True,
                        track: bool = True, acks: Iterable[str] = (), token: str = ""
                        ) -> tuple[Started, list[Delivery]]:
        """``start(task_id, ...)`` and, where the broker can do it in the
        same round trip (``fetches_with_start``: Redis), ``fetch(count, 0)``:
        what the executor asks when it starts the last message it holds, so
        the next ones are at hand when that one ends. The fetched messages
        are held by this consumer as ``fetch`` says, so none is lost if it
        dies. Elsewhere it fetches nothing (``[]``): a fetch of its own
        before the run would only delay the task by a round trip; the
        executor fetches after the run instead.
        """
        return self.start(task_id, ack=ack, redeliver=redeliver, track=track, acks=acks,
                          token=token), []

    def hold(self, delivery: Delivery) -> bool:
        """Take ``delivery`` if it is only offered (``Delivery.offered``):
        True if this consumer holds it now, as a fetched one; False if
        another consumer took it, or it is no longer ready. ``start``,
        ``defer`` and ``dead_letter`` take an offer themselves: ``start``
        returns LOST, and the others do nothing, when it was taken; ``ack``
        acks held messages only, so an offer is held before it is acked. A
        delivery that was not offered is held already: True, no round trip.
        """
        return True

    @abstractmethod
    def ack(self, ids: Iterable[str], *, settled: Iterable[str] = ()) -> None:
        """Forget fetched messages ``ids``: never delivered again, their
        death count forgotten. ``settled`` task ids have had their final rows
        written and leave the unsettled set."""

    @abstractmethod
    def requeue(self, ids: Iterable[str]) -> None:
        """Give fetched messages back to the front of their queues, in order."""

    @abstractmethod
    def defer(self, task_id: str, eta: float) -> None:
        """Move a fetched message back to the broker, to be delivered at ``eta``."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move a fetched message to the dead-letter store with ``reason``;
        a second letter with the same id is kept beside the first. One the
        fetch started (``Delivery.started``) is then no longer this
        consumer's running task nor unsettled: it ran nothing."""

    @abstractmethod
    def renew(self, lease: float) -> None:
        """Keep this consumer alive for ``lease`` more seconds (the heartbeat)."""

    @abstractmethod
    def release(self, *, drop_running: str | None = None, shutdown: bool = False) -> Reaped:
        """Give back every message this consumer holds and forget it.

        The task it was running (acks_late, still held) is requeued and
        counted as a death, or dead-lettered at ``max_deaths``. It is dropped
        instead if it was started with ``redeliver=False``, or with
        ``drop_running=id`` if it is ``id`` (its executor was killed for a
        hard time limit or a terminate).
        ``shutdown`` requeues it without counting a death (the worker
        stopped it; the task did not kill it).
        """


class Transport(ABC):
    """Publishing and consuming; the core every broker module implements."""

    url: str
    clock: Callable[[], float] = staticmethod(time.time)  # tests may move time
    # The database alias whose transaction ``publish`` joins (the database
    # broker), or None: then the enqueue door publishes on commit.
    atomic_with: str | None = None

    @abstractmethod
    def publish(self, items: Sequence[tuple[Message, bytes]]) -> None:
        """Put each ``(message, body)`` on ``message.queue`` at
        ``message.priority``, or schedule it for ``message.eta`` if that is in
        the future; a message published while an idle consumer waits wakes
        it. All items go in one round trip, all or none. Idempotent where
        ``atomic_with`` is None: a message whose id and ``created`` time this
        broker was already given (remembered a day past the later of its
        created time and its eta) is not published again, so a publish retried
        after a lost reply, or the outbox, never makes a second copy. A broker
        whose publish joins the caller's transaction is never asked twice.
        Raises ``BrokerError`` if the broker cannot be reached.
        """

    def publish_begin(self, items: Sequence[tuple[Message, bytes]]) -> Callable[[], None]:
        """``publish(items)`` in two halves: the message goes now, as far as
        it can without waiting for the broker's reply, and the returned
        function waits for that reply (raises ``BrokerError`` as ``publish``
        does, after its own retries). Between the two the caller may do
        other work (the enqueue door writes the PENDING row), but makes no
        other call on this broker from the same thread. A message may reach
        a worker before the second half returns. This default sends nothing
        until the second half, which is ``publish(items)``; the Redis broker
        writes the command at once. Raises ``BrokerError`` if the broker
        cannot be reached at once.
        """
        return partial(self.publish, items)

    def publish_with_rows(self, items: Sequence[tuple[Message, bytes]],
                          pending: Sequence[Message]) -> None:
        """``publish(items)`` together with the PENDING ``TaskResult`` rows of
        ``pending`` (written as ``TaskResultQuerySet.enqueued`` writes them: a
        reused task id is taken over), on the database ``atomic_with``: both
        or neither. Inside the caller's transaction both join it, and a
        failure dooms it as a failed query would (the enqueue door puts a
        savepoint around the call); outside one, they are a transaction of
        their own. Asked only of a broker whose ``atomic_with`` is set, with
        messages of distinct ids; on PostgreSQL the database broker does it
        in one statement. Raises ``BrokerError``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not publish in a database "
                                  "transaction (atomic_with is None)")

    @abstractmethod
    def published(self, messages: Sequence[Message]) -> set[str]:
        """The ids of ``messages`` this broker was given (same id and
        ``created`` time): the outbox publishes only the others."""

    @abstractmethod
    def consumer(self, name: str, queues: Sequence[str]) -> Consumer:
        """The handle of consumer ``name`` on ``queues``. Cheap: no round
        trip; a handle made again for the same name (the supervisor's view
        of a child's consumer) acts on the same messages."""

    @abstractmethod
    def reap(self) -> list[Reaped]:
        """Release every consumer whose lease has run out (its worker died),
        as ``Consumer.release()`` does; also forget stale revocations."""

    @abstractmethod
    def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each queue (not scheduled, not fetched)."""

    @abstractmethod
    def scheduled_count(self) -> int:
        """Messages waiting for their eta."""

    @abstractmethod
    def in_flight(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages of each queue that a live consumer holds (one that has
        renewed its lease, as every executor does before it fetches): fetched
        and not yet acked or given back, running or prefetched. For the
        admin's dashboard; a few round trips, none per message."""

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


class DeadLetters(ABC):
    """The store of messages the worker refused (``Consumer.dead_letter``)."""

    @abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter store, newest first."""

    def dead_letter_count(self) -> int:
        """How many letters ``dead_letters()`` would return, without reading
        their bodies (metrics read it at every scrape). Raises ``BrokerError``."""
        return len(self.dead_letters())

    @abstractmethod
    def requeue_dead_letter(self, letter_id: str) -> bool:
        """Put a dead letter back on its queue; False if there is none by
        that id, or it has no message id (a malformed frame)."""

    @abstractmethod
    def delete_dead_letter(self, letter_id: str) -> bool:
        """Forget a dead letter; False if there is none by that id."""


class Revocations(ABC):
    """Tasks that must never start (Celery's ``revoke``)."""

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], *, terminate: bool = False) -> list[str]:
        """Never deliver these tasks again: remembered for a day, and at
        least a day past a scheduled message's eta. With ``terminate``,
        workers also kill them where they run. Returns the ids no consumer
        is running now."""

    @abstractmethod
    def to_terminate(self, consumers: Sequence[str]) -> dict[str, str]:
        """Consumers (of the names given) running a task revoked with
        terminate, mapped to that task's id."""


class RateLimits(ABC):
    """Token buckets shared by every worker (``rate_limit``)."""

    @abstractmethod
    def take_token(self, name: str, rate: float) -> float:
        """Take a token from the bucket of ``name`` (``rate`` tokens per
        second, holding at most one second's worth, at least 1); return 0 if
        taken, else seconds until one is available."""


class WorkerRegistry(ABC):
    """Who is up: each worker's heartbeat info, for ``manage.py djtasks workers``."""

    @abstractmethod
    def register_worker(self, name: str, info: dict[str, Any]) -> None:
        """Record a worker's heartbeat info (JSON data) under its name."""

    @abstractmethod
    def unregister_worker(self, name: str) -> None:
        """Forget a worker that stopped."""

    @abstractmethod
    def workers(self) -> dict[str, dict[str, Any]]:
        """Every registered worker's last heartbeat info."""

    @abstractmethod
    def lead(self, duty: str, holder: str, ttl: float) -> bool:
        """Hold ``duty`` for ``ttl`` seconds, so one worker at a time does it
        (the outbox sweep). True if ``holder`` holds it now: it got it, or
        held it already (the ttl starts again). A holder that dies loses it
        when its ttl runs out."""


class DoneListener(ABC):
    """Returned by ``ResultNotices.listen_done``; a context manager."""

    def __enter__(self) -> DoneListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """True once a notice came (False after ``timeout`` seconds)."""

    @abstractmethod
    def close(self) -> None: ...


class ResultNotices(ABC):
    """Wake-ups for ``AsyncResult.get()``, so it does not poll the database."""

    # False where the broker has no way to send notices (the database broker
    # on SQLite and MariaDB): ``wait`` then only pauses for the poll interval
    # and returns False, and ``get()`` reads the row after each pause.
    exact_notices: bool = True

    @abstractmethod
    def notify_done(self, ids: Sequence[str]) -> None:
        """Tell waiting ``AsyncResult.get()`` calls that these tasks have a new state."""

    @abstractmethod
    def listen_done(self, task_id: str) -> DoneListener:
        """A listener whose ``wait(timeout)`` returns True once
        ``notify_done`` names ``task_id``. Open it before reading the state,
        so no notice falls in between.
        """


class Purging(ABC):
    """Emptying a queue (``manage.py djtasks purge``; Celery's ``purge``)."""

    @abstractmethod
    def purge(self, queue: str) -> list[str]:
        """Delete every ready message of ``queue`` (waiting to be fetched, due
        if it had an eta) at once, and return their task ids in the order a
        consumer would have fetched them (an id twice if it had two messages). An empty or
        unknown queue gives []. Scheduled messages (eta still in the future)
        and fetched ones stay: as with Celery's purge, only what waits in
        the queue goes. Atomic: a message is either fetched by a consumer
        or purged, never both, and one published meanwhile is either purged
        and listed or kept. Raises ``BrokerError`` if the broker cannot be
        reached.
        """


class Place(enum.Enum):
    """Where the broker holds a message (``Inspection.locate``)."""

    READY = "ready"  # waiting in its queue
    SCHEDULED = "scheduled"  # waiting for its eta
    FETCHED = "fetched"  # held by a consumer: not yet started, or acks_late and not yet acked


@dataclass(slots=True)
class Held:
    """One message of a task that the broker holds, and where."""

    place: Place
    queue: str
    eta: float | None = None  # SCHEDULED: when it comes due (timestamp)
    consumer: str | None = None  # FETCHED: the consumer that holds it


class Inspection(ABC):
    """Looking one task up in the broker (``manage.py djtasks inspect``)."""

    @abstractmethod
    def locate(self, task_id: str, queues: Sequence[str]) -> list[Held]:
        """Every message of ``task_id`` the broker holds: scheduled or
        fetched by a consumer that holds a lease (``renew``; on any queue),
        and ready in one of ``queues`` (found by
        reading those queues: on Redis, up to ``SCAN_LIMIT`` messages per
        queue and priority). Scheduled first, then fetched, then ready. A
        look, not a snapshot: a message that moves meanwhile may be missed
        or seen twice. Raises ``BrokerError``."""

    @abstractmethod
    def is_revoked(self, task_id: str) -> bool:
        """Whether ``task_id`` is revoked: its messages are dropped, never run."""



class ChordCounters(ABC):
    """Which members of a chord are done, counted in the broker (no polling
    task, unlike Celery's ``chord_unlock``; docs/canvas.md).

    A set of member ids per chord, not a bare counter: a member that runs
    twice (``acks_late`` after a worker died, or a rerun) is counted once.
    """

    @abstractmethod
    def chord_members_done(self, chord_id: str, member_ids: Sequence[str], size: int,
                           ttl: float) -> bool:
        """Record ``member_ids`` (one or more) as done, atomically; True if
        all ``size`` members of ``chord_id`` are recorded now (also when
        they were recorded before: a rerun of the last member still sees the
        chord complete). The chord's state is forgotten ``ttl`` seconds
        after its last members were recorded, if ``forget_chord`` is never
        called."""

    @abstractmethod
    def forget_chord(self, chord_id: str) -> None:
        """Forget the chord's state (once its callback is enqueued, or it failed)."""


class Broker(Transport, DeadLetters, Revocations, RateLimits, WorkerRegistry, ResultNotices,
             Purging, Inspection, ChordCounters):
    """A whole broker: the transport and every role. ``get_broker()`` returns one."""

    max_deaths: int = 3
