"""Settings for the benchmark: PostgreSQL and the local Redis, as in DESIGN.md section 6."""

import os

SECRET_KEY = "djtasks-benchmark"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djtasks",
                  "benchmarks.benchapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "NAME": os.environ.get("BENCH_DB_NAME", "test"),
        "CONN_MAX_AGE": 600,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
DJTASKS = {
    "BROKER_URL": BENCH_REDIS_URL,
    "KEY_PREFIX": os.environ.get("BENCH_KEY_PREFIX", "djtasks-bench"),
    "PREFETCH_MULTIPLIER": int(os.environ.get("BENCH_PREFETCH", "32")),
}
LOGGING = {"version": 1, "loggers": {"djtasks": {"level": "WARNING"}}}
