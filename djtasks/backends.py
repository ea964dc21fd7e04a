"""The ``django.tasks`` backend: Django's ``@task`` functions over the djtasks broker.

``TASKS = {"default": {"BACKEND": "djtasks.backends.DjtasksBackend"}}`` sends
each enqueued Django task through the enqueue door as a message of its
``DjangoTaskWrapper`` (a djtasks ``Task`` registered under the Django task's
``module_path``); ``runworker`` runs it and writes its ``TaskResult`` row,
which ``get_result`` reads back as Django's ``TaskResult``. Setup, the
status table and what differs from Django's backends: docs/django-tasks.md.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from inspect import iscoroutinefunction
from typing import Any

from django.tasks import Task as DjangoTask
from django.tasks import TaskContext, TaskResultStatus, task_backends
from django.tasks import TaskResult as DjangoTaskResult
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from . import codec, states
from . import enqueue as door
from .conf import get_settings
from .exceptions import NotRegistered
from .execute import _send as send_robustly
from .message import utc_datetime
from .models import TaskResult, exception_type
from .options import QUEUE_NAME_RE
from .registry import registry
from .request import Request
from .result import EagerResult
from .task import Task

# djtasks' states as Django's. Django has no state for "waiting for another
# attempt" (READY is "ready to be executed again") nor for "will not run".
STATUS = {
    states.PENDING: TaskResultStatus.READY,
    states.STARTED: TaskResultStatus.RUNNING,
    states.RETRY: TaskResultStatus.READY,
    states.SUCCESS: TaskResultStatus.SUCCESSFUL,
    states.FAILURE: TaskResultStatus.FAILED,
    states.REVOKED: TaskResultStatus.FAILED,
}
_FINISHED = frozenset({TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED})
_OPTIONS = frozenset({"ENQUEUE_ON_COMMIT"})
_PRIORITIES = TASK_MAX_PRIORITY - TASK_MIN_PRIORITY + 1  # 201 Django priorities, 10 djtasks ones


def djtasks_priority(priority: int) -> int:
    """Django's priority (-100 lowest to 100 highest) as djtasks' (0 to 9):
    ten bands of about 20 in the same order; Django's default 0 is 4."""
    return (priority - TASK_MIN_PRIORITY) * 10 // _PRIORITIES


