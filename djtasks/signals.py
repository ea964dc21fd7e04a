"""Django signals around publishing, running and workers, with Celery's names.

Arguments follow Celery's signals where Celery has them; every signal is
sent with ``sender`` (the task name for task signals, the worker name for
worker signals) and keyword arguments only.

- ``before_task_publish``: ``body`` (the envelope dict), ``exchange`` (""),
  ``routing_key`` (queue), ``headers`` ({}), ``properties`` ({}),
  ``declare`` ([]), ``retry_policy`` (None). Sent in the caller, before the
  PENDING row is written; a receiver that raises stops the publish.
- ``after_task_publish``: ``body``, ``exchange``, ``routing_key``; sent once
  the broker has the message (after commit when ``on_commit``).
- ``task_prerun``: ``task_id``, ``task``, ``args``, ``kwargs``.
- ``task_postrun``: ``task_id``, ``task``, ``args``, ``kwargs``, ``retval``,
  ``state``.
- ``task_success``: ``result``.
- ``task_failure``: ``task_id``, ``exception``, ``args``, ``kwargs``,
  ``traceback`` (text), ``einfo`` (the exception).
- ``task_retry``: ``request``, ``reason``, ``einfo``.
- ``task_revoked``: ``request``, ``terminated``, ``signum``, ``expired``.
- ``worker_ready``, ``worker_shutdown``: ``hostname``; sent in the supervisor.

Task signals are sent in the executor running the task (a child process
under the prefork pool), like Celery's.
"""

from __future__ import annotations

from django.dispatch import Signal

before_task_publish = Signal()
after_task_publish = Signal()
task_prerun = Signal()
task_postrun = Signal()
task_success = Signal()
task_failure = Signal()
task_retry = Signal()
task_revoked = Signal()
worker_ready = Signal()
worker_shutdown = Signal()
