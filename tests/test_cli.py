"""``manage.py djtasks`` status, inspect, purge and queues, on the test broker
(Redis) and on the database broker."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from djtasks import AsyncResult, control, states
from djtasks.brokers import get_broker
from djtasks.exceptions import TaskRevokedError
from djtasks.models import TaskResult
from djtasks.registry import registry
from tests.app.tasks import add, fail, on_other_queue

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["redis", "db"])
def any_broker(request, settings, broker):  # type: ignore[no-untyped-def]
    """The test broker (Redis), then the database broker."""
    if request.param == "db":
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    return get_broker()


def djtasks(*args: str) -> str:
    out = io.StringIO()
    call_command("djtasks", *args, stdout=out, no_color=True)
    return out.getvalue()


def line(output: str, start: str) -> str:
    return next(x.strip() for x in output.splitlines() if x.strip().startswith(start))


# -- status ------------------------------------------------------------------

def test_status_shows_queue_depths_scheduled_dead_letters_and_result_counts(any_broker, burst):
    add.delay(1, 2)
    fail.delay("boom")
    burst()
    add.delay(3, 4)
    add.delay(5, 6)
    on_other_queue.apply_async(args=["x"], countdown=600)
    out = djtasks("status")
    assert line(out, "default:") == "default: 2"
    assert line(out, "other:") == "other: 0"
    assert line(out, "scheduled (eta):") == "scheduled (eta): 1"
    assert line(out, "dead letters:") == "dead letters: 0"
    assert line(out, "results:") == ("results: PENDING 3  STARTED 0  RETRY 0  SUCCESS 1  "
                                     "FAILURE 1  REVOKED 0")


def test_status_lists_live_workers_and_those_that_went_silent(any_broker):
    now = time.time()
    info = {"hostname": "w1", "pid": 1, "queues": ["default"], "concurrency": 2,
            "pool": "prefork", "started": now, "lease": 30, "tasks_done": 7,
            "tasks_running": 1}
    any_broker.register_worker("w1", {**info, "last_seen": now})
    any_broker.register_worker("w2", {**info, "hostname": "w2", "last_seen": now - 120})
    out = djtasks("status")
    assert line(out, "workers:") == "workers: 1 alive, 1 lost"
    assert "pool prefork  concurrency 2  running 1  done 7" in line(out, "w1")
    assert "lost" in line(out, "w2")


def test_status_counts_dead_letters(any_broker, burst):
    from djtasks.message import Message

    m = Message(id="nobody-knows", task="no.such.task", args=[], kwargs={},
                queue="default")
    any_broker.publish([(m, m.encode())])
    burst()
    assert line(djtasks("status"), "dead letters:") == "dead letters: 1"


# -- inspect -----------------------------------------------------------------

def test_inspect_prints_a_finished_tasks_row(any_broker, burst):
    result = add.delay(2, 3)
    burst()
    out = djtasks("inspect", result.id)
    assert f"id: {result.id}" in out
    assert "task: tests.app.tasks.add" in out
    assert "state: SUCCESS" in out
    assert "args: [2, 3]" in out
    assert "result: 5" in out
    assert f"root_id: {result.id}" in out
    assert line(out, "worker:").startswith("worker: djtasks@")
    assert line(out, "runtime:").endswith("s")


def test_inspect_prints_a_failures_exception_and_traceback(any_broker, burst):
    result = fail.delay("it broke")
    burst()
    out = djtasks("inspect", result.id)
    assert "state: FAILURE" in out
    assert "exception: builtins.ValueError: it broke" in out
    assert "traceback:\nTraceback (most recent call last):" in out


def test_inspect_shows_what_the_broker_holds_a_dead_letter(any_broker, burst):
    from djtasks.message import Message

    m = Message(id="lost-one", task="no.such.task", args=[], kwargs={},
                queue="default")
    any_broker.publish([(m, m.encode())])
    burst()
    out = djtasks("inspect", "lost-one")
    assert "id: lost-one (no result row)" in out
    assert "broker: dead letter lost-one in queue default" in out
    assert "no.such.task" in out


def test_inspect_shows_a_queued_message_waiting_in_its_queue(any_broker):
    result = add.delay(1, 1)
    out = djtasks("inspect", result.id)
    assert "state: PENDING" in out
    assert "broker: a message waiting in queue default" in out


def test_inspect_shows_a_scheduled_message_and_its_eta(any_broker):
    result = on_other_queue.apply_async(args=["x"], countdown=600)
    out = djtasks("inspect", result.id)
    assert "broker: a message scheduled on queue other for " in out
    assert "waiting in queue" not in out


def test_inspect_shows_which_consumer_fetched_a_message(any_broker):
    result = add.delay(1, 1)
    consumer = any_broker.consumer("djtasks@host.1/0.1", ["default"])
    consumer.renew(30)
    consumer.fetch(1, 0)
    out = djtasks("inspect", result.id)
    assert "broker: a message fetched from queue default by djtasks@host.1/0.1" in out


def test_inspect_says_a_task_is_revoked(any_broker):
    from djtasks import revoke

    result = add.apply_async(args=[1, 1], countdown=600)
    revoke(result.id)
    out = djtasks("inspect", result.id)
    assert "state: REVOKED" in out
    assert "broker: revoked (its messages are dropped)" in out


def test_inspect_of_a_finished_task_says_the_broker_holds_nothing(any_broker, burst):
    result = add.delay(1, 1)
    burst()
    assert "broker: holds no message of it" in djtasks("inspect", result.id)


def test_inspect_of_an_unknown_id_is_an_error_that_says_why(any_broker):
    with pytest.raises(CommandError, match="no task 'nope': no result row"):
        djtasks("inspect", "nope")


def test_inspect_refuses_what_cannot_be_a_task_id(any_broker):
    with pytest.raises(CommandError, match="is not a task id"):
        djtasks("inspect", "has space")


# -- purge -------------------------------------------------------------------

def test_purge_with_yes_deletes_waiting_messages_and_revokes_their_rows(any_broker):
    waiting = [add.delay(i, i) for i in range(3)]
    other = on_other_queue.delay("x")
    out = djtasks("purge", "default", "--yes")
    assert "purged 3 message(s) from queue 'default'; 3 task result(s) marked REVOKED" in out
    assert any_broker.queue_depths(["default", "other"]) == {"default": 0, "other": 1}
    assert {r.status for r in waiting} == {states.REVOKED}
    assert AsyncResult(other.id).status == states.PENDING
    with pytest.raises(TaskRevokedError, match="purged from queue 'default'"):
        waiting[0].get(timeout=1)


def test_purge_asks_first_and_no_keeps_every_message(any_broker, monkeypatch):
    waiting = add.delay(1, 1)
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "no")
    out = djtasks("purge", "default")
    assert "Delete the 1 message(s) waiting in queue 'default'" in asked[0]
    assert "purge cancelled: nothing deleted" in out
    assert any_broker.queue_depths(["default"]) == {"default": 1}
    assert waiting.status == states.PENDING


def test_purge_asks_first_and_yes_purges(any_broker, monkeypatch):
    add.delay(1, 1)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert "purged 1 message(s)" in djtasks("purge", "default")
    assert any_broker.queue_depths(["default"]) == {"default": 0}


def test_purge_with_no_input_to_answer_from_refuses_and_names_yes(any_broker, monkeypatch):
    add.delay(1, 1)

    def no_terminal(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)
    with pytest.raises(CommandError, match="pass --yes"):
        djtasks("purge", "default")
    assert any_broker.queue_depths(["default"]) == {"default": 1}


def test_purge_leaves_scheduled_tasks_to_run_when_due(any_broker):
    later = add.apply_async(args=[1, 1], countdown=600)
    assert "purged 0 message(s)" in djtasks("purge", "default", "--yes")
    assert any_broker.scheduled_count() == 1
    assert later.status == states.PENDING


def test_purge_does_not_touch_rows_that_finished(any_broker, burst):
    done = add.delay(1, 1)
    burst()
    # A second message with the id of a finished task, e.g. published again.
    from djtasks.message import Message

    m = Message(id=done.id, task="tests.app.tasks.add", args=[1, 1], kwargs={},
                queue="default")
    any_broker.publish([(m, m.encode())])
    assert "purged 1 message(s) from queue 'default'; 0 task result(s)" in djtasks(
        "purge", "default", "--yes")
    assert TaskResult.objects.get(task_id=done.id).status == states.SUCCESS


def test_purge_refuses_a_bad_queue_name(any_broker):
    with pytest.raises(CommandError, match="is not a queue name"):
        djtasks("purge", "no spaces allowed", "--yes")


# -- queues ------------------------------------------------------------------

def test_queues_lists_what_tasks_routes_and_the_default_queue_name(any_broker):
    add.delay(1, 1)
    out = djtasks("queues")
    tasks_on_default = sum(1 for t in registry if control.task_queue(t.name) == "default")
    assert tasks_on_default > 3
    assert line(out, "default:") == f"default: 1  (DEFAULT_QUEUE, {tasks_on_default} tasks)"
    assert line(out, "other:") == "other: 0  (task tests.app.tasks.on_other_queue)"
    reports = line(out, "reports:")  # DJTASKS ROUTES in tests/settings.py
    assert reports == ("reports: 0  (task example_project.shop.tasks.generate_report, "
                       "route example_project.shop.tasks.generate_*)")


def test_queues_lists_the_queues_of_live_workers(any_broker):
    now = time.time()
    any_broker.register_worker("w9", {"hostname": "w9", "queues": ["only-w9-eats-this"],
                                      "last_seen": now, "lease": 30})
    any_broker.register_worker("gone", {"hostname": "gone", "queues": ["nobody-left"],
                                        "last_seen": now - 300, "lease": 30})
    out = djtasks("queues")
    assert line(out, "only-w9-eats-this:") == "only-w9-eats-this: 0  (worker w9)"
    assert "nobody-left" not in out


def test_queues_given_by_name_are_listed_too(any_broker):
    assert "adhoc: 0" in djtasks("queues", "adhoc")


def test_purging_a_chords_members_ends_the_chord_so_its_callback_does_not_wait(any_broker):
    from djtasks import chord

    result = chord(add.s(i, i) for i in range(3))(add.s(100))
    assert "purged 3 message(s)" in djtasks("purge", "default", "--yes")
    # A revoked member ends its chord FAILURE: the callback's get() raises.
    with pytest.raises(TaskRevokedError, match="purged from queue 'default'"):
        result.get(timeout=5)
    assert TaskResult.objects.get(task_id=result.id).status == states.FAILURE


def test_purging_a_revoked_chord_member_still_ends_its_chord(any_broker):
    from djtasks import chord, revoke

    result = chord(add.s(i, i) for i in range(2))(add.s(100))
    for member in result.parent.results:
        revoke(member.id)  # REVOKED, still queued: a worker would drop it and end the chord
    djtasks("purge", "default", "--yes")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=5)
