"""The executor: consume, run, ack. One per pool slot (a child process, a
thread, or the main process).

Per message: decode it (a bad one is dead-lettered), tell the broker the
task starts and ack it in the same round trip (unless ``acks_late``), run
it, and hand its result to the ``ResultWriter`` thread, which stores results
in batches and acks late messages after their rows are written. A busy
executor makes one broker round trip per task plus its share of a batch: on
Redis the start of the last message held also fetches the next ones
(``start_and_fetch``); elsewhere they are fetched after its run.
"""

from __future__ import annotations

import logging
import resource
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from django.db import close_old_connections

from .. import enqueue, signals, states, workflow
from ..brokers import Broker, Consumer, Delivery, Started, WakeStart
from ..exceptions import (
    BrokerError,
    MessageError,
    NotRegistered,
    TaskRevokedError,
)
from ..execute import Outcome, execute, make_request
from ..handlers import is_expected
from ..message import Message
from ..models import TaskResult
from ..registry import registry
from ..task import Task
from .ignored import IgnoredRuns
from .report import Reporter
from .results import InlineResultWriter, ResultWriter
from .slots import SlotState

logger = logging.getLogger("djtasks.worker")

BACKOFF_MAX = 10.0  # seconds between reconnection attempts, at most
RECHECK = 1.0  # seconds after a task in which the next one needs no connection check first
RECYCLE = 75  # exit status of a prefork child that asks to be replaced (EX_TEMPFAIL)


class ColdShutdown(BaseException):
    """Raised into a running task by a second SIGTERM/SIGINT (solo pool).

    A ``BaseException`` so that the task's ``except Exception`` does not
    catch it; the worker gives the messages back and exits.
    """


@dataclass
class Limits:
    """Worker-wide defaults and recycling rules (``runworker`` options)."""

    time_limit: float | None = None  # seconds, hard
    soft_time_limit: float | None = None  # seconds
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB of resident memory


def _expired_reason(message: Message) -> str:
    assert message.expires is not None
    when = datetime.fromtimestamp(message.expires, UTC).isoformat()
    return f"expired at {when} before it started"


