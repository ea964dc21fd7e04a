"""Server time of the TaskResult admin at a million rows in PostgreSQL.

    .venv/bin/python benchmarks/admin_changelist.py [--rows 1000000] [--repeat 7] [--keep]

Makes a database of its own (``djtasks_admin_bench``, dropped at the end
unless ``--keep``; ``--reuse`` keeps a filled one), migrates it, fills
``TaskResult`` with ``--rows`` rows in one ``INSERT ... SELECT FROM
generate_series`` (20 task names, one of them rare, 4 queues, 8 hosts of 4
executors, 2% FAILURE, 1% PENDING, a week of ``created`` times), ANALYZEs,
then requests each page with Django's test ``Client`` as a superuser, in
this process: the time is the server's (URL routing, the admin, the
queries, the template), no network. It prints the median of ``--repeat``
requests after one warm-up, the number of queries of the last request, their
time and the slowest one's (as Django records them, in whole ms), and
the EXPLAIN ANALYZE of the slowest query of each page slower than
``--explain-over`` ms. A measurement, not a test: nothing fails on a figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "djtasks_admin_bench"
PG = {"HOST": os.environ.get("PGHOST", "127.0.0.1"), "PORT": os.environ.get("PGPORT", "5432"),
      "USER": os.environ.get("PGUSER", "postgres")}

urlpatterns: list[object] = []  # this module is the ROOT_URLCONF; filled in by _urls()

FILL = """
INSERT INTO djtasks_taskresult (task_id, task_name, queue, priority, status, args, kwargs,
    result, options, exception_type, exception_message, traceback, worker, retries, eta,
    expires, created, started, finished, parent_id, root_id, group_id)
SELECT md5(i::text)::uuid::text,
       CASE WHEN i %% 10000 = 7 THEN 'shop.tasks.rare' ELSE 'shop.tasks.task_' || (i %% 19) END,
       (ARRAY['default', 'reports', 'mail', 'images'])[1 + i %% 4], 0,
       CASE WHEN i %% 50 = 0 THEN 'FAILURE' WHEN i %% 100 = 1 THEN 'PENDING'
            WHEN i %% 1000 = 2 THEN 'STARTED' WHEN i %% 1000 = 3 THEN 'REVOKED'
            ELSE 'SUCCESS' END,
       jsonb_build_array(i, 'order-' || i), jsonb_build_object('account', i %% 977),
       CASE WHEN i %% 50 = 0 THEN 'null'::jsonb ELSE to_jsonb(i) END, '{}'::jsonb,
       CASE WHEN i %% 50 = 0 THEN (ARRAY['builtins.ValueError', 'builtins.OSError',
            'shop.errors.PaymentDeclined'])[1 + i %% 3] ELSE '' END,
       CASE WHEN i %% 50 = 0 THEN 'failed on ' || i ELSE '' END, '',
       CASE WHEN i %% 100 = 1 THEN '' ELSE 'host-' || (i %% 8) || '.' || (1000 + i %% 8)
            || '/' || (i %% 4) || '.1' END,
       CASE WHEN i %% 50 = 0 THEN 3 ELSE 0 END, NULL, NULL,
       now() - (%(rows)s - i) * interval '600 milliseconds',
       CASE WHEN i %% 100 = 1 THEN NULL
            ELSE now() - (%(rows)s - i) * interval '600 milliseconds' + interval '5 ms' END,
       CASE WHEN i %% 100 = 1 OR i %% 1000 = 2 THEN NULL
            ELSE now() - (%(rows)s - i) * interval '600 milliseconds'
                 + (5 + i %% 400) * interval '1 ms' END,
       '', md5(i::text)::uuid::text, ''
FROM generate_series(1, %(rows)s) AS i
"""


def _configure() -> None:
    settings.configure(
        SECRET_KEY="djtasks-admin-benchmark", DEBUG=False, USE_TZ=True, TIME_ZONE="UTC",
        ALLOWED_HOSTS=["testserver"], ROOT_URLCONF="benchmarks.admin_changelist",
        INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth",
                        "django.contrib.contenttypes", "django.contrib.sessions",
                        "django.contrib.messages", "django.contrib.staticfiles", "djtasks"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware",
                    "django.contrib.messages.middleware.MessageMiddleware"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True, "OPTIONS": {"context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages"]}}],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": DB_NAME,
                               **PG}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField", STATIC_URL="static/",
        DJTASKS={"BROKER_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
                 "KEY_PREFIX": "djtasks-admin-bench"},
    )
    django.setup()


def _urls() -> None:
    from django.contrib import admin
    from django.urls import path

    urlpatterns[:] = [path("admin/", admin.site.urls)]


def _create_database(*, reuse: bool) -> bool:
    """Make the benchmark's database; True if it was there already (``reuse``)."""
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, host=PG["HOST"], port=PG["PORT"],
                         user=PG["USER"]) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              [DB_NAME]).fetchone()
        if exists and reuse:
            return True
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return False


