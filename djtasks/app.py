"""A small stand-in for Celery's project-level ``app``, so ``@app.task`` moves unchanged.

21 of 37 Celery projects we counted write ``@app.task`` and keep a
``proj/celery.py`` that makes the app. Rewriting every decorator is the
kind of change that stops a move, so djtasks keeps the handful of ``app``
methods those projects call, each a thin alias of djtasks' own API
(docs/migrating-from-celery.md#the-app-object). It holds no state and
configures nothing: settings are Django's, tasks are found by
autodiscovery, and there is one registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .registry import registry
from .result import AsyncResult, revoke
from .task import Task, shared_task


class Control:
    """``app.control``: only ``revoke``, as ``djtasks.revoke`` (no remote control)."""

    def revoke(self, task_id: str | list[str], *, terminate: bool = False,
               signal: str = "SIGKILL", **kwargs: Any) -> None:
        """Revoke tasks (Celery's ``app.control.revoke``); ``signal`` is
        accepted and not used (a terminated task's executor gets SIGKILL)."""
        revoke(task_id, terminate=terminate)


class App:
    """Celery's ``Celery(...)`` app, as far as task code uses it.

    ``App("proj")`` (or ``Celery("proj")``) takes Celery's arguments and
    ignores them. ``config_from_object("django.conf:settings",
    namespace="CELERY")`` and ``autodiscover_tasks()`` do nothing, since
    djtasks reads the ``CELERY_*`` settings and autodiscovers ``tasks.py``
    itself; any other configuration source is an ``ImproperlyConfigured``.
    """

    Task = Task

    def __init__(self, main: str | None = None, *args: Any, **kwargs: Any) -> None:
        self.main = main
        self.control = Control()

    def __repr__(self) -> str:
        return f"<djtasks App {self.main or '__main__'}>"

    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` and ``@app.task(**options)``: ``shared_task``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return shared_task(args[0])
        if args:
            raise TypeError("@app.task takes keyword options only (name=..., bind=...)")
        return shared_task(**options)

    def send_task(self, name: str, args: Sequence[Any] | None = None,
                  kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Publish the task registered as ``name`` (``djtasks.send_task``)."""
        return registry.get(name).apply_async(args, kwargs, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # Celery's name
        return AsyncResult(task_id)

    def config_from_object(self, obj: object, namespace: str | None = None,
                           **kwargs: Any) -> None:
        """Accept Celery's Django configuration; refuse any other source."""
        if obj == "django.conf:settings" and namespace in ("CELERY", None):
            return
        raise ImproperlyConfigured(
            f"app.config_from_object({obj!r}, namespace={namespace!r}): djtasks reads only "
            "Django settings: DJTASKS, and the CELERY_* settings "
            "(docs/migrating-from-celery.md#settings). Use "
            "config_from_object('django.conf:settings', namespace='CELERY') or remove the call."
        )

    def autodiscover_tasks(self, packages: Callable[[], Any] | Sequence[str] | None = None,
                           **kwargs: Any) -> None:
        """Nothing to do: djtasks imports every installed app's ``tasks.py`` in ``ready()``."""


Celery = App  # so ``from celery import Celery`` becomes ``from djtasks import Celery``

current_app = App("default")