def django_priority(priority: int, declared: int) -> int:
    """The Django priority djtasks' ``priority`` stands for: the task's
    ``declared`` one if it is in that band, else the band's lowest."""
    if djtasks_priority(declared) == priority:
        return declared
    return -(-priority * _PRIORITIES // 10) + TASK_MIN_PRIORITY


def run_coroutine(func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any,
                  **kwargs: Any) -> Any:
    """Run the async task function ``func`` to its end and return its value,
    on the executor's event loop (``execute.run_coroutine``: one loop per
    executor thread, kept across tasks)."""
    from .execute import run_coroutine as run_on_loop

    return run_on_loop(func(*args, **kwargs))


class DjangoTaskWrapper(Task):
    """The djtasks task that carries one ``django.tasks`` task.

    Registered under the Django task's ``module_path`` (its function's
    dotted path), by ``DjtasksBackend.enqueue`` or, in a worker, by the
    registry's look-up of a name it does not know. Its run passes
    ``TaskContext`` to a task with ``takes_context``, awaits an async
    function (``run_coroutine``), checks that the return value is JSON
    (Django's rule) and sends Django's ``task_started`` and ``task_finished``.
    Its results are always stored (``ignore_result=False``): they are what
    ``get_result`` reads.
    """

    # Django passes a TaskContext first to a ``takes_context`` task: the
    # function's signature is not the caller's, so no call-time binding.
    typing = False

    def __init__(self, django_task: DjangoTask) -> None:
        super().__init__(django_task.func, name=django_task.module_path, ignore_result=False)
        self.django_task = django_task

    def run(self, *args: Any, **kwargs: Any) -> Any:
        running = self._running_result(self.request, list(args), kwargs)
        sender = type(running.task.get_backend())
        # Sent as djtasks' task signals are: a receiver that raises is logged,
        # never the task's fault.
        send_robustly(task_started, sender=sender, task_result=running)
        try:
            if self.django_task.takes_context:
                args = (TaskContext(task_result=running), *args)
            if iscoroutinefunction(self.fn):
                value = run_coroutine(self.fn, *args, **kwargs)
            else:
                value = self.fn(*args, **kwargs)
            value = normalize_json(value)
        except (Exception, SystemExit) as exc:  # what execute() records as FAILURE
            failed = replace(running, status=TaskResultStatus.FAILED,
                             finished_at=timezone.now(),
                             errors=[TaskError(exception_class_path=exception_type(exc),
                                               traceback=traceback.format_exc())])
            # Sent in the handler, as Django's backends do: Django's log
            # receiver reads sys.exc_info().
            send_robustly(task_finished, sender=sender, task_result=failed)
            raise
        done = replace(running, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now())
        send_robustly(task_finished, sender=sender, task_result=_with_return_value(done, value))
        return value

    def _running_result(self, request: Request, args: list[Any],
                        kwargs: dict[str, Any]) -> DjangoTaskResult:
        """The Django view of the attempt starting now: the task's context."""
        now = timezone.now()
        message = request.message
        declared = self.django_task
        return DjangoTaskResult(
            task=django_task_for(declared, queue=request.queue or declared.queue_name,
                                 priority=request.priority, eta=request.eta,
                                 alias=declared.backend),
            id=request.id or "",
            status=TaskResultStatus.RUNNING,
            enqueued_at=utc_datetime(message.created) if message else None,
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=args,
            kwargs=kwargs,
            backend=declared.backend,
            errors=[],
            worker_ids=[request.hostname] * (request.retries + 1) if request.hostname else [],
        )


def django_task_for(declared: DjangoTask, *, queue: str, priority: int, eta: datetime | None,
                    alias: str) -> DjangoTask:
    """The Django task a message or row of ``declared`` was enqueued as:
    its queue, ``eta`` as ``run_after`` and djtasks ``priority`` in Django's
    terms (``django_priority``), on backend ``alias``."""
    return declared.using(queue_name=queue, priority=django_priority(priority, declared.priority),
                          run_after=eta, backend=alias)


def wrapper_for(task: DjangoTask) -> DjangoTaskWrapper:
    """The registered wrapper of ``task``'s function, registered on first use.
    It carries the task as its module defines it (``task`` may be a copy
    from ``using()``).

    Raises ``AlreadyRegistered`` if a ``@shared_task`` has that name.
    """
    name = task.module_path
    if name in registry:
        existing = registry.get(name)
        if isinstance(existing, DjangoTaskWrapper) and existing.fn is task.func:
            return existing
    try:
        declared = import_string(name)
    except ImportError:
        declared = None
    if not isinstance(declared, DjangoTask) or declared.func is not task.func:
        declared = task  # the system check djtasks.E003 says a worker will not find it
    wrapper = DjangoTaskWrapper(declared)
    registry.register(wrapper)
    return wrapper


def wrapper_at(name: str) -> DjangoTaskWrapper | None:
    """The registered wrapper of the Django task whose module path is
    ``name``, imported (``import_string``); None if ``name`` imports nothing
    or something else, and None without importing anything unless ``TASKS``
    has a ``DjtasksBackend`` (docs/security.md). An error raised by the
    module's import propagates."""
    if not _configured():
        return None
    try:
        found = import_string(name)
    except ImportError:
        return None
    if isinstance(found, DjangoTask) and found.module_path == name:
        return wrapper_for(found)
    return None


def _configured() -> bool:
    """Whether a backend in ``TASKS`` is a ``DjtasksBackend``."""
    for params in task_backends.settings.values():
        try:
            backend = import_string(params.get("BACKEND", ""))
        except ImportError:
            continue
        if isinstance(backend, type) and issubclass(backend, DjtasksBackend):
            return True
    return False


class DjtasksBackend(BaseTaskBackend):
    """A ``django.tasks`` backend on the djtasks broker, worker and result rows.

    ``OPTIONS``: ``ENQUEUE_ON_COMMIT`` (default ``DJTASKS['ENQUEUE_ON_COMMIT']``,
    True): inside ``transaction.atomic()`` the message is published when the
    transaction commits, and a rollback leaves no trace. ``QUEUES`` are the
    queue names tasks may use (``runworker -Q`` must consume them). Raises
    ``InvalidTaskBackend`` (an ``ImproperlyConfigured``) for an unknown
    option or a queue name djtasks cannot carry.
    """

    # run_after is the message's eta: it waits in the broker, not in a worker.
    supports_defer = True
    # Run to their end on the worker, on the executor's event loop (run_coroutine).
    supports_async_task = True
    # From the TaskResult row, in any process.
    supports_get_result = True
    # Django's -100..100 in ten bands onto djtasks' 0..9 (djtasks_priority).
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        where = f"TASKS[{alias!r}]"
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            raise InvalidTaskBackend(f"{where}['OPTIONS'] has unknown key(s) "
                                     f"{', '.join(unknown)}; known: {', '.join(sorted(_OPTIONS))}")
        self.on_commit: bool | None = self.options.get("ENQUEUE_ON_COMMIT")
        if self.on_commit is not None and not isinstance(self.on_commit, bool):
            raise InvalidTaskBackend(f"{where}['OPTIONS']['ENQUEUE_ON_COMMIT'] must be True or "
                                     f"False, not {self.on_commit!r}")
        bad = sorted(repr(q) for q in self.queues if not _is_queue_name(q))
        if bad:
            raise InvalidTaskBackend(f"{where}['QUEUES'] has names djtasks cannot use: "
                                     f"{', '.join(bad)} (letters, digits and _.:-, 1 to 200)")

    def validate_task(self, task: DjangoTask) -> None:
        """Django's checks (``BaseTaskBackend.validate_task``), and a queue
        name djtasks can carry; raises ``InvalidTask``."""
        super().validate_task(task)
        if not _is_queue_name(task.queue_name):
            raise InvalidTask(f"Queue {task.queue_name!r} is not a djtasks queue name: "
                              "letters, digits and _.:- (1 to 200 characters).")

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> DjangoTaskResult:
        """Send ``task`` through djtasks' enqueue door; return its READY result.

        The PENDING ``TaskResult`` row is written now (in the caller's
        transaction), the message published at commit or at once (see the
        class). ``task_enqueued`` is sent once the door took it. Arguments must
        be JSON, as Django asks (``TypeError`` otherwise, before anything is
        written). With ``DJTASKS['ALWAYS_EAGER']`` the task runs here and the
        result holds its outcome; no row is written then.
        """
        self.validate_task(task)
        args, kwargs = normalize_json(args), normalize_json(kwargs)
        wrapper = wrapper_for(task)
        message = wrapper.build_message(args, kwargs, queue=task.queue_name,
                                        priority=djtasks_priority(task.priority),
                                        eta=task.run_after)
        result = DjangoTaskResult(
            task=task, id=message.id, status=TaskResultStatus.READY,
            enqueued_at=utc_datetime(message.created), started_at=None, finished_at=None,
            last_attempted_at=None, args=args, kwargs=kwargs, backend=self.alias, errors=[],
            worker_ids=[],
        )
        if not get_settings().ALWAYS_EAGER:
            door.enqueue(wrapper, message, on_commit=self.on_commit, using=None)
            task_enqueued.send(type(self), task_result=result)
            return result
        # The door runs the task before it returns, and Django's signals come
        # as enqueued, started, finished: refuse what the door would refuse,
        # then say it is enqueued.
        door.prepare(wrapper, message)
        task_enqueued.send(type(self), task_result=result)
        eager = door.enqueue(wrapper, message, on_commit=self.on_commit, using=None)
        assert isinstance(eager, EagerResult)
        return _eager_result(result, eager)

    def get_result(self, result_id: str) -> DjangoTaskResult:
        """The result of Django task ``result_id`` from its ``TaskResult`` row.

        Raises ``TaskResultDoesNotExist`` if there is no row, or the row is
        not a Django task's (an ordinary djtasks task, or a module path that
        no longer imports a Django task).
        """
        row = TaskResult.objects.filter(task_id=result_id).first()
        wrapper = _wrapper_named(row.task_name) if row is not None else None
        if row is None or wrapper is None:
            raise TaskResultDoesNotExist(result_id)
        return result_from_row(row, wrapper.django_task, self.alias)


def result_from_row(row: TaskResult, declared: DjangoTask, alias: str) -> DjangoTaskResult:
    """Django's ``TaskResult`` for ``row`` of ``declared`` (the task as
    defined), read through backend ``alias``; docs/django-tasks.md says
    which field comes from where."""
    status = STATUS[row.status]
    errors = []
    if row.exception_type and row.status != states.SUCCESS:
        errors.append(TaskError(
            exception_class_path=_class_path(row.exception_type),
            traceback=row.traceback or f"{row.exception_type}: {row.exception_message}\n",
        ))
    # The executor's name is <hostname>/<slot>.<generation> (worker/supervisor.py);
    # Django's worker ids are the workers', as in the running task's context.
    worker = row.worker.rpartition("/")[0] or row.worker
    result = DjangoTaskResult(
        task=django_task_for(declared, queue=row.queue, priority=row.priority, eta=row.eta,
                             alias=alias),
        id=row.task_id,
        status=status,
        enqueued_at=row.created,
        started_at=row.started,
        finished_at=row.finished if status in _FINISHED else None,
        last_attempted_at=row.started,
        args=codec.decode(row.args),
        kwargs=codec.decode(row.kwargs),
        backend=alias,
        errors=errors,
        # djtasks keeps the worker of the latest attempt only.
        worker_ids=[worker] * (row.retries + 1) if worker and row.started else [],
    )
    if row.status == states.SUCCESS:
        _with_return_value(result, codec.decode(row.result))
    return result


def _eager_result(result: DjangoTaskResult, eager: EagerResult) -> DjangoTaskResult:
    """``result`` with the outcome of its eager run (unchanged if it waits
    for the transaction to commit)."""
    if not eager.ready():
        return result
    errors = []
    if eager.failed():
        errors.append(TaskError(exception_class_path=exception_type(eager.result),
                                traceback=eager.traceback or ""))
    done = replace(result, status=STATUS[eager.status], started_at=eager.date_started,
                   last_attempted_at=eager.date_started, finished_at=eager.date_done,
                   errors=errors, worker_ids=["eager"])
    if eager.successful():
        _with_return_value(done, eager.result)
    return done


def _with_return_value(result: DjangoTaskResult, value: Any) -> DjangoTaskResult:
    # Not an __init__ field of Django's frozen TaskResult; Django's own
    # backends set it this way.
    object.__setattr__(result, "_return_value", value)
    return result


def _wrapper_named(name: str) -> DjangoTaskWrapper | None:
    try:
        task = registry.get(name)
    except NotRegistered:
        return None
    return task if isinstance(task, DjangoTaskWrapper) else None


def _class_path(stored: str) -> str:
    """A row's exception type as an importable path (older rows name builtins alone)."""
    return stored if "." in stored else f"builtins.{stored}"


def _is_queue_name(name: Any) -> bool:
    return isinstance(name, str) and bool(QUEUE_NAME_RE.match(name))
