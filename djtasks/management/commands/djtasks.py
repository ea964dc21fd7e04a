"""``manage.py djtasks``: look at workers and queues, handle dead letters."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from djtasks.brokers import get_broker
from djtasks.exceptions import BrokerError


def run_lint(command: BaseCommand, paths: list[str]) -> int:
    """Lint ``paths`` (default: the project), print the findings; return how many."""
    from django.conf import settings

    from djtasks.lint.calls import installed_model_names, lint_paths

    roots = paths or [str(getattr(settings, "BASE_DIR", "."))]
    findings = lint_paths(roots, model_names=installed_model_names(),
                          exclude=("migrations", ".venv", "venv", "node_modules", ".tox",
                                   "site-packages"))
    for finding in findings:
        command.stdout.write(str(finding))
    if not findings:
        command.stdout.write(command.style.SUCCESS(f"no findings in {', '.join(roots)}"))
    return len(findings)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Command(BaseCommand):
    help = "djtasks administration: workers, queues, dead letters."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        sub.add_parser("workers", help="list the workers that sent a heartbeat")
        queues = sub.add_parser("queues", help="messages waiting per queue")
        queues.add_argument("queues", nargs="*", default=None)
        dead = sub.add_parser("deadletters", help="list dead letters (newest first)")
        dead.add_argument("--body", action="store_true", help="print each message body")
        requeue = sub.add_parser("requeue", help="put dead letters back on their queue")
        requeue.add_argument("ids", nargs="*", help="task ids (see 'deadletters')")
        requeue.add_argument("--all", action="store_true", help="every dead letter")
        discard = sub.add_parser("discard", help="delete dead letters for good")
        discard.add_argument("ids", nargs="+")
        cleanup = sub.add_parser(
            "cleanup", help="delete finished results older than DJTASKS['RESULT_EXPIRES'] "
                            "(beat runs it hourly as the djtasks.cleanup_results schedule)")
        cleanup.add_argument("--dry-run", action="store_true", help="count, delete nothing")
        lint = sub.add_parser(
            "lint", help="find .delay()/.apply_async()/send_task() calls that pass an object "
                         "where an id belongs (exit status 1 on findings)")
        lint.add_argument("paths", nargs="*",
                          help="files or folders (default: settings.BASE_DIR, or '.')")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "do_" + options["action"])(**options)
        except BrokerError as exc:
            raise CommandError(str(exc)) from None

    def do_cleanup(self, dry_run: bool = False, **options: Any) -> None:
        from djtasks.beat.housekeeping import delete_expired_results
        from djtasks.conf import get_settings
        from djtasks.models import TaskResult

        expires = get_settings().RESULT_EXPIRES
        if expires is None:
            self.stdout.write("DJTASKS['RESULT_EXPIRES'] is None: results are kept forever")
            return
        expired = TaskResult.objects.expired(expires)
        if dry_run:
            self.stdout.write(f"{expired.count()} result(s) finished more than {expires} ago")
            return
        deleted = delete_expired_results(expires)
        self.stdout.write(f"deleted {deleted} result(s) finished more than {expires} ago")

    def do_lint(self, paths: list[str], **options: Any) -> None:
        count = run_lint(self, paths)
        if count:
            raise CommandError(f"{count} call(s) pass an object where an id belongs",
                               returncode=1)

    def do_workers(self, **options: Any) -> None:
        workers = get_broker().workers()
        if not workers:
            self.stdout.write("no worker has sent a heartbeat")
            return
        now = time.time()
        for name, info in sorted(workers.items()):
            alive = now - info["last_seen"] <= info.get("lease", 30)
            state = self.style.SUCCESS("alive") if alive else self.style.ERROR("lost")
            self.stdout.write(
                f"{name}  {state}  pid {info['pid']}  pool {info['pool']}  "
                f"concurrency {info['concurrency']}  queues {','.join(info['queues'])}  "
                f"started {_when(info['started'])}  last seen {now - info['last_seen']:.0f}s ago"
                f"  tasks done {info['tasks_done']}  running {info['tasks_running']}"
            )

    def do_queues(self, queues: list[str] | None = None, **options: Any) -> None:
        from djtasks.conf import get_settings

        broker = get_broker()
        names = queues or [get_settings().DEFAULT_QUEUE]
        for name, depth in broker.queue_depths(names).items():
            self.stdout.write(f"{name}: {depth}")
        self.stdout.write(f"scheduled (eta): {broker.scheduled_count()}")

    def do_deadletters(self, body: bool = False, **options: Any) -> None:
        letters = get_broker().dead_letters()
        if not letters:
            self.stdout.write("no dead letters")
        for d in letters:
            self.stdout.write(f"{d.id}  queue {d.queue}  {_when(d.time)}  {d.reason}")
            if body:
                self.stdout.write("    " + d.body.decode(errors="replace"))

    def do_requeue(self, ids: list[str], all: bool = False, **options: Any) -> None:
        broker = get_broker()
        if all:
            ids = [d.id for d in broker.dead_letters()]
        if not ids:
            raise CommandError("name the task ids to requeue, or pass --all")
        missing = [i for i in ids if not broker.requeue_dead_letter(i)]
        self.stdout.write(f"requeued {len(ids) - len(missing)} dead letter(s)")
        if missing:
            raise CommandError(f"no dead letter with id {', '.join(missing)}")

    def do_discard(self, ids: list[str], **options: Any) -> None:
        broker = get_broker()
        missing = [i for i in ids if not broker.delete_dead_letter(i)]
        self.stdout.write(f"discarded {len(ids) - len(missing)} dead letter(s)")
        if missing:
            raise CommandError(f"no dead letter with id {', '.join(missing)}")