class Executor(IgnoredRuns):
    """Runs messages from ``queues`` as ``consumer`` until ``stop()`` (or, in
    ``burst`` mode, until the queues are empty).

    ``prefetch`` is how many messages one fetch takes; they wait in the
    broker's in-flight store, owned by ``consumer``, not only in memory.
    ``slot`` is where the supervisor reads the running task, its hard
    time-limit deadline and progress. ``inline`` runs in the caller's thread
    and transaction (``djtasks.testing``): its database connections are never
    closed and each row is written at once, on them, instead of by a writer
    thread. ``reporter`` hears of each run that ended (the worker's metrics).
    """

    def __init__(
        self, broker: Broker, *, consumer: str, hostname: str, queues: list[str],
        prefetch: int, burst: bool = False, limits: Limits | None = None,
        slot: SlotState | None = None, inline: bool = False, reporter: Reporter | None = None,
    ) -> None:
        self.broker = broker
        self.consumer: Consumer = broker.consumer(consumer, queues)
        self.name = consumer
        self.hostname = hostname
        self.queues = queues
        self.prefetch = prefetch
        self.burst = burst
        self.limits = limits or Limits()
        self.slot = slot or SlotState()
        self.inline = inline
        self.reporter = reporter or Reporter()
        self.stopping = False
        self.recycle = False  # stopped to be replaced (max tasks/memory)
        self.results: ResultWriter | None = None
        self._acks: list[str] = []  # acks_late ids with no row to wait for
        self._backlog: list[Delivery] = []  # fetched, not yet handled
        self.tasks_run = 0  # by this executor (the slot counts across replacements)
        self._current: str | None = None  # id of the task running now
        self._started: str | None = None  # id of the last task started (it ran, or runs)
        self._woken: WakeStart | None = None  # the plan of the last waiting fetch
        self._limit_warned: set[str] = set()
        self._soft_limits = False  # decided in run(), by the thread that runs the tasks
        self._connections_checked = -RECHECK  # time.monotonic() of the last close_old_connections

    def stop(self) -> None:
        """Warm stop: finish the running task, give the fetched ones back."""
        self.stopping = True

    def run(self) -> None:
        """The loop. Broker outages are logged and retried with backoff.

        Soft time limits are enforced only if this is the main thread
        (``SIGALRM`` reaches no other); elsewhere a task with a time limit
        runs without it, with a warning once per task name.
        """
        self._soft_limits = threading.current_thread() is threading.main_thread()
        writer = InlineResultWriter if self.inline else ResultWriter
        self.results = writer(self.broker, self.consumer)
        backoff = 0.5
        try:
            while not self.stopping:
                try:
                    if not self._backlog:
                        self._backlog = self._fetch()
                        if not self._backlog and self.burst:
                            break
                    self.process()
                    backoff = 0.5
                except BrokerError as exc:
                    logger.error("broker error, retrying in %.1fs: %s", backoff, exc)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.results.stop()
            # A task interrupted by a cold shutdown is not given back here: the
            # supervisor's release() settles it per its acks_late.
            waiting = [d.id for d in self._backlog if d.id != self._current]
            try:
                self._flush_acks()
                if waiting:
                    self.consumer.requeue(waiting)
            except BrokerError as exc:
                logger.error("could not ack or give back on the way out (the lease "
                             "will run out and they are redelivered): %s", exc)

    def _fetch(self) -> list[Delivery]:
        deliveries = self.consumer.fetch(self.prefetch, 0)
        if deliveries or self.burst:
            return deliveries
        self._flush_acks()
        self._woken = self._wake_start()
        return self.consumer.fetch(self.prefetch, timeout=1.0, start=self._woken)

    def _wake_start(self) -> WakeStart | None:
        """The tasks a waiting fetch may start itself (``Consumer.fetch``'s
        ``start``), with the flags ``handle`` starts them with: every
        registered task without a rate limit. None where the consumer cannot,
        or while ``task_received`` has receivers (they hear of a task before
        it starts). Built before each wait, so it follows the settings and
        the registry as they are then."""
        if not self.consumer.starts_on_wake or signals.task_received.receivers:
            return None
        return WakeStart({task.name: _start_flags(task, None) for task in registry
                          if task.rate_per_second is None})

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _flush_acks(self) -> None:
        if self._acks:
            self.consumer.ack(self._acks)
            self._acks = []

    def process(self) -> None:
        """Handle the backlog in order; on stop, give the rest back."""
        while self._backlog:
            delivery = self._backlog[0]
            # One the fetch started is this executor's running task: it runs,
            # as a running task does on a warm stop.
            if self.stopping and not delivery.started:
                self.consumer.requeue([d.id for d in self._backlog])
                self._backlog = []
                return
            try:
                self.handle(delivery)
            except BrokerError:
                # Handled again after the outage unless it started: a start
                # asked again runs it (its first reply may be lost), but a
                # task that started must not run twice.
                if self._started == delivery.id:
                    self._backlog.pop(0)
                raise
            except Exception as exc:
                # A bug or a surprise in handling must not loop: requeued, the
                # same message would fail again on every executor.
                logger.exception("could not handle message %s", delivery.id)
                self._dead_letter(delivery, f"the worker failed while handling it: {exc!r}")
            self._backlog.pop(0)

    def handle(self, delivery: Delivery) -> None:
        """Run one delivery to its end (or dead-letter it)."""
        assert self.results is not None
        # A delivery the fetch started is never started (nor run) again.
        self._started = delivery.id if delivery.started else None
        try:
            message = Message.decode(delivery.body)
        except MessageError as exc:
            signals.task_rejected.send(sender=self.consumer, message=delivery, exc=exc)
            self._dead_letter(delivery, str(exc))
            return
        if message.id != delivery.id:
            self._dead_letter(delivery, f"the envelope id {message.id!r} is not the frame's")
            return
        message = workflow.unpack_errback(message)
        try:
            task = registry.get(message.task)
        except NotRegistered as exc:
            signals.task_unknown.send(sender=self.consumer, message=delivery, exc=exc,
                                      name=message.task, id=message.id)
            self._dead_letter(delivery, str(exc))
            return
        expired = message.expires is not None and time.time() > message.expires
        # An offer is taken by its start, in the same statement; before
        # anything else is said or done about it, it is taken first.
        offer = delivery.offered
        if offer and (signals.task_received.receivers or expired
                      or task.rate_per_second is not None):
            if not self.consumer.hold(delivery):
                return  # another executor took it
            offer = False
        if signals.task_received.receivers:  # no Request built per message for nobody
            signals.task_received.send(sender=self.consumer,
                                       request=make_request(message, hostname=self.hostname))
        if delivery.revoked:
            self._revoked(task, message, "revoked", acked=True)  # the fetch dropped it
            return
        if expired:
            self._revoked(task, message, _expired_reason(message), expired=True)
            return
        if task.rate_per_second is not None and not delivery.started:
            wait = self.broker.take_token(task.name, task.rate_per_second)
            if wait > 0:
                self.consumer.defer(message.id, self.broker.clock() + wait)
                return
        ack, redeliver, store = _start_flags(task, message)
        if delivery.started:
            started = self._woke_started(delivery, message, (ack, redeliver, store))
        else:
            started = self._start(delivery, message, ack, redeliver, store)
        self._started = message.id if started is Started.RUN else None
        if started is Started.REVOKED:
            self._revoked(task, message, "revoked", acked=True)
            return
        if started is Started.LOST and offer:
            return  # another executor took the offer first: it runs there
        if started is Started.LOST:
            logger.warning("task %s[%s] was given back while waiting here (this executor's "
                           "lease ran out); it runs elsewhere", message.task, message.id)
            return
        self._run_started(task, delivery, message, store)

    def _start(self, delivery: Delivery, message: Message, ack: bool, redeliver: bool,
               store: bool) -> Started:
        """Start ``message`` (``Consumer.start``) with the late acks that wait
        for a round trip; the last one held also fetches the next ones."""
        acks, self._acks = self._acks, []
        try:
            # At most once unless acks_late: acked here, before it runs.
            if (len(self._backlog) == 1 and self.prefetch > 1 and not self.inline
                    and self.consumer.fetches_with_start):
                # The last one held: fetch the next in the same round trip,
                # never holding more than ``prefetch`` (this one included).
                started, more = self.consumer.start_and_fetch(
                    message.id, self.prefetch - 1, ack=ack, redeliver=redeliver, track=store,
                    acks=acks, token=delivery.token)
                self._backlog.extend(more)
            else:
                started = self.consumer.start(message.id, ack=ack, redeliver=redeliver,
                                              track=store, acks=acks, token=delivery.token)
        except BrokerError:
            self._acks = acks + self._acks  # not sent: keep them for the next round trip
            raise
        return started

    def _woke_started(self, delivery: Delivery, message: Message,
                      flags: tuple[bool, bool, bool]) -> Started:
        """Square a start the fetch made with the flags the task has now,
        should they have changed since the plan (a settings override): the
        start is asked again with them and its token. A message still in
        flight (started without its ack) is started anew with the flags of
        now; one acked already stays so (an acks_late task runs at most
        once then). Returns that start's answer (``Started.RUN`` when the
        flags are the plan's)."""
        woken = self._woken.flags.get(message.task) if self._woken is not None else None
        if woken is None or woken == flags:
            return Started.RUN
        logger.warning("task %s[%s] was started by the fetch with flags %s, not %s",
                       message.task, message.id, woken, flags)
        ack, redeliver, track = flags
        return self.consumer.start(message.id, ack=ack, redeliver=redeliver, track=track,
                                   token=delivery.token)

    def _run_started(self, task: Task, delivery: Delivery, message: Message,
                     store: bool) -> None:
        """Run a started task and record how it ended."""
        assert self.results is not None
        if store and task.track_started:
            self.results.add(TaskResult.from_message(
                message, states.STARTED, worker=self.name, started=time.time()))
        try:
            outcome = self._execute(task, message, store)
            if outcome.status in (states.IGNORED, states.REJECTED):
                self._ignored(task, delivery, message, outcome, store)
            else:
                self._record(task, message, outcome, store)
        except (BrokerError, ColdShutdown):
            raise
        except Exception as exc:
            # It ran (or started): never dead-letter it now, say how it ended,
            # with its workflow told (a chord counts it, link_error runs), as
            # for any FAILURE; follow-ups are enqueued once even if asked twice.
            logger.exception("task %s[%s] could not be settled", message.task, message.id)
            self.reporter.finished(message.task, message.queue, states.FAILURE, None)
            now = time.time()
            failed = Outcome(states.FAILURE, now, now, exception=exc,
                             traceback=traceback.format_exc())
            try:
                then = workflow.after(task, message, failed)
            except Exception:
                logger.exception("the follow-ups of task %s[%s] could not be made",
                                 message.task, message.id)
                then = None
            if store:
                self.results.add(TaskResult.from_message(
                    message, states.FAILURE, worker=self.name, finished=now,
                    exception=exc, traceback=failed.traceback),
                                 late_ack=message.id if task.acks_late else None, then=then)
            else:
                if then is not None:  # no row to wait for
                    workflow.run_all([then])
                if task.acks_late:
                    self._acks.append(message.id)
        self._check_recycle()

    def _execute(self, task: Task, message: Message, store: bool = True) -> Outcome:
        opts = message.options
        soft = opts.get("soft_time_limit") or task.soft_time_limit or self.limits.soft_time_limit
        hard = opts.get("time_limit") or task.time_limit or self.limits.time_limit
        if (hard or soft) and not self._soft_limits and task.name not in self._limit_warned:
            self._limit_warned.add(task.name)
            logger.warning("task %s has a time limit, which the threads pool cannot enforce; "
                           "use --pool prefork", task.name)
        # One write each way: the supervisor kills by what the slot says.
        self.slot.start(message.id, time.time() + hard if hard else 0.0)
        self._current = message.id
        try:
            self._close_old_connections(before=True)
            outcome = execute(task, message, hostname=self.hostname,
                              soft_time_limit=soft if self._soft_limits else None,
                              state_writer=(partial(self._store_state, message, time.time())
                                            if store else None))
        finally:
            self.slot.end()
            self.tasks_run += 1
            self._close_old_connections()
        # Cleared only when the task ended: interrupted (ColdShutdown), it
        # stays current, so run() leaves its message to the supervisor.
        self._current = None
        return outcome

    def _close_old_connections(self, *, before: bool = False) -> None:
        # As Django does around a request. Inline, they are the caller's.
        if self.inline:
            return
        now = time.monotonic()
        # Before a task that follows another at once, the check made after
        # that one stands when the broker's calls in between use no Django
        # connection (not the database broker's): a connection may outlive
        # its CONN_MAX_AGE by up to RECHECK seconds, nothing else changes.
        if (before and self.broker.atomic_with is None
                and now - self._connections_checked < RECHECK):
            return
        close_old_connections()
        self._connections_checked = now

    def _check_recycle(self) -> None:
        limits = self.limits
        done = self.tasks_run
        if limits.max_tasks_per_child and done >= limits.max_tasks_per_child:
            logger.info("executor %s ran %d tasks: replacing it", self.name, done)
            self.recycle = self.stopping = True
        elif limits.max_memory_per_child:
            rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            if rss_kib > limits.max_memory_per_child:
                logger.info("executor %s uses %d KiB (max %d): replacing it",
                            self.name, rss_kib, limits.max_memory_per_child)
                self.recycle = self.stopping = True

    def _revoked(self, task: Task, message: Message, reason: str, *, expired: bool = False,
                 acked: bool = False) -> None:
        """Record a task that will not run (revoked, or expired before it started).

        ``acked``: the broker already forgot the message; else it is acked
        once its row is stored.
        """
        assert self.results is not None
        logger.info("task %s[%s] not run: %s", message.task, message.id, reason)
        self.reporter.finished(message.task, message.queue, states.REVOKED, None)
        late_ack = None if acked else message.id
        exc = TaskRevokedError(reason)
        then = workflow.after_revoked(message, exc)  # None outside a chord
        if not task.result_ignored(message):
            self.results.add(TaskResult.from_message(
                message, states.REVOKED, worker=self.name, finished=time.time(),
                exception=exc), late_ack=late_ack, then=then)
        elif late_ack is not None:
            self._acks.append(late_ack)
        signals.task_revoked.send(
            sender=task, request=make_request(message, hostname=self.hostname),
            terminated=False, signum=None, expired=expired,
        )

    def _record(self, task: Task, message: Message, outcome: Outcome, store: bool) -> None:
        assert self.results is not None
        # The next attempt goes through the enqueue door's checks first: one
        # that cannot travel makes this run a FAILURE instead of a RETRY.
        attempt = enqueue.retry(task, message, outcome) if outcome.retry is not None else None
        runtime = outcome.finished - outcome.started
        self.reporter.finished(message.task, message.queue, outcome.status, runtime)
        if outcome.status == states.SUCCESS:
            # Celery's wording, so a Celery user's log greps keep working; no
            # repr of the value for a line nobody writes.
            if logger.isEnabledFor(logging.INFO):
                logger.info("task %s[%s] succeeded in %.3fs: %s", message.task, message.id,
                            runtime, _short_repr(outcome.value))
        elif outcome.status == states.FAILURE and is_expected(task, outcome.exception):
            # One of the task's ``throws``: an expected error, without its traceback.
            logger.info("task %s[%s] failed in %.3fs: %r", message.task, message.id,
                        runtime, outcome.exception)
        elif outcome.status == states.FAILURE:
            logger.error("task %s[%s] failed in %.3fs: %s", message.task, message.id,
                         runtime, outcome.traceback.rstrip())
        late_ack = message.id if task.acks_late else None
        then = workflow.after(task, message, outcome)  # None outside a workflow
        if store:
            self.results.add(TaskResult.from_message(
                message, outcome.status, worker=self.name, started=outcome.started,
                finished=outcome.finished, result=outcome.result,
                exception=outcome.exception, traceback=outcome.traceback,
            ), late_ack=late_ack, then=then)
        else:
            if then is not None:  # no row to wait for
                workflow.run_all([then])
            if late_ack is not None:
                self._acks.append(late_ack)
        if attempt is not None:
            self._publish_retry(message, attempt)

    def _publish_retry(self, message: Message, attempt: enqueue.Outgoing) -> None:
        """Publish the next run (same id) once this run's row and ack are settled.

        Settling first matters: the next run could otherwise be fetched by
        this consumer and acked by this run's late ack. A broker outage is
        retried with backoff, so the retry is not lost while the worker lives.
        """
        assert self.results is not None
        self.results.sync()
        backoff = 0.5
        retry = attempt.message
        while True:
            try:
                self._flush_acks()
                enqueue.publish([attempt])
                break
            except BrokerError as exc:
                if self.stopping:
                    logger.error("retry %d of %s[%s] is lost: the worker is stopping and "
                                 "the broker is down (%s)", retry.retries, message.task,
                                 message.id, exc)
                    # Its row must not wait in RETRY for a run that will not come.
                    TaskResult.objects.filter(task_id=message.id).move_to(
                        states.FAILURE, exc=BrokerError(f"its retry could not be published: {exc}"))
                    return
                logger.error("could not publish retry %d of %s[%s], again in %.1fs: %s",
                             retry.retries, message.task, message.id, backoff, exc)
                self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        if retry.eta is None:
            logger.info("task %s[%s] retry %d scheduled to run now", message.task, message.id,
                        retry.retries)
        else:
            when = datetime.fromtimestamp(retry.eta, UTC)
            logger.info("task %s[%s] retry %d scheduled for %s (in %.1fs)", message.task,
                        message.id, retry.retries, when.isoformat(timespec="milliseconds"),
                        max(retry.eta - time.time(), 0.0))

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        logger.error("dead-lettering message %s from queue %r: %s",
                     delivery.id, delivery.queue, reason)
        self.consumer.dead_letter(delivery, reason)


def _start_flags(task: Task, message: Message | None) -> tuple[bool, bool, bool]:
    """``(ack, redeliver, track)`` for ``Consumer.start``: ack now unless
    acks_late, redeliver unless ``reject_on_worker_lost=False``, track if a
    row is stored (with ``message``, its per-call ``ignore_result`` counts)."""
    ignored = task.ignore_result if message is None else task.result_ignored(message)
    return not task.acks_late, task.reject_on_worker_lost is not False, not ignored


def _short_repr(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters: a log line, not a dump."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
