"""System checks over the registered tasks and the DJTASKS settings.

Run by ``manage.py check`` and by ``runworker``, which refuses to start on
errors. Each id is documented in docs/checks.md with an example and the fix.
"""

from __future__ import annotations

import fnmatch
import inspect
import typing
from importlib import import_module
from typing import Any

from django.core import checks
from django.db.models import Manager, Model, QuerySet
from django.http import HttpRequest

from ..conf import get_settings
from ..registry import registry

OBJECT_TYPES = (Model, QuerySet, Manager, HttpRequest)


def _object_annotation(annotation: Any) -> type | None:
    """The model/QuerySet/HttpRequest class inside ``annotation``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, OBJECT_TYPES):
        return annotation
    for arg in typing.get_args(annotation):  # Optional[User], list[User], User | None
        found = _object_annotation(arg)
        if found is not None:
            return found
    return None


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: nothing to check
        return {}


@checks.register("djtasks")
def check_tasks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for task in registry:
        hints = _hints(task.fn)
        params = list(inspect.signature(task.fn).parameters)
        if task.bind and params:
            params = params[1:]
        for name in params:
            cls = _object_annotation(hints.get(name))
            if cls is not None:
                errors.append(checks.Error(
                    f"task {task.name} takes parameter {name!r} annotated as "
                    f"{cls.__name__}; task arguments cross a process boundary as JSON.",
                    hint=f"take the id instead: {name}_id: int, and load the "
                         f"{cls.__name__} inside the task",
                    obj=task.qualname, id="djtasks.E002",
                ))
        module_name = task.fn.__module__
        try:
            found = getattr(import_module(module_name), task.fn.__name__, None)
        except ImportError:
            found = None
        # A django.tasks task's wrapper (djtasks.backends) is found as the Django task.
        if found is not getattr(task, "django_task", task):
            errors.append(checks.Error(
                f"task {task.name} cannot be imported as {module_name}.{task.fn.__name__}; "
                "a worker could not find it by name.",
                hint="define tasks at module level in an app's tasks.py, decorated "
                     "with @shared_task, and do not rebind the name",
                obj=task.qualname, id="djtasks.E003",
            ))
    return errors


# Parameter names that usually hold an object, whatever the project's models.
OBJECT_PARAM_NAMES = frozenset({"user", "instance", "obj", "object", "request", "model",
                                "queryset", "qs", "form"})


def _object_like_names() -> frozenset[str]:
    from django.apps import apps

    return OBJECT_PARAM_NAMES | {m.__name__.lower() for m in apps.get_models()}


@checks.register("djtasks")
def check_parameter_names(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W001: an unannotated parameter named like an object (``user``, ``order``)."""
    names = _object_like_names()
    warnings: list[checks.CheckMessage] = []
    for task in registry:
        params = list(inspect.signature(task.fn).parameters.values())
        if task.bind and params:
            params = params[1:]
        if [p.name for p in params[:2]] == ["request", "exc"]:
            params = params[1:]  # a Celery errback: (request, exc, traceback), docs/canvas.md
        for param in params:
            if param.annotation is inspect.Parameter.empty and param.name in names:
                warnings.append(checks.Warning(
                    f"task {task.name} has a parameter {param.name!r} named like an object, "
                    "with no annotation; callers may pass the object itself.",
                    hint=f"rename it {param.name}_id and annotate it (int), or silence "
                         "djtasks.W001 in SILENCED_SYSTEM_CHECKS",
                    obj=task.qualname, id="djtasks.W001",
                ))
    return warnings


@checks.register("djtasks")
def check_options(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E004: option values out of range; W002: a soft limit not below the hard one."""
    from ..options import parse_rate

    errors: list[checks.CheckMessage] = []
    for task in registry:
        for name in ("time_limit", "soft_time_limit", "default_retry_delay",
                     "retry_backoff_max"):
            value = getattr(task, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float) or value < 0):
                errors.append(checks.Error(
                    f"task {task.name} has {name}={value!r}; expected seconds >= 0.",
                    hint=f"set {name} to a number of seconds in @shared_task(...)",
                    obj=task.qualname, id="djtasks.E004",
                ))
        try:
            parse_rate(task.rate_limit)
        except TypeError as exc:
            errors.append(checks.Error(f"task {task.name}: {exc}.",
                                       hint="use '10/s', '100/m' or '1000/h'",
                                       obj=task.qualname, id="djtasks.E004"))
        priority = task.priority
        if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 9):
            errors.append(checks.Error(
                f"task {task.name} has priority={priority!r}; expected 0 to 9.",
                hint="9 is the highest priority, 0 the lowest",
                obj=task.qualname, id="djtasks.E004",
            ))
        hard, soft = task.time_limit, task.soft_time_limit
        if isinstance(hard, int | float) and isinstance(soft, int | float) and soft >= hard:
            errors.append(checks.Warning(
                f"task {task.name} has soft_time_limit={soft} >= time_limit={hard}: the "
                "hard limit kills it before the soft one can let it clean up.",
                hint="make soft_time_limit smaller than time_limit",
                obj=task.qualname, id="djtasks.W002",
            ))
    return errors


@checks.register("djtasks")
def check_routes(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    names = [task.name for task in registry]
    for pattern in get_settings().ROUTES:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            errors.append(checks.Error(
                f"DJTASKS['ROUTES'] entry {pattern!r} matches no registered task.",
                hint="fix the task name or pattern (names are module.function, e.g. "
                     "'shop.tasks.send_welcome_email' or 'shop.tasks.*')",
                id="djtasks.E001",
            ))
    return errors