def _drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(dbname="postgres", autocommit=True, host=PG["HOST"], port=PG["PORT"],
                         user=PG["USER"]) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')


def _fill(rows: int) -> None:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL % {"rows": int(rows)})
    # VACUUM as autovacuum would, soon after: index-only scans (the bounded
    # count) then skip the heap. Right after the INSERT they read it: the
    # FAILURE filter's count took 84 ms instead of a few.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE djtasks_taskresult")
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s")


def pages() -> list[tuple[str, str]]:
    """(label, URL) of every page measured."""
    from datetime import timedelta

    from django.utils import timezone

    base = "/admin/djtasks/taskresult/"
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    week = (today - timedelta(days=7)).strftime("%Y-%m-%d+00:00:00%%2B00:00")
    return [
        ("first page", base),
        ("page 20 (the last)", f"{base}?p=19"),
        ("status=FAILURE", f"{base}?status__exact=FAILURE"),
        ("status=PENDING", f"{base}?status__exact=PENDING"),
        ("status=STARTED", f"{base}?status__exact=STARTED"),
        ("task name (common)", f"{base}?task_name=shop.tasks.task_3"),
        ("task name (rare)", f"{base}?task_name=shop.tasks.rare"),
        ("queue=reports", f"{base}?queue=reports"),
        ("worker=host-3", f"{base}?worker=host-3"),
        ("created: past 7 days", f"{base}?created__gte={week}"),
        ("FAILURE + task name", f"{base}?status__exact=FAILURE&task_name=shop.tasks.task_5"),
        ("FAILURE + queue", f"{base}?status__exact=FAILURE&queue=mail"),
        ("search: id prefix", f"{base}?q=c4ca4238"),
        ("search: argument text (scan)", f"{base}?q=order-123456"),
        ("change page", "CHANGE"),
        ("dashboard", "/admin/djtasks/dashboard/"),
        ("dashboard, live part", "/admin/djtasks/dashboard/?live=1"),
    ]


def measure(repeat: int, explain_over: float) -> None:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import NoReverseMatch

    from djtasks.models import TaskResult

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser(
        "bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    pk = TaskResult.objects.filter(task_id=TaskResult.objects.values_list(
        "task_id", flat=True).order_by("-created").first()).values_list("pk", flat=True)[0]
    slow: list[tuple[str, str, list[object]]] = []
    print(f"{'page':32} {'median ms':>10} {'max ms':>8} {'queries':>8} {'their ms':>9} "
          f"{'slowest ms':>11}")
    for label, url in pages():
        if url == "CHANGE":
            url = f"/admin/djtasks/taskresult/{pk}/change/"
        try:
            response = client.get(url)
        except NoReverseMatch:
            continue
        if response.status_code != 200 and label.startswith("dashboard"):
            print(f"{label:32} (not there)")
            continue
        assert response.status_code == 200, (label, response.status_code)
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - started) * 1000)
        slowest = max(queries.captured_queries, key=lambda q: float(q["time"]))
        slowest_ms = float(slowest["time"]) * 1000
        total_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        print(f"{label:32} {statistics.median(times):10.1f} {max(times):8.1f} "
              f"{len(queries.captured_queries):8} {total_ms:9.0f} {slowest_ms:11.0f}")
        if slowest_ms > explain_over:
            slow.append((label, slowest["sql"], []))
    for label, sql, _ in slow:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = "\n    ".join(row[0] for row in cursor.fetchall())
        print(f"\n-- {label}: {sql[:300]}\n    {plan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--explain-over", type=float, default=30.0,
                        help="EXPLAIN a page's slowest query above this many ms")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a filled database")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    filled = _create_database(reuse=args.reuse)
    _configure()
    _urls()
    if not filled:
        _fill(args.rows)
    else:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    try:
        measure(args.repeat, args.explain_over)
    finally:
        if not args.keep and not args.reuse:
            _drop_database()


if __name__ == "__main__":
    main()
else:
    _urls()
