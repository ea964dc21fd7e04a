"""Task logging: every record emitted while a task runs carries its id and name."""

from __future__ import annotations

import logging
from typing import Any

from .request import current_request

TASK_FORMAT = (
    "[%(asctime)s %(levelname)s %(processName)s/%(process)d] "
    "%(task_name)s[%(task_id)s] %(name)s: %(message)s"
)

_installed = False


def get_task_logger(name: str) -> logging.Logger:
    """A logger for task modules (Celery's ``get_task_logger``).

    Its records, like every record emitted in a worker while a task runs,
    carry ``task_id`` and ``task_name`` attributes; the worker's default
    format prints them.
    """
    install_task_record_factory()
    return logging.getLogger(name)


def install_task_record_factory() -> None:
    """Give every log record ``task_id`` and ``task_name`` ("-" outside a task).

    Installed once per process, by ``runworker`` and ``get_task_logger``; it
    wraps whatever record factory was there before.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        request = current_request()
        if request is not None and request.id is not None:
            record.task_id, record.task_name = request.id, request.task
        else:
            record.task_id = record.task_name = "-"
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
