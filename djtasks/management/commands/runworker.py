"""``manage.py runworker``: parse and check options, then hand over to the worker."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils import autoreload

from djtasks import signals
from djtasks.brokers import get_broker
from djtasks.conf import QUEUE_NAME_RE, get_settings
from djtasks.exceptions import BrokerError
from djtasks.registry import registry
from djtasks.utils import TASK_FORMAT, install_task_record_factory
from djtasks.worker.connect import wait_for_broker
from djtasks.worker.executor import Limits
from djtasks.worker.pools import POOLS
from djtasks.worker.supervisor import Supervisor, WorkerOptions, default_hostname

LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def prefetch(text: str) -> int:
    value = positive_int(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1000 or less")
    return value


def queue_list(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("give at least one queue name, e.g. -Q default,reports")
    for q in queues:
        if not QUEUE_NAME_RE.match(q):
            raise argparse.ArgumentTypeError(
                f"{q!r} is not a queue name (letters, digits and _.:-, 1 to 200 characters)"
            )
    return list(dict.fromkeys(queues))


def metrics_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``ADDRESS:PORT`` (``[::1]:9100`` for IPv6); port 0 picks a free one."""
    address, _, port = text.rpartition(":")
    address = address.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port or ADDRESS:PORT, e.g. 9100 or 127.0.0.1:9100") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0 to 65535")
    return address, number


