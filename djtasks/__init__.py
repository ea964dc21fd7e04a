"""djtasks: background tasks for Django, in Celery's vocabulary.

The public API is what this module exports; see DESIGN.md section 1.
"""

from __future__ import annotations

from typing import Any

from .canvas import Signature, chain, chord, chunks, group, signature
from .exceptions import (
    DjtasksError,
    MaxRetriesExceededError,
    Retry,
    TaskArgumentError,
    TaskError,
)
from .registry import registry
from .result import AsyncResult, EagerResult, GroupResult, revoke
from .task import Task, shared_task

__all__ = [
    "AsyncResult",
    "DjtasksError",
    "EagerResult",
    "GroupResult",
    "MaxRetriesExceededError",
    "Retry",
    "Signature",
    "Task",
    "TaskArgumentError",
    "TaskError",
    "chain",
    "chord",
    "chunks",
    "group",
    "registry",
    "revoke",
    "send_task",
    "shared_task",
    "signature",
]

__version__ = "0.1.0"


def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    """Publish task ``name`` by its registered name (Celery's ``send_task``).

    Takes ``apply_async``'s arguments. The task must be registered in this
    process, so its options and the argument rule apply; raises
    ``NotRegistered`` otherwise.
    """
    return registry.get(name).apply_async(args, kwargs, **options)

