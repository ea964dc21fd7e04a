"""``manage.py runbeat``: run periodic tasks (Celery's ``celery beat``)."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from django.core.management.base import BaseCommand

from djtasks.beat.runner import Runner
from djtasks.management.commands.runworker import LOGLEVELS, positive_seconds
from djtasks.management.commands.runworker import Command as RunWorker
from djtasks.worker.supervisor import default_hostname


class Command(BaseCommand):
    help = ("Run periodic tasks: publish each tick of DJTASKS['BEAT_SCHEDULE'] and the "
            "admin's periodic tasks once, however many runners are up (docs/periodic.md).")
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sync-interval", type=positive_seconds, default=None,
                            help="seconds between reads of the database's schedules "
                                 "(default: DJTASKS['BEAT_SYNC_INTERVAL'])")
        parser.add_argument("-n", "--hostname", default=None,
                            help="runner name for logs (default: djtasks@<host>.<pid>)")
        parser.add_argument("-l", "--loglevel", type=str.upper, choices=LOGLEVELS,
                            default="INFO", help="djtasks log level (default: INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = RunWorker(stdout=self.stdout, stderr=self.stderr)
        worker._configure_logging(options["loglevel"])
        from djtasks.conf import get_settings

        self.check(display_num_errors=False,
                   databases=RunWorker._databases(get_settings().BROKER_URL))
        runner = Runner(hostname=options["hostname"] or default_hostname(),
                        sync_interval=options["sync_interval"])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop())
        self.stdout.write(self.style.SUCCESS(f"djtasks beat {runner.hostname}"))
        for entry in runner.entries():
            self.stdout.write(f"  . {entry.name}: {entry.task} {entry.schedule.describe()}")
        runner.run()
        self.stdout.write(f"beat {runner.hostname} stopped")
