"""djtasks: background tasks for Django, in Celery's vocabulary.

The public API is what this module exports; see DESIGN.md section 1.
"""

from __future__ import annotations

from typing import Any

from . import states
from .app import Celery, current_app
from .canvas import Signature, chain, chord, chunks, group, signature
from .exceptions import (
    DjtasksError,
    Ignore,
    MaxRetriesExceededError,
    Reject,
    Retry,
    TaskArgumentError,
    TaskError,
)
from .registry import registry
from .request import current_task
from .result import AsyncResult, EagerResult, GroupResult, revoke
from .task import Task, shared_task

__all__ = [
    "AsyncResult",
    "Celery",
    "DjtasksError",
    "EagerResult",
    "GroupResult",
    "Ignore",
    "MaxRetriesExceededError",
    "Reject",
    "Retry",
    "Signature",
    "Task",
    "TaskArgumentError",
    "TaskError",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "registry",
    "revoke",
    "send_task",
    "shared_task",
    "signature",
    "states",
]

__version__ = "0.1.0"


def send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
    """Publish task ``name`` by its registered name (Celery's ``send_task``).

    Takes ``apply_async``'s arguments. The task must be registered in this
    process, so its options and the argument rule apply; raises
    ``NotRegistered`` otherwise.
    """
    return registry.get(name).apply_async(args, kwargs, **options)

