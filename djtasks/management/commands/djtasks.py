"""``manage.py djtasks``: look at workers, queues and tasks, purge a queue,
handle dead letters. The work is done in ``djtasks.control``."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from djtasks import control
from djtasks.brokers import get_broker
from djtasks.brokers.base import Place
from djtasks.conf import QUEUE_NAME_RE
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


def queue_name(text: str) -> str:
    if not QUEUE_NAME_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a queue name (letters, digits and _.:-, 1 to 200 characters)")
    return text


def task_id(text: str) -> str:
    if not 1 <= len(text) <= 255 or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a task id (1 to 255 printable ASCII characters, no spaces)")
    return text


def _named_by(names: list[str], most: int = 3) -> str:
    """``QueueInfo.named_by`` on one line: more than ``most`` tasks as their count."""
    tasks = [n for n in names if n.startswith("task ")]
    if len(tasks) > most:
        names = [n for n in names if not n.startswith("task ")]
        names.insert(1 if names[:1] == ["DEFAULT_QUEUE"] else 0, f"{len(tasks)} tasks")
    return ", ".join(names)


PURGE_HELP = (
    "delete the messages waiting in a queue and mark their PENDING or RETRY rows REVOKED; "
    "asks first unless --yes. Scheduled (eta/countdown) messages of the queue stay and run "
    "when due (revoke them by id), and running or fetched ones are not touched: as with "
    "Celery's purge. It cannot be undone.")


class Command(BaseCommand):
    help = "djtasks administration: status, workers, queues, tasks, dead letters."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        sub.add_parser("status", help="queues with their depths, scheduled messages, dead "
                                      "letters, live workers and task results per state")
        sub.add_parser("workers", help="list the workers that sent a heartbeat")
        queues = sub.add_parser(
            "queues", help="messages waiting per queue: every queue that DEFAULT_QUEUE, a task, "
                           "a route or a live worker names, and any given")
        queues.add_argument("queues", nargs="*", type=queue_name, default=None)
        inspect = sub.add_parser("inspect", help="one task: its result row and what the "
                                                 "broker holds of it")
        inspect.add_argument("task_id", type=task_id)
        purge = sub.add_parser("purge", help=PURGE_HELP, description=PURGE_HELP)
        purge.add_argument("queue", type=queue_name)
        purge.add_argument("--yes", action="store_true", help="do not ask first")
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
            alive = control.is_alive(info, now)
            state = self.style.SUCCESS("alive") if alive else self.style.ERROR("lost")
            self.stdout.write(
                f"{name}  {state}  pid {info['pid']}  pool {info['pool']}  "
                f"concurrency {info['concurrency']}  queues {','.join(info['queues'])}  "
                f"started {_when(info['started'])}  last seen {now - info['last_seen']:.0f}s ago"
                f"  tasks done {info['tasks_done']}  running {info['tasks_running']}"
            )

    def do_queues(self, queues: list[str] | None = None, **options: Any) -> None:
        broker = get_broker()
        for q in control.known_queues(broker, extra=queues or ()):
            why = f"  ({_named_by(q.named_by)})" if q.named_by else ""
            self.stdout.write(f"{q.name}: {q.depth}{why}")
        self.stdout.write(f"scheduled (eta): {broker.scheduled_count()}")

    def do_status(self, **options: Any) -> None:
        broker = get_broker()
        st = control.status(broker)
        self.stdout.write(f"broker: {broker.describe()}")
        self.stdout.write("queues (messages waiting):")
        for q in st.queues:
            self.stdout.write(f"  {q.name}: {q.depth}")
        self.stdout.write(f"scheduled (eta): {st.scheduled}")
        letters = f"dead letters: {st.dead_letters}"
        self.stdout.write(self.style.WARNING(letters) if st.dead_letters else letters)
        self.stdout.write(f"workers: {len(st.workers)} alive"
                          + (f", {len(st.lost_workers)} lost" if st.lost_workers else ""))
        for name, info in sorted(st.workers.items()):
            self.stdout.write(f"  {name}  pool {info.get('pool')}  concurrency "
                              f"{info.get('concurrency')}  running {info.get('tasks_running')}  "
                              f"done {info.get('tasks_done')}  queues "
                              f"{','.join(info.get('queues', ()))}")
        for name in st.lost_workers:
            self.stdout.write(self.style.ERROR(f"  {name}  lost (no heartbeat within its lease)"))
        self.stdout.write("results: " + "  ".join(f"{k} {v}" for k, v in st.results.items()))

    def do_inspect(self, task_id: str, **options: Any) -> None:
        story = control.inspect_task(get_broker(), task_id)
        row = story.row
        if row is None and not (story.held or story.dead_letters or story.revoked):
            raise CommandError(f"no task {task_id!r}: no result row (it is unknown, its "
                               f"result expired, or it has ignore_result) and the broker "
                               f"holds nothing of it")
        if row is not None:
            self._print_row(row)
        else:
            self.stdout.write(f"id: {task_id} (no result row)")
        for h in story.held:
            if h.place is Place.SCHEDULED:
                assert h.eta is not None
                where = f"scheduled on queue {h.queue} for {_when(h.eta)} UTC"
            elif h.place is Place.FETCHED:
                where = f"fetched from queue {h.queue} by {h.consumer}"
            else:
                where = f"waiting in queue {h.queue}"
            self.stdout.write(f"broker: a message {where}")
        if story.revoked:
            self.stdout.write(self.style.WARNING("broker: revoked (its messages are dropped)"))
        for d in story.dead_letters:
            self.stdout.write(self.style.WARNING(
                f"broker: dead letter {d.id} in queue {d.queue} since {_when(d.time)}: "
                f"{d.reason}"))
        if story.worker is not None:
            self.stdout.write(f"broker: its worker {story.worker['hostname']} is alive")
        if not (story.held or story.revoked or story.dead_letters):
            self.stdout.write("broker: holds no message of it")

    def _print_row(self, row: Any) -> None:
        fields = [
            ("task", row.task_name), ("state", row.status), ("queue", row.queue),
            ("priority", row.priority), ("args", row.args), ("kwargs", row.kwargs),
            ("retries", row.retries), ("worker", row.worker or "-"),
            ("created", row.created), ("eta", row.eta), ("expires", row.expires),
            ("started", row.started), ("finished", row.finished),
            ("runtime", f"{row.runtime.total_seconds():.3f}s" if row.runtime else None),
            ("parent_id", row.parent_id), ("root_id", row.root_id),
            ("group_id", row.group_id), ("options", row.options or None),
        ]
        if row.status == "SUCCESS":
            fields.append(("result", row.result))
        if row.exception_type:
            fields.append(("exception", f"{row.exception_type}: {row.exception_message}"))
        self.stdout.write(f"id: {row.task_id}")
        for label, value in fields:
            if value not in (None, ""):
                self.stdout.write(f"{label}: {value}")
        if row.traceback:
            self.stdout.write("traceback:\n" + row.traceback.rstrip())

    def do_purge(self, queue: str, yes: bool = False, **options: Any) -> None:
        broker = get_broker()
        if not yes:
            depth = broker.queue_depths([queue])[queue]
            try:
                answer = input(f"Delete the {depth} message(s) waiting in queue {queue!r} "
                               f"and revoke their tasks? This cannot be undone. [y/N] ")
            except EOFError:  # no terminal (cron, CI): nobody can say yes
                raise CommandError("purge needs an answer and there is no input: pass --yes "
                                   "to purge without asking") from None
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("purge cancelled: nothing deleted")
                return
        done = control.purge(broker, queue)
        self.stdout.write(self.style.SUCCESS(
            f"purged {len(done.ids)} message(s) from queue {queue!r}; "
            f"{done.revoked} task result(s) marked REVOKED"))

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
