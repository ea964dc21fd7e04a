"""Settings for the benchmark: PostgreSQL and the local Redis, as in DESIGN.md section 6.

Driven by environment variables, so that the worker subprocesses that
benchmarks/run.py starts see the same broker and database as run.py itself:

* ``BENCH_BROKER``: ``redis`` (default; Redis db 14, results in PostgreSQL),
  ``db-postgres`` (``db://default`` on PostgreSQL) or ``db-sqlite``
  (``db://default`` on a SQLite file, ``BENCH_SQLITE_PATH``, which run.py
  puts in a temporary directory).
* ``BENCH_REDIS_URL``: the benchmark's private redis-server (measure.py or
  run.py starts one on a free port and sets this; never the shared 6379):
  the Redis broker, and the tasks' counters whatever the broker.
* ``BENCH_PREFETCH``: ``PREFETCH_MULTIPLIER``; unset, djtasks' default.
"""

import os

SECRET_KEY = "djtasks-benchmark"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djtasks",
                  "benchmarks.benchapp"]
BENCH_BROKER = os.environ.get("BENCH_BROKER", "redis")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("PGHOST", "127.0.0.1"),
    "PORT": os.environ.get("PGPORT", "5432"),
    "USER": os.environ.get("PGUSER", "postgres"),
    "NAME": os.environ.get("BENCH_DB_NAME", "test"),
    "CONN_MAX_AGE": 600,
    # So measure.py finds its own backends (their CPU is the benchmark's, not "others").
    "OPTIONS": {"application_name": "djtasks-bench"},
}
# SQLite as Django's docs ("SQLite notes": transaction behaviour, database
# is locked errors, setting pragma options) advise for concurrent writers:
# IMMEDIATE transactions, so a reader never has to upgrade to a writer and
# fail; a busy timeout that outlasts any writer; WAL, so readers do not wait
# for the writer.
# BENCH_SQLITE_INIT may replace the PRAGMAs (e.g. to try synchronous=NORMAL).
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": os.environ.get("BENCH_SQLITE_INIT", "PRAGMA journal_mode=WAL"),
}

if BENCH_BROKER == "redis":
    BROKER_URL = BENCH_REDIS_URL
    DATABASES = {"default": POSTGRES}
elif BENCH_BROKER == "db-postgres":
    BROKER_URL = "db://default"
    DATABASES = {"default": POSTGRES}
elif BENCH_BROKER == "db-sqlite":
    BROKER_URL = "db://default"
    if "BENCH_SQLITE_PATH" not in os.environ:
        raise RuntimeError("BENCH_BROKER=db-sqlite needs BENCH_SQLITE_PATH (run.py sets it)")
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                             "NAME": os.environ["BENCH_SQLITE_PATH"],
                             "OPTIONS": SQLITE_OPTIONS}}
else:
    raise RuntimeError(f"BENCH_BROKER={BENCH_BROKER!r}: redis, db-postgres or db-sqlite")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DJTASKS = {
    "BROKER_URL": BROKER_URL,
    "KEY_PREFIX": os.environ.get("BENCH_KEY_PREFIX", "djtasks-bench"),
}
if os.environ.get("BENCH_PREFETCH"):  # unset: djtasks' default, as a user gets it
    DJTASKS["PREFETCH_MULTIPLIER"] = int(os.environ["BENCH_PREFETCH"])
LOGGING = {"version": 1, "loggers": {"djtasks": {"level": "WARNING"}}}
