"""The executor: consume, run, ack. One per pool slot (a child process or the main one).

Per message: decode it (a bad one is dead-lettered), tell the broker the
task starts and ack it in the same round trip (unless ``acks_late``), run
it, and hand its result to the ``ResultWriter`` thread, which stores results
in batches and acks late messages after their rows are written. A busy
executor makes one Redis round trip per task plus its share of a batch.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.db import close_old_connections

from .. import states
from ..brokers import Broker, Delivery
from ..exceptions import BrokerError, MessageError, NotRegistered, TaskRevokedError
from ..execute import Outcome, execute
from ..message import Message
from ..registry import registry
from ..task import Task
from .results import ResultWriter, make_row

logger = logging.getLogger("djtasks.worker")

BACKOFF_MAX = 10.0  # seconds between reconnection attempts, at most


def _expired_reason(message: Message) -> str:
    assert message.expires is not None
    when = datetime.fromtimestamp(message.expires, UTC).isoformat()
    return f"expired at {when} before it started"


class Executor:
    """Runs messages from ``queues`` as ``consumer`` until ``stop()`` (or, in
    ``burst`` mode, until the queues are empty).

    ``prefetch`` is how many messages one fetch takes; they wait in the
    broker's in-flight store, owned by ``consumer``, not only in memory.
    """

    def __init__(
        self, broker: Broker, *, consumer: str, hostname: str, queues: list[str],
        prefetch: int, burst: bool = False,
    ) -> None:
        self.broker = broker
        self.consumer = consumer
        self.hostname = hostname
        self.queues = queues
        self.prefetch = prefetch
        self.burst = burst
        self.stopping = False
        self.results: ResultWriter | None = None
        self._acks: list[str] = []  # acks_late ids with no row to wait for
        self.tasks_done = 0

    def stop(self) -> None:
        """Warm stop: finish the running task, give the fetched ones back."""
        self.stopping = True

    def run(self) -> None:
        """The loop. Broker outages are logged and retried with backoff."""
        self.results = ResultWriter(self.broker, self.consumer)
        backoff = 0.5
        try:
            while not self.stopping:
                try:
                    deliveries = self.broker.consume(self.consumer, self.queues, self.prefetch, 0)
                    if not deliveries:
                        self._flush_acks()
                        if self.burst:
                            break
                        deliveries = self.broker.consume(
                            self.consumer, self.queues, self.prefetch, timeout=1.0
                        )
                    self.process(deliveries)
                    backoff = 0.5
                except BrokerError as exc:
                    logger.error("broker error, retrying in %.1fs: %s", backoff, exc)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.results.stop()
            try:
                self._flush_acks()
            except BrokerError as exc:
                logger.error("could not ack on the way out (redelivered later): %s", exc)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _flush_acks(self) -> None:
        if self._acks:
            self.broker.ack(self.consumer, self._acks)
            self._acks = []

    def process(self, deliveries: list[Delivery]) -> None:
        for i, delivery in enumerate(deliveries):
            if self.stopping:
                self.broker.requeue(self.consumer, [d.id for d in deliveries[i:]])
                return
            self.handle(delivery)

    def handle(self, delivery: Delivery) -> None:
        """Run one delivery to its end (or dead-letter it)."""
        assert self.results is not None
        try:
            message = Message.decode(delivery.body)
        except MessageError as exc:
            self._dead_letter(delivery, str(exc))
            return
        if message.id != delivery.id:
            self._dead_letter(delivery, f"the envelope id {message.id!r} is not the frame's")
            return
        try:
            task = registry.get(message.task)
        except NotRegistered as exc:
            self._dead_letter(delivery, str(exc))
            return
        store = not task.ignore_result
        if message.expires is not None and time.time() > message.expires:
            logger.info("task %s[%s] expired before it started", message.task, message.id)
            if store:
                self.results.add(make_row(
                    message, states.REVOKED, self.consumer, finished=time.time(),
                    exception=TaskRevokedError(_expired_reason(message))),
                    late_ack=message.id)
            else:
                self._acks.append(message.id)
            return
        if store and task.track_started:
            self.results.add(make_row(message, states.STARTED, self.consumer,
                                      started=time.time()))
        acks = self._acks
        self._acks = []
        if not task.acks_late:
            acks.append(message.id)  # at most once: acked before it runs
        self.broker.start(self.consumer, message.id, acks)

        close_old_connections()
        outcome = execute(task, message, hostname=self.hostname)
        close_old_connections()
        self.tasks_done += 1
        self._record(task, message, outcome, store)

    def _record(self, task: Task, message: Message, outcome: Outcome, store: bool) -> None:
        assert self.results is not None
        if outcome.status == states.FAILURE:
            logger.error("task %s[%s] failed: %s", message.task, message.id,
                         outcome.traceback.rstrip())
        status = states.RETRY if outcome.retry is not None else outcome.status
        late_ack = message.id if task.acks_late else None
        if store:
            self.results.add(make_row(
                message, status, self.consumer, started=outcome.started,
                finished=outcome.finished, result=outcome.result,
                exception=outcome.exception, traceback=outcome.traceback,
            ), late_ack=late_ack)
        elif late_ack is not None:
            self._acks.append(late_ack)
        if outcome.retry is not None:
            # The next run has the same id: its RETRY row and the ack of this
            # delivery must be settled before it can be fetched.
            self.results.sync()
            self._flush_acks()
            retry = outcome.retry
            logger.info("task %s[%s] retry %d scheduled", message.task, message.id,
                        retry.retries)
            self.broker.publish([(retry, retry.encode())])

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("dead-lettering message %s from queue %r: %s",
                     delivery.id, delivery.queue, reason)
        self.broker.dead_letter(self.consumer, delivery, reason)
