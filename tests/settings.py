"""Settings for the test suite (and for the worker subprocesses tests start).

DJTASKS_TEST_DB: ``postgres`` (the README's test command) or ``sqlite``.
The subprocess helpers pass the test database's name and a per-test Redis
key prefix through DJTASKS_TEST_DB_NAME and DJTASKS_TEST_KEY_PREFIX.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "djtasks-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djtasks",
    "tests.app",
    "example_project.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR.parent / "example_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Mail goes to mail.outbox; Django 6.1 replaces EMAIL_BACKEND with MAILERS.
if django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
else:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
MEDIA_ROOT = Path(os.environ.get("DJTASKS_TEST_MEDIA", "/tmp/djtasks-test-media"))
LOGIN_URL = "login"

# Under CI the suite runs on PostgreSQL unless told otherwise: a forgotten
# variable must not move it quietly to SQLite.
_DEFAULT_DB = "postgres" if os.environ.get("CI") else "sqlite"
if os.environ.get("DJTASKS_TEST_DB", _DEFAULT_DB) == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": os.environ.get("DJTASKS_TEST_DB_NAME", "test"),
            "CONN_MAX_AGE": 60,
            # One test database per test run, so concurrent runs never clobber each other.
            "TEST": {"NAME": f"test_djtasks_{os.getpid()}"},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJTASKS_TEST_DB_NAME", "/tmp/djtasks-test.sqlite3"),
            "OPTIONS": {"timeout": 30},
            "TEST": {"NAME": f"/tmp/djtasks-test-run-{os.getpid()}.sqlite3"},
        }
    }

# The database broker's contract runs on every database: these two aliases
# are set up only for the tests that ask for them.
DATABASES["sqlite"] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": "/tmp/djtasks-test-broker.sqlite3",
    "OPTIONS": {"timeout": 30},
    "TEST": {"NAME": f"/tmp/djtasks-test-broker-{os.getpid()}.sqlite3", "DEPENDENCIES": []},
}
DATABASES["mariadb"] = {
    "ENGINE": "django.db.backends.mysql",
    "HOST": os.environ.get("DJTASKS_TEST_MARIADB_HOST", "127.0.0.1"),
    "PORT": os.environ.get("DJTASKS_TEST_MARIADB_PORT", "3306"),
    "USER": "root",
    "PASSWORD": "",
    "NAME": "test",
    "OPTIONS": {"charset": "utf8mb4"},
    "TEST": {"NAME": f"test_djtasks_{os.getpid()}", "CHARSET": "utf8mb4", "DEPENDENCIES": []},
}

DJTASKS = {
    # Redis; a worker subprocess of a database-broker test gets DJTASKS_TEST_BROKER_URL.
    "BROKER_URL": os.environ.get("DJTASKS_TEST_BROKER_URL")
    or os.environ.get("DJTASKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "KEY_PREFIX": os.environ.get("DJTASKS_TEST_KEY_PREFIX", "djtasks-test"),
    "WORKER_LEASE": float(os.environ.get("DJTASKS_TEST_LEASE", "30")),
    "OUTBOX_GRACE": float(os.environ.get("DJTASKS_TEST_OUTBOX_GRACE", "30")),
    "ROUTES": {"example_project.shop.tasks.generate_*": {"queue": "reports"}},  # as the example
}

# Django 6's tasks framework on djtasks (tests/test_django_tasks.py); 5.2 has none.
if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "djtasks.backends.DjtasksBackend",
            "QUEUES": ["default", "other"],
        },
    }

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("DJTASKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"task": {"format": "%(task_name)s[%(task_id)s] %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "task"}},
    "loggers": {
        "djtasks": {"handlers": ["console"], "level": "INFO"},
        "tests": {"handlers": ["console"], "level": "INFO"},
    },
}
