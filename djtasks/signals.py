"""Django signals around publishing, running and workers, with Celery's names.

Arguments follow Celery's signals where Celery has them; every signal is
sent with ``sender`` and keyword arguments only. As in Celery, ``sender``
is the task object for task signals (so ``connect(sender=my_task)`` and
``sender.name`` work), the task name for the publish signals, the
executor's consumer for ``task_received``/``task_rejected``/``task_unknown``
and the worker name for worker signals. ``connect`` also works as a
decorator, with or without keyword arguments (Celery's ``@task_prerun.connect``).

- ``before_task_publish``: ``body`` (the envelope dict), ``exchange`` (""),
  ``routing_key`` (queue), ``headers`` (the call's ``headers``, {} if none),
  ``properties`` ({}), ``declare`` ([]), ``retry_policy`` (None). Sent in
  the caller, before the message goes to the broker; a receiver that raises
  stops the publish.
- ``after_task_publish``: ``body``, ``exchange``, ``routing_key``,
  ``headers``; sent once the broker has the message (after commit when
  ``on_commit``).
- ``task_received``: ``request``; in the executor once a message is decoded
  and its task known, before it starts.
- ``task_rejected``: ``message`` (the ``Delivery``), ``exc``; a message that
  cannot be decoded (then dead-lettered).
- ``task_unknown``: ``message``, ``exc``, ``name``, ``id``; a message naming
  no registered task (then dead-lettered).
- ``task_prerun``: ``task_id``, ``task``, ``args``, ``kwargs``.
- ``task_postrun``: ``task_id``, ``task``, ``args``, ``kwargs``, ``retval``,
  ``state``.
- ``task_success``: ``result``.
- ``task_failure``: ``task_id``, ``exception``, ``args``, ``kwargs``,
  ``traceback`` (text), ``einfo`` (``djtasks.handlers.ExceptionInfo``).
- ``task_retry``: ``request``, ``reason``, ``einfo``.
- ``task_revoked``: ``request``, ``terminated``, ``signum``, ``expired``.
- ``setup_logging``: ``loglevel``, ``logfile`` (None), ``format``,
  ``colorize``; sent by ``runworker`` before it configures logging. If any
  receiver is connected, ``runworker`` leaves logging to it (Celery's rule).
- ``worker_init``: sent in the supervisor before anything starts.
- ``worker_process_init``: sent in each prefork executor process after the
  fork, before it takes a message (not under the threads or solo pools, as
  in Celery).
- ``worker_ready``, ``worker_shutdown``: ``hostname``; in the supervisor.
- ``worker_shutting_down``: ``sig`` (the signal's name), ``how`` ("Warm"
  or "Cold"), ``exitcode``; in the supervisor when a shutdown begins.

Task signals are sent in the executor running the task (a child process
under the prefork pool), like Celery's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from django import dispatch


class Signal(dispatch.Signal):
    """Django's ``Signal`` whose ``connect`` also decorates, as Celery's does:
    ``@task_prerun.connect`` and ``@task_prerun.connect(sender=my_task)``.
    Returns the receiver."""

    def connect(self, receiver: Callable[..., Any] | None = None,
                sender: object = None, weak: bool = True,
                dispatch_uid: Hashable | None = None) -> Any:
        if receiver is None:
            def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
                super(Signal, self).connect(fn, sender, weak, dispatch_uid)
                return fn

            return decorate
        super().connect(receiver, sender, weak, dispatch_uid)
        return receiver


before_task_publish = Signal()
after_task_publish = Signal()
task_received = Signal()
task_rejected = Signal()
task_unknown = Signal()
task_prerun = Signal()
task_postrun = Signal()
task_success = Signal()
task_failure = Signal()
task_retry = Signal()
task_revoked = Signal()
setup_logging = Signal()
worker_init = Signal()
worker_process_init = Signal()
worker_ready = Signal()
worker_shutting_down = Signal()
worker_shutdown = Signal()
