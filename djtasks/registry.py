"""The task registry: every ``@shared_task`` by name, and autodiscovery."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from django.utils.module_loading import autodiscover_modules

from .exceptions import AlreadyRegistered, NotRegistered

if TYPE_CHECKING:
    from .task import Task


class Registry:
    """Tasks by name. One name, one function: a second one is an error."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._resolvers: list[Callable[[str], Task | None]] = []

    def add_resolver(self, resolver: Callable[[str], Task | None]) -> None:
        """Ask ``resolver(name)`` for a task no ``@shared_task`` registered:
        ``djtasks.backends`` resolves the module paths of ``django.tasks``
        tasks, so a worker runs Django tasks its process has not seen
        enqueued. Added at most once."""
        if resolver not in self._resolvers:
            self._resolvers.append(resolver)

    def register(self, task: Task) -> None:
        """Add ``task``; raise ``AlreadyRegistered`` if its name is another function's.

        Registering the same function again (its module imported twice, or
        reloaded) replaces the entry.
        """
        existing = self._tasks.get(task.name)
        if existing is not None and existing.qualname != task.qualname:
            raise AlreadyRegistered(
                f"task name {task.name!r} is used by both {existing.qualname} and "
                f"{task.qualname}; give one of them another name with "
                "@shared_task(name='...')"
            )
        self._tasks[task.name] = task

    def unregister(self, name: str) -> None:
        self._tasks.pop(name, None)

    def get(self, name: str) -> Task:
        """Return the task registered as ``name``; raise ``NotRegistered`` if none is.

        A name nothing registered is offered to the resolvers
        (``add_resolver``), in order.
        """
        task = self._tasks.get(name)
        for resolver in self._resolvers:
            if task is not None:
                break
            task = resolver(name)
        if task is None:
            raise NotRegistered(
                f"no task is registered as {name!r}; is its app in INSTALLED_APPS and the "
                "function decorated with @shared_task in the app's tasks.py?"
            )
        return task

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task]:
        return iter(sorted(self._tasks.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tasks)


registry = Registry()


def autodiscover() -> None:
    """Import ``tasks.py`` of every installed app.

    An app without a tasks module is skipped; an error raised while
    importing an existing tasks module propagates (Django's
    ``autodiscover_modules`` semantics, as for admin.py).
    """
    autodiscover_modules("tasks")
