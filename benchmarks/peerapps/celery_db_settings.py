"""Django settings for Celery + django-celery-results: PostgreSQL, own schema.

The tables live in the schema ``djtasks_peers`` of the benchmark database, so
they never meet djtasks' own tables (benchmarks/peers.py creates the schema).
"""

import os

SECRET_KEY = "djtasks-peers-benchmark"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_celery_results"]
PEERS_SCHEMA = os.environ.get("PEERS_PG_SCHEMA", "djtasks_peers")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": os.environ.get("BENCH_DB_NAME", "test"),
        "CONN_MAX_AGE": 600,
        "OPTIONS": {"options": f"-c search_path={PEERS_SCHEMA}"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
