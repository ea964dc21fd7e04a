from __future__ import annotations

import django
from django.apps import AppConfig


class DjtasksConfig(AppConfig):
    name = "djtasks"
    verbose_name = "Tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import celery_settings  # noqa: F401 - registers its system check (W010)
        from .beat import checks as beat_checks  # noqa: F401 - BEAT_SCHEDULE's checks
        from .conf import get_settings
        from .lint import checks  # noqa: F401 - registers the system checks
        from .registry import autodiscover
        from .utils import install_task_record_factory

        get_settings()  # a bad DJTASKS stops start-up here, naming the key
        install_task_record_factory()  # so LOGGING formats may use %(task_id)s anywhere
        autodiscover()
        if django.VERSION >= (6, 0):  # Django's own tasks, by their module paths
            from .backends import wrapper_at
            from .registry import registry

            registry.add_resolver(wrapper_at)
