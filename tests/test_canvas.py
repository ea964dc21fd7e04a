"""The canvas run by an in-process worker (``runworker --burst``) on real
Redis and the test database: links, errbacks, chains, groups, chords."""

import json

import pytest

import djtasks
from djtasks import GroupResult, chain, chord, group, signature, states
from djtasks.brokers import get_broker
from djtasks.models import TaskResult
from tests.app import canvas_tasks as ct
from tests.app import celery_tasks, tasks
from tests.app.tasks import _redis, count

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True, params=["redis", "db"])
def canvas_broker(request, settings, broker):
    """Each test runs on the Redis broker and on the database broker."""
    if request.param == "db":
        settings.DJTASKS = {**settings.DJTASKS, "BROKER_URL": "db://default"}
    return request.param


def drain(burst, rounds=10):
    """Burst until nothing is queued: a follow-up is published once its
    parent's row is stored, which may be after a burst saw empty queues."""
    for _ in range(rounds):
        burst()
        if not get_broker().queue_depths(["default"])["default"]:
            return
    raise AssertionError("the queue never drained")


def calls(counter):
    return [json.loads(c) for c in _redis().lrange(counter + ":calls", 0, -1)]


# -- signatures ----------------------------------------------------------------


def test_a_signature_is_a_json_dict_that_round_trips():
    sig = tasks.add.s(2).set(countdown=10)
    data = json.loads(json.dumps(sig))
    assert data == {"task": "tests.app.tasks.add", "args": [2], "kwargs": {},
                    "options": {"countdown": 10}, "immutable": False, "subtask_type": None}
    again = signature(data)
    assert again == sig and again.args == [2] and again.options == {"countdown": 10}


def test_partial_args_are_appended_to_the_new_ones_and_kwargs_merged():
    sig = ct.tsum.s(counter="a").clone([[1, 2]], {"counter": "b"})
    assert sig.args == [[1, 2]] and sig.kwargs == {"counter": "b"}
    assert tasks.add.s(2).clone([5]).args == [5, 2]  # Celery: new args first


def test_an_immutable_signature_ignores_new_args():
    assert tasks.add.si(1, 2).clone([99]).args == [1, 2]


def test_signature_by_name_with_options():
    sig = djtasks.signature("tests.app.tasks.add", args=(2, 2), countdown=5)
    assert sig.task == "tests.app.tasks.add" and sig.options == {"countdown": 5}
    assert sig() == 4  # a call runs inline


def test_an_unknown_signature_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="countdwn"):
        tasks.add.s(1, 2).set(countdwn=5)


def test_pipe_makes_chains_and_a_group_piped_into_a_task_a_chord():
    assert isinstance(tasks.add.s(1, 1) | tasks.add.s(2), chain)
    assert isinstance(group(tasks.add.s(1, 1)) | ct.tsum.s(), chord)
    flat = tasks.add.s(1, 1) | (tasks.add.s(2) | tasks.add.s(3))
    assert len(flat.tasks) == 3


def test_signature_delay_runs_with_partial_args(burst):
    result = tasks.add.s(2).delay(40)
    burst()
    assert result.get(timeout=5) == 42


# -- link and link_error ----------------------------------------------------------


def test_link_gets_the_result_prepended(burst, counter):
    c = counter("link")
    result = tasks.add.apply_async((2, 2), link=ct.note.s(c))
    drain(burst)
    assert result.get(timeout=5) == 4
    assert calls(c) == [4] and count(c) == 1
    link_row = TaskResult.objects.get(task_name="tests.app.canvas_tasks.note")
    assert link_row.parent_id == result.id and link_row.root_id == result.id


def test_an_immutable_link_gets_no_result(burst, counter):
    c = counter("link")
    tasks.add.apply_async((2, 2), link=ct.note.si("fixed", c))
    drain(burst)
    assert calls(c) == ["fixed"]


def test_link_error_is_called_once_celery_style_with_request_exc_and_traceback(burst, counter):
    c = counter("errback")
    result = ct.boom.apply_async((7,), link_error=ct.errback_new.s(c), link=ct.note.s(c))
    drain(burst)
    assert result.status == states.FAILURE
    assert count(c) == 1
    assert calls(c) == [[result.id, "tests.app.canvas_tasks.boom", "ValueError", "boom 7", True]]


def test_an_old_style_errback_gets_the_failed_task_id(burst, counter):
    c = counter("errback")
    result = ct.boom.apply_async(link_error=ct.errback_old.s(counter=c))
    drain(burst)
    assert calls(c) == [result.id]


