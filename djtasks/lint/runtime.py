"""The DEBUG-time warning: an argument that looks like a serialized model.

``model_to_dict(user)`` or ``serializers.serialize(...)`` output passes the
codec (it is plain data) but is the same mistake as passing the object: the
task gets a stale copy. In ``DEBUG``, ``apply_async`` logs one warning per
task name when it sees one, at the top level or one level down.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

logger = logging.getLogger("djtasks.lint")
_warned: set[str] = set()


@cache
def _model_field_sets() -> dict[frozenset[str], str]:
    """Key sets of ``model_to_dict`` output (editable fields) -> model label."""
    from django.apps import apps

    out: dict[frozenset[str], str] = {}
    for model in apps.get_models():
        opts = model._meta
        names = frozenset(
            f.name for f in [*opts.concrete_fields, *opts.private_fields, *opts.many_to_many]
            if getattr(f, "editable", False)
        )
        if len(names) >= 2:
            out.setdefault(names, opts.label)
    return out


def looks_serialized(value: Any) -> str | None:
    """The model label ``value`` looks like a serialization of, or None."""
    if isinstance(value, str):
        head = value.lstrip()[:20]
        return "a model (serializers.serialize)" if head.startswith('[{"model":') else None
    if isinstance(value, dict):
        if {"model", "pk", "fields"} <= value.keys() and isinstance(value["fields"], dict):
            return str(value["model"])
        return _model_field_sets().get(frozenset(value))
    return None


def warn_if_serialized(task_name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Log once per task if an argument looks like ``model_to_dict``/serializer output."""
    if task_name in _warned:
        return
    candidates: list[tuple[str, Any]] = [(f"args[{i}]", a) for i, a in enumerate(args)]
    candidates += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for where, value in list(candidates):
        if isinstance(value, list | tuple):
            candidates += [(f"{where}[{i}]", v) for i, v in enumerate(value[:10])]
    for where, value in candidates:
        label = looks_serialized(value)
        if label is not None:
            _warned.add(task_name)
            logger.warning(
                "%s: %s looks like a serialized %s (model_to_dict or serializers); the "
                "task would get a stale copy. Pass the pk and load it in the task.",
                task_name, where, label,
            )
            return