class Command(BaseCommand):
    help = "Run a djtasks worker: consume queues and run tasks (Celery's `celery worker`)."
    # Django's checks run in handle(), with their output, before the worker starts.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "-c", "--concurrency", type=positive_int, default=os.cpu_count() or 1,
            help="number of executors (default: number of CPUs)",
        )
        parser.add_argument(
            "-Q", "--queues", type=queue_list, default=None,
            help="comma-separated queues to consume (default: DJTASKS['DEFAULT_QUEUE'])",
        )
        parser.add_argument(
            "-P", "--pool", choices=list(POOLS), default="prefork",
            help="prefork: one process per executor (time limits, terminate); threads: "
                 "executors as threads, for I/O-bound tasks; solo: one, in this process",
        )
        parser.add_argument("--burst", action="store_true",
                            help="exit once the queues are empty (for scripts and tests)")
        parser.add_argument(
            "--prefetch-multiplier", type=prefetch, default=None,
            help="messages each executor fetches at once "
                 "(default: DJTASKS['PREFETCH_MULTIPLIER'])",
        )
        parser.add_argument("--time-limit", type=positive_seconds, default=None,
                            help="hard time limit in seconds for tasks without their own "
                                 "(prefork: the executor is killed and replaced)")
        parser.add_argument("--soft-time-limit", type=positive_seconds, default=None,
                            help="soft time limit in seconds for tasks without their own "
                                 "(SoftTimeLimitExceeded is raised in the task)")
        parser.add_argument("--max-tasks-per-child", type=positive_int, default=None,
                            help="replace a prefork executor after it ran this many tasks")
        parser.add_argument("--max-memory-per-child", type=positive_int, default=None,
                            help="replace a prefork executor once its resident memory "
                                 "passes this many KiB (checked after each task)")
        parser.add_argument("--shutdown-timeout", type=positive_seconds, default=60.0,
                            help="seconds a warm shutdown waits for running tasks before "
                                 "going cold (default: 60)")
        parser.add_argument("--reload", action="store_true",
                            help="restart the worker when Python code changes "
                                 "(Django's autoreloader; for development)")
        parser.add_argument("-B", "--beat", action="store_true",
                            help="also run periodic tasks (a beat runner in the supervisor; "
                                 "any number of workers may run one)")
        parser.add_argument("--lint", action="store_true",
                            help="lint the project's .delay()/.apply_async() calls for "
                                 "objects passed where ids belong, print, and exit")
        parser.add_argument(
            "--metrics-port", type=metrics_address, default=None, metavar="[ADDRESS:]PORT",
            help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (address default "
                 "0.0.0.0; needs pip install 'djtasks[metrics]'; docs/monitoring.md)")
        parser.add_argument("-n", "--hostname", default=None,
                            help="worker name (default: djtasks@<host>.<pid>)")
        parser.add_argument("-l", "--loglevel", type=str.upper, choices=LOGLEVELS,
                            default="INFO", help="djtasks log level (default: INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["lint"]:
            from djtasks.management.commands.djtasks import run_lint

            if run_lint(self, []):
                raise CommandError("calls pass an object where an id belongs", returncode=1)
            return
        if options["reload"] and os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true":
            # The parent: start the worker as a child, again whenever it exits with 3.
            sys.exit(autoreload.restart_with_reloader())
        self.inner_run(**options)

    def _watch_code(self, supervisor: Supervisor) -> None:
        """In the reloader's child: watch files in a thread, keep the worker in
        the main thread (signals, soft time limits), restart warmly on change.

        Django's runserver does the reverse (its server runs in a thread and
        the watcher exits the process), which would skip the warm shutdown.
        """
        def on_change(sender: object, file_path: object, **kwargs: Any) -> bool:
            supervisor.request_restart()
            return True  # handled: Django's reloader must not sys.exit() itself

        autoreload.file_changed.connect(on_change, weak=False)
        reloader = autoreload.get_reloader()
        watcher = threading.Thread(target=reloader.run, args=(threading.main_thread(),),
                                   name="djtasks-reloader", daemon=True)
        watcher.start()

    def inner_run(self, **options: Any) -> None:
        self._configure_logging(options["loglevel"])
        s = get_settings()
        # Raises SystemCheckError on errors. Only the databases the worker uses:
        # Django 6.1 would otherwise connect to every alias in DATABASES.
        self.check(display_num_errors=False, databases=self._databases(s.BROKER_URL))
        queues = options["queues"] or [s.DEFAULT_QUEUE]
        if options["metrics_port"] is not None:
            try:
                import djtasks.metrics  # noqa: F401 - needs prometheus_client
            except ImproperlyConfigured as exc:
                raise CommandError(f"--metrics-port: {exc}") from None
        pool = POOLS[options["pool"]]
        recycles = pool.recycles_executors
        if not recycles and (options["max_tasks_per_child"] or options["max_memory_per_child"]):
            self.stderr.write(self.style.WARNING(
                "--max-tasks-per-child and --max-memory-per-child replace prefork executors; "
                f"the {options['pool']} pool ignores them"))
        worker = WorkerOptions(
            queues=queues,
            concurrency=pool.fixed_concurrency or options["concurrency"],
            pool=options["pool"],
            burst=options["burst"],
            prefetch_multiplier=options["prefetch_multiplier"] or s.PREFETCH_MULTIPLIER,
            hostname=options["hostname"] or default_hostname(),
            limits=Limits(
                time_limit=options["time_limit"] or s.TIME_LIMIT,
                soft_time_limit=options["soft_time_limit"] or s.SOFT_TIME_LIMIT,
                max_tasks_per_child=options["max_tasks_per_child"] if recycles else None,
                max_memory_per_child=options["max_memory_per_child"] if recycles else None,
            ),
            shutdown_timeout=options["shutdown_timeout"],
            beat=options["beat"],
            metrics=options["metrics_port"],
        )
        broker = get_broker()
        try:
            # A burst run (a script, a test) wants an answer, not a wait.
            if options["burst"]:
                broker.ping()
            elif not wait_for_broker(broker):
                self.stdout.write(f"worker {worker.hostname} stopped before the broker answered")
                return
        except BrokerError as exc:
            raise CommandError(f"cannot start: {exc}") from None
        self._banner(worker, broker.describe())
        supervisor = Supervisor(worker)
        if options["reload"]:
            self._watch_code(supervisor)
        try:
            supervisor.serve_metrics()
        except OSError as exc:  # the port is taken, or the address is not this host's
            raise CommandError(f"--metrics-port: cannot serve metrics: {exc}") from None
        code = supervisor.run()
        self.stdout.write(f"worker {worker.hostname} stopped")
        if supervisor.restart:
            sys.exit(3)  # the reloader parent starts a new worker
        if code:
            raise CommandError(f"worker exited with status {code}", returncode=code)

    @staticmethod
    def _databases(broker_url: str) -> list[str]:
        """The database aliases this worker reads and writes: the result
        backend's, and the broker's (``db://<alias>``)."""
        from django.db import router

        from djtasks.models import TaskResult

        aliases = {router.db_for_write(TaskResult)}
        parts = urlsplit(broker_url)
        if parts.scheme == "db":
            aliases.add(parts.netloc or parts.path.lstrip("/") or "default")
        return sorted(aliases)

    def _configure_logging(self, level: str) -> None:
        """``--loglevel`` for djtasks; with no LOGGING of the project's own (no
        handler on the root or the ``djtasks`` logger), every logger, tasks'
        included, prints in TASK_FORMAT. A project's own handler on ``djtasks``
        is left alone: a root handler too would print each line twice."""
        install_task_record_factory()
        if signals.setup_logging.has_listeners():
            # Celery's rule: a project that connects setup_logging configures
            # logging itself, and the worker leaves it alone.
            signals.setup_logging.send(sender=None, loglevel=level, logfile=None,
                                       format=TASK_FORMAT, colorize=False)
            return
        djtasks_logger = logging.getLogger("djtasks")
        djtasks_logger.setLevel(level)
        root = logging.getLogger()
        if not root.handlers and not djtasks_logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(TASK_FORMAT))
            root.addHandler(handler)
            root.setLevel(level)

    def _banner(self, worker: WorkerOptions, broker: str) -> None:
        w = self.stdout.write
        w(self.style.SUCCESS(f"djtasks worker {worker.hostname}"))
        w(f"  broker:      {broker}")
        w(f"  queues:      {', '.join(worker.queues)}")
        w(f"  concurrency: {worker.concurrency} ({worker.pool} pool), "
          f"prefetch {worker.prefetch_multiplier}{', burst' if worker.burst else ''}"
          f"{', beat' if worker.beat else ''}")
        w(f"  tasks ({len(registry)}):")
        for task in registry:
            w(f"    . {task.name}")