def test_a_link_is_enqueued_once_when_its_task_runs_twice(burst, counter):
    # A rerun (acks_late after a worker died) finds the link's row claimed.
    c = counter("link")
    message = tasks.add.build_message((1, 2), {}, link=ct.note.s(c))
    from djtasks import workflow
    from djtasks.execute import execute

    outcome = execute(tasks.add, message, hostname="test")
    for _ in range(2):
        workflow.run_all([workflow.after(tasks.add, message, outcome)])
    drain(burst)
    assert count(c) == 1


# -- chains -------------------------------------------------------------------------


def test_a_chain_passes_each_result_on_and_links_parents(burst):
    result = (tasks.add.s(2, 2) | tasks.add.s(4) | tasks.add.s(8)).delay()
    drain(burst)
    assert result.get(timeout=5) == 16
    assert result.parent.get(timeout=5) == 8
    assert result.parent.parent.get(timeout=5) == 4
    first = result.parent.parent
    rows = {r.task_id: r for r in TaskResult.objects.all()}
    assert rows[result.id].parent_id == result.parent.id
    assert {r.root_id for r in rows.values()} == {first.id}
    again = djtasks.AsyncResult(result.id)  # read from the rows
    assert again.parent.id == result.parent.id
    assert [v for _, v in first.collect(timeout=5)] == [4, 8, 16]


def test_a_failed_link_stops_the_chain_and_calls_the_chains_errback_once(burst, counter):
    c = counter("errback")
    last = chain(tasks.add.s(1, 1), ct.boom.s(), tasks.add.s(100), tasks.add.s(1000)).apply_async(
        link_error=ct.errback_new.s(c))
    drain(burst)
    assert count(c) == 1  # Celery calls it never (celery#3317) or per task
    assert calls(c)[0][2:4] == ["ValueError", "boom 2"]
    # The tasks after the failure do not run; their rows say why.
    with pytest.raises(ValueError, match="boom 2"):
        last.get(timeout=5)
    assert TaskResult.objects.filter(task_name="tests.app.tasks.add",
                                     status=states.SUCCESS).count() == 1


# -- groups -------------------------------------------------------------------------


def test_a_group_returns_a_group_result_found_again_by_id(burst):
    res = group(tasks.add.s(i, i) for i in range(5)).apply_async()
    assert isinstance(res, GroupResult) and not res.ready()
    assert res.completed_count() == 0
    drain(burst)
    assert res.join(timeout=5) == [0, 2, 4, 6, 8]
    assert res.ready() and res.successful() and not res.failed()
    assert res.completed_count() == 5
    again = GroupResult.restore(res.id)
    assert [r.id for r in again.results] == [r.id for r in res.results]
    assert set(TaskResult.objects.values_list("group_id", flat=True)) == {res.id}


def test_a_group_with_a_failure_is_failed(burst):
    res = group(tasks.add.s(1, 1), ct.boom.s()).delay()
    drain(burst)
    assert res.ready() and res.failed() and not res.successful()
    assert res.completed_count() == 1


def test_map_starmap_and_chunks(burst):
    m = ct.double.map([1, 2, 3]).delay()
    s = tasks.add.starmap([(1, 2), (3, 4)]).delay()
    parts = tasks.add.chunks(zip(range(5), range(5), strict=True), 2).apply_async()
    drain(burst)
    assert m.get(timeout=5) == [2, 4, 6]
    assert s.get(timeout=5) == [3, 7]
    assert parts.join(timeout=5) == [[0, 2], [4, 6], [8]]


# -- chords -------------------------------------------------------------------------


def test_a_chord_calls_its_callback_once_with_the_results_in_order(burst, counter):
    c = counter("callback")
    result = chord(ct.double.s(i) for i in range(20))(ct.tsum.s(counter=c))
    drain(burst)
    assert result.get(timeout=5) == 2 * sum(range(20))
    assert count(c) == 1
    assert json.loads(_redis().lrange(c + ":args", 0, -1)[0]) == [2 * i for i in range(20)]
    assert isinstance(result.parent, GroupResult) and result.parent.completed_count() == 20
    assert isinstance(djtasks.AsyncResult(result.id).parent, GroupResult)


def test_a_chord_with_an_empty_header_calls_its_callback_with_nothing(burst):
    result = chord([])(ct.tsum.s())
    drain(burst)
    assert result.get(timeout=5) == 0


def test_a_failing_member_fails_the_chord_and_calls_its_errback_once(burst, counter):
    c = counter("errback")
    cb = counter("callback")
    header = [ct.double.s(1), ct.boom.s(2), ct.boom.s(3), ct.double.s(4)]
    result = chord(header)(ct.tsum.s(counter=cb).on_error(ct.errback_new.s(c)))
    drain(burst)
    assert count(cb) == 0
    assert count(c) == 1
    assert result.status == states.FAILURE
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=5)


