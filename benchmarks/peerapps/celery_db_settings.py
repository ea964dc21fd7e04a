"""Django settings for Celery + django-celery-results: PostgreSQL, own schema.

The tables live in the schema ``djtasks_peers`` of the benchmark database, so
they never meet djtasks' own tables (benchmarks/peers.py creates the schema).
"""

import os

from benchmarks.settings import POSTGRES

SECRET_KEY = "djtasks-peers-benchmark"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_celery_results"]
PEERS_SCHEMA = os.environ.get("PEERS_PG_SCHEMA", "djtasks_peers")
# djtasks' benchmark database, in a schema of its own.
DATABASES = {
    "default": {
        **POSTGRES,
        "OPTIONS": {"options": f"-c search_path={PEERS_SCHEMA}",
                    "application_name": "djtasks-peers"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
