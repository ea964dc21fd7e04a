"""Django settings for django-tasks-db: its DatabaseBackend on PostgreSQL, own schema.

django-tasks (the backport of Django 6's ``django.tasks`` for Django 5.2)
with django-tasks-db's ``DatabaseBackend``, as its README configures it.
Its table lives in the schema ``djtasks_peers`` of the benchmark database,
beside django-celery-results' and never with djtasks' own (benchmarks/peers.py
creates the schema). Persistent connections (``CONN_MAX_AGE``, inherited from
benchmarks/settings.py): ``db_worker`` calls ``close_old_connections()``
around every task, which would otherwise reconnect for each one.
"""

import os

from benchmarks.settings import POSTGRES

SECRET_KEY = "djtasks-peers-benchmark"
DEBUG = False  # DEBUG would turn on db_worker's autoreloader
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_tasks", "django_tasks_db"]
PEERS_SCHEMA = os.environ.get("PEERS_PG_SCHEMA", "djtasks_peers")
DATABASES = {
    "default": {**POSTGRES, "OPTIONS": {"options": f"-c search_path={PEERS_SCHEMA}",
                    "application_name": "djtasks-peers"}},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
QUEUE = "peers-tasksdb"
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": [QUEUE],
    }
}