def test_a_chord_member_counted_twice_still_calls_the_callback_once(burst, counter):
    c = counter("callback")
    result = chord([ct.double.s(1), ct.double.s(2)])(ct.tsum.s(counter=c))
    drain(burst)
    # The last member's follow-ups again, as after a rerun under acks_late.
    from djtasks import workflow
    from djtasks.message import Message

    row = TaskResult.objects.filter(group_id=result.parent.id).first()
    message = Message(id=row.task_id, task=row.task_name, args=[2], kwargs={},
                      queue="default", options=row.options, root_id=row.root_id)
    workflow._chord_members_done([message])
    drain(burst)
    assert count(c) == 1 and result.get(timeout=5) == 6


def test_a_chain_into_a_chord_and_on(burst):
    result = (tasks.add.s(1, 1) | group(ct.double.s(), ct.double.s()) | ct.tsum.s()
              | ct.double.s()).delay()
    drain(burst)
    assert result.get(timeout=5) == 16


# -- eager ----------------------------------------------------------------------------


@pytest.fixture
def eager(settings):
    settings.DJTASKS = {**settings.DJTASKS, "ALWAYS_EAGER": True}


def test_eager_chain_group_and_chord_run_here(eager, canvas_broker):
    assert (tasks.add.s(1, 1) | tasks.add.s(2)).delay().get() == 4
    assert group(tasks.add.s(i, i) for i in range(3)).delay().join() == [0, 2, 4]
    assert chord(ct.double.s(i) for i in range(3))(ct.tsum.s()).get() == 6


def test_eager_link_and_errback_run_here(eager, canvas_broker, counter):
    c = counter("eager")
    tasks.add.apply_async((1, 2), link=ct.note.s(c))
    ct.boom.apply_async((5,), link_error=ct.errback_new.s(c))
    assert calls(c)[0] == 3
    assert calls(c)[1][2:] == ["ValueError", "boom 5", True]


def test_a_revoked_member_ends_the_chord_failure(burst):
    result = chord([ct.double.s(1), ct.double.s(2)])(ct.tsum.s())
    djtasks.revoke(result.parent.results[0].id)
    drain(burst)
    assert result.status == states.FAILURE
    with pytest.raises(djtasks.exceptions.TaskRevokedError):
        result.get(timeout=5)



@pytest.mark.parametrize("member", ["ignore", "reject"])
def test_a_member_that_ignores_or_rejects_itself_ends_the_chord_failure(burst, counter, member):
    c = counter("chord-" + member)
    sig = celery_tasks.ignore_me.s(c) if member == "ignore" else celery_tasks.reject_me.s(c, False)
    result = chord([ct.double.s(1), sig])(ct.tsum.s())
    drain(burst)
    assert result.status == states.FAILURE
    assert _redis().get(c) == b"1"  # it ran once; its chord heard how it ended

def test_a_groups_and_a_chains_options_go_to_their_tasks(burst):
    res = group(tasks.add.s(1, 1), tasks.add.s(2, 2).set(queue="other")).apply_async(
        queue="reports", priority=7)
    last = chain(tasks.add.s(1, 1), tasks.add.s(1)).apply_async(queue="reports")
    rows = {r.task_id: r for r in TaskResult.objects.all()}
    first, second = res.results
    assert (rows[first.id].queue, rows[first.id].priority) == ("reports", 7)
    assert rows[second.id].queue == "other"
    assert rows[last.parent.id].queue == "reports"


def test_a_follow_up_too_big_to_send_fails_alone_and_spares_the_other_chains(burst, settings):
    big = (tasks.add.s("a" * 700, "b" * 700) | tasks.add.s("c") | tasks.add.s("d")).delay()
    small = (tasks.add.s(1, 2) | tasks.add.s(3)).delay()
    # Sent before the limit shrank: the next step of `big` is over it, `small`'s is not.
    settings.DJTASKS = {**settings.DJTASKS, "MAX_MESSAGE_BYTES": 1200}
    drain(burst)
    assert small.get(timeout=5) == 6
    assert big.parent.parent.get(timeout=5) == "a" * 700 + "b" * 700
    refused = TaskResult.objects.get(task_id=big.parent.id)
    assert refused.status == states.FAILURE
    assert refused.exception_type.endswith("TaskArgumentError")
    assert "MAX_MESSAGE_BYTES" in refused.exception_message
    # The rest of its chain will not run: waiting on it raises, not hangs.
    with pytest.raises(djtasks.exceptions.TaskArgumentError):
        big.get(timeout=5)
