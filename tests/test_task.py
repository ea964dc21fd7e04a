"""``@shared_task`` and ``Task``: registration, options, calling, the
ID-not-object rule at enqueue, routing, countdown/eta and eager mode."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

import djtasks
from djtasks import EagerResult, Task, TaskArgumentError, shared_task, states
from djtasks.brokers import get_broker
from djtasks.exceptions import AlreadyRegistered, NotRegistered
from djtasks.models import TaskResult
from djtasks.registry import registry
from djtasks.result import AsyncResult
from tests.app import tasks
from tests.app.models import Item
from tests.app.tasks import add, count, echo, fail, flaky, on_other_queue, record, whoami


@pytest.fixture
def scratch() -> Iterator[list[str]]:
    """Names of tasks a test registers; unregistered afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry.unregister(name)


def configure(settings: Any, **djtasks_settings: Any) -> None:
    settings.DJTASKS = {**settings.DJTASKS, **djtasks_settings}


def depth(queue: str) -> int:
    return get_broker().queue_depths([queue])[queue]


# -- registration --------------------------------------------------------------


def test_shared_task_registers_under_module_and_function_name(scratch):
    @shared_task
    def double(x):
        return 2 * x

    scratch.append(double.name)
    assert isinstance(double, Task)
    assert double.name == "tests.test_task.double"
    assert registry.get("tests.test_task.double") is double


def test_shared_task_with_options_registers_too(scratch):
    @shared_task(queue="q1")
    def triple(x):
        return 3 * x

    scratch.append(triple.name)
    assert registry.get("tests.test_task.triple") is triple


def test_name_option_overrides_the_registered_name(scratch):
    @shared_task(name="billing.charge")
    def charge(amount):
        return amount

    scratch.append("billing.charge")
    assert charge.name == "billing.charge"
    assert registry.get("billing.charge") is charge
    assert "tests.test_task.charge" not in registry


def test_second_function_with_the_same_name_raises_already_registered(scratch):
    @shared_task(name="tests.duplicate")
    def first():
        return 1

    scratch.append("tests.duplicate")

    def second():
        return 2

    with pytest.raises(AlreadyRegistered, match="tests.duplicate"):
        shared_task(name="tests.duplicate")(second)
    assert registry.get("tests.duplicate") is first


def test_already_registered_message_names_both_functions(scratch):
    @shared_task(name="tests.duplicate")
    def first():
        return 1

    scratch.append("tests.duplicate")

    def second():
        return 2

    with pytest.raises(AlreadyRegistered) as info:
        shared_task(name="tests.duplicate")(second)
    assert "first" in str(info.value) and "second" in str(info.value)


def test_registering_the_same_function_again_replaces_it(scratch):
    def again():
        return 1

    a = shared_task(again)
    scratch.append(a.name)
    b = shared_task(again)
    assert registry.get(a.name) is b


def test_unknown_decorator_option_is_a_type_error(scratch):
    def task_fn():
        return 1

    with pytest.raises(TypeError, match="routing_key"):
        shared_task(routing_key="x")(task_fn)
    assert "tests.test_task.task_fn" not in registry


@pytest.mark.parametrize("option,value", [
    ("priority", 10),
    ("priority", -1),
    ("queue", "a b"),
    ("queue", ""),
    ("max_retries", -1),
    ("default_retry_delay", -5),
    ("autoretry_for", (ValueError, "OSError")),
    ("expires", -1),
])
def test_bad_decorator_option_value_is_a_type_error(scratch, option, value):
    def task_fn():
        return 1

    with pytest.raises(TypeError, match=option):
        shared_task(**{option: value})(task_fn)
    assert "tests.test_task.task_fn" not in registry


def test_shared_task_on_a_non_callable_is_a_type_error():
    with pytest.raises(TypeError):
        shared_task("not a function")


def test_send_task_with_an_unknown_name_raises_not_registered():
    with pytest.raises(NotRegistered, match=re.escape("'no.such.task'")):
        djtasks.send_task("no.such.task", args=[1])


def test_not_registered_is_a_key_error():
    with pytest.raises(KeyError):
        registry.get("no.such.task")


# -- calling inline -------------------------------------------------------------


def test_plain_call_runs_the_function_inline():
    assert add(2, 3) == 5


@pytest.mark.django_db
def test_plain_call_writes_no_result_row():
    add(2, 3)
    assert TaskResult.objects.count() == 0


def test_plain_call_of_bound_task_has_called_directly_true():
    info = whoami()
    assert info["called_directly"] is True
    assert info["task"] == "tests.app.tasks.whoami"


def test_apply_returns_an_eager_result_with_the_value():
    result = add.apply(args=[2, 3])
    assert isinstance(result, EagerResult)
    assert result.status == states.SUCCESS
    assert result.successful()
    assert result.get() == 5


def test_apply_runs_with_a_request_that_is_not_called_directly():
    info = whoami.apply(task_id="given-id").get()
    assert info["called_directly"] is False
    assert info["id"] == "given-id"


def test_apply_of_failing_task_returns_failure_with_the_exception(settings):
    configure(settings, EAGER_PROPAGATES=False)
    result = fail.apply(args=["boom"])
    assert result.status == states.FAILURE
    assert result.failed()
    assert isinstance(result.result, ValueError)
    assert str(result.result) == "boom"
    with pytest.raises(ValueError, match="boom"):
        result.get()


def test_apply_of_failing_task_reraises_when_eager_propagates(settings):
    # Celery: apply(throw=task_eager_propagates).
    settings.DJTASKS = {**settings.DJTASKS, "EAGER_PROPAGATES": True}
    with pytest.raises(ValueError, match="boom"):
        fail.apply(args=["boom"])


def test_apply_runs_retries_eagerly_until_success(counter):
    key = counter("flaky")
    result = flaky.apply(args=[key, 3])
    assert result.get() == 3
    assert count(key) == 3


def test_apply_stops_retrying_at_max_retries(settings, counter):
    configure(settings, EAGER_PROPAGATES=False)
    key = counter("flaky")
    result = flaky.apply(args=[key, 10])  # max_retries=2: three runs in all
    assert result.status == states.FAILURE
    assert isinstance(result.result, OSError)
    assert count(key) == 3


def test_apply_rejects_a_model_instance_like_delay():
    with pytest.raises(TaskArgumentError):
        add.apply(args=[Item(pk=1, name="x"), 1])


# -- the ID-not-object rule at enqueue -----------------------------------------


def argument_error(call: Callable[[], Any]) -> str:
    with pytest.raises(TaskArgumentError) as info:
        call()
    assert isinstance(info.value, TypeError)
    return str(info.value)


@pytest.mark.django_db
def test_model_instance_argument_names_task_parameter_and_pk():
    item = Item.objects.create(name="widget")
    message = argument_error(lambda: add.delay(item, 1))
    assert message.startswith("add(x=<Item: ")
    assert "pass x.pk instead of the Item instance" in message
    assert message.endswith("(at args[0])")


@pytest.mark.django_db
def test_model_instance_keyword_argument_names_the_keyword():
    item = Item.objects.create(name="widget")
    message = argument_error(lambda: add.delay(1, y=item))
    assert "add(y=<Item: " in message
    assert "pass y.pk instead of the Item instance" in message
    assert "(at kwargs['y'])" in message


@pytest.mark.django_db
def test_queryset_argument_is_a_task_argument_error_suggesting_values_list():
    Item.objects.create(name="widget")
    message = argument_error(lambda: add.delay(Item.objects.all(), 1))
    assert message.startswith("add(x=")
    assert "list(x.values_list('pk', flat=True))" in message
    assert "QuerySet of Item" in message


@pytest.mark.django_db
def test_queryset_argument_error_does_not_evaluate_the_queryset(django_assert_num_queries):
    Item.objects.create(name="widget")
    items = Item.objects.all()
    with django_assert_num_queries(0):
        argument_error(lambda: add.delay(items, 1))


@pytest.mark.django_db
def test_nested_model_instance_in_kwargs_shows_its_path():
    item = Item.objects.create(name="widget")
    message = argument_error(lambda: echo.delay(items=[1, 2, item]))
    assert message.startswith("echo(items[2]=<Item: ")
    assert "pass items[2].pk instead of the Item instance" in message
    assert "(at kwargs['items'][2])" in message


@pytest.mark.django_db
def test_lazy_request_user_argument_says_pass_request_user_pk():
    user = User.objects.create_user("bob")
    lazy_user = SimpleLazyObject(lambda: user)
    message = argument_error(lambda: add.delay(lazy_user, 1))
    assert message.startswith("add(x=")
    assert "pass x.pk instead of the lazy User" in message
    assert "request.user.pk" in message


def test_open_file_argument_suggests_a_path(tmp_path):
    path = tmp_path / "upload.csv"
    path.write_text("a,b\n")
    with open(path) as f:
        message = argument_error(lambda: add.delay(f, 1))
    assert message.startswith("add(x=")
    assert "pass a path or a storage name instead of the file object x" in message


def test_set_argument_suggests_sorted_or_list():
    message = argument_error(lambda: add.delay({3, 1}, 1))
    assert message.startswith("add(x={")
    assert "pass sorted(x) or list(x) instead of a set" in message


def test_argument_beyond_named_parameters_is_named_by_index():
    message = argument_error(lambda: echo.delay(1, b"raw"))
    assert "echo(args[1]=b'raw')" in message


def test_bound_task_argument_names_skip_self():
    @shared_task(bind=True, name="tests.bound_takes_item")
    def takes_item(self, item_id):
        return item_id

    try:
        message = argument_error(lambda: takes_item.delay(Item(pk=3, name="x")))
    finally:
        registry.unregister("tests.bound_takes_item")
    assert "pass item.pk instead of the Item instance" in message
    assert "(at args[0])" in message


def _model_instance() -> Any:
    return Item.objects.create(name="widget")


def _queryset() -> Any:
    return Item.objects.all()


def _nested_in_kwargs() -> Any:
    return [1, 2, Item.objects.create(name="widget")]


def _lazy_user() -> Any:
    user = User.objects.create_user("carol")
    return SimpleLazyObject(lambda: user)


def _open_file() -> Any:
    return open(__file__)


def _a_set() -> Any:
    return {1, 2}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("make_bad", [
    _model_instance, _queryset, _nested_in_kwargs, _lazy_user, _open_file, _a_set,
], ids=["model", "queryset", "nested", "lazy-user", "file", "set"])
def test_rejected_argument_writes_no_row_and_publishes_nothing(broker, make_bad):
    bad = make_bad()
    try:
        with pytest.raises(TaskArgumentError):
            echo.delay(1, items=bad)
    finally:
        if isinstance(bad, io.IOBase):
            bad.close()
    assert TaskResult.objects.count() == 0
    assert broker.queue_depths(["default"])["default"] == 0
    assert broker.scheduled_count() == 0


@pytest.mark.django_db(transaction=True)
def test_rejected_argument_inside_atomic_publishes_nothing_at_commit(broker):
    with transaction.atomic(), pytest.raises(TaskArgumentError):
        echo.delay(items={1, 2})
    assert TaskResult.objects.count() == 0
    assert broker.queue_depths(["default"])["default"] == 0


@pytest.mark.django_db(transaction=True)
def test_infinite_float_argument_is_enqueued(broker):
    # Not a database error from the PENDING row: the codec must write
    # standard JSON (see test_codec), or refuse the value as a TaskArgumentError.
    result = add.delay(math.inf, 1)
    assert TaskResult.objects.filter(task_id=result.id).exists()
    assert broker.queue_depths(["default"])["default"] == 1


# -- delay / apply_async ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_delay_writes_a_pending_row_and_publishes_to_the_default_queue(broker):
    result = add.delay(2, 3)
    assert isinstance(result, AsyncResult)
    row = TaskResult.objects.get(task_id=result.id)
    assert (row.status, row.task_name, row.queue) == (states.PENDING, "tests.app.tasks.add",
                                                      "default")
    assert broker.queue_depths(["default"])["default"] == 1


@pytest.mark.django_db(transaction=True)
def test_delayed_task_runs_in_a_burst_worker(burst):
    result = add.delay(2, 3)
    burst()
    assert result.get(timeout=5) == 5


@pytest.mark.django_db(transaction=True)
def test_send_task_publishes_the_registered_task_by_name(burst):
    result = djtasks.send_task("tests.app.tasks.add", args=[4, 5])
    assert isinstance(result, AsyncResult)
    assert TaskResult.objects.get(task_id=result.id).task_name == "tests.app.tasks.add"
    burst()
    assert result.get(timeout=5) == 9


@pytest.mark.django_db(transaction=True)
def test_send_task_takes_apply_async_options(broker):
    result = djtasks.send_task("tests.app.tasks.add", args=[4, 5], queue="elsewhere",
                               task_id="chosen-id")
    assert result.id == "chosen-id"
    assert depth("elsewhere") == 1


@pytest.mark.django_db(transaction=True)
def test_apply_async_with_task_id_uses_it(broker):
    result = add.apply_async((1, 2), task_id="my-task-id")
    assert result.id == "my-task-id"
    assert TaskResult.objects.filter(task_id="my-task-id").exists()


@pytest.mark.django_db(transaction=True)
def test_a_generated_task_id_is_a_uuid4_string_as_celerys(broker):
    import uuid

    for _ in range(50):
        task_id = add.delay(1, 2).id
        parsed = uuid.UUID(task_id)
        assert str(parsed) == task_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.django_db(transaction=True)
def test_apply_async_args_must_be_a_list_or_tuple(broker):
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        add.apply_async("12")
    assert TaskResult.objects.count() == 0


# -- routing ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_route_by_exact_task_name_chooses_the_queue(broker, settings):
    configure(settings, ROUTES={"tests.app.tasks.add": {"queue": "math"}})
    result = add.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).queue == "math"
    assert depth("math") == 1
    assert depth("default") == 0


@pytest.mark.django_db(transaction=True)
def test_routes_changed_after_a_first_delay_are_followed(broker, settings):
    add.delay(1, 2)  # the task's routing is kept per settings: it must not outlive them
    configure(settings, ROUTES={"tests.app.tasks.add": {"queue": "math", "priority": 4}})
    result = add.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).queue == "math"
    assert TaskResult.objects.get(task_id=result.id).priority == 4


@pytest.mark.django_db(transaction=True)
def test_route_by_glob_pattern_chooses_the_queue(broker, settings):
    configure(settings, ROUTES={"tests.app.*": {"queue": "app"}})
    add.delay(1, 2)
    assert depth("app") == 1


@pytest.mark.django_db(transaction=True)
def test_route_glob_that_does_not_match_leaves_the_default_queue(broker, settings):
    configure(settings, ROUTES={"reports.*": {"queue": "reports"}})
    add.delay(1, 2)
    assert depth("default") == 1
    assert depth("reports") == 0


@pytest.mark.django_db(transaction=True)
def test_exact_route_wins_over_a_glob_listed_first(broker, settings):
    configure(settings, ROUTES={"tests.*": {"queue": "glob"},
                                "tests.app.tasks.add": {"queue": "exact"}})
    add.delay(1, 2)
    assert depth("exact") == 1
    assert depth("glob") == 0


@pytest.mark.django_db(transaction=True)
def test_explicit_queue_wins_over_routes(broker, settings):
    configure(settings, ROUTES={"tests.app.tasks.add": {"queue": "math"}})
    add.apply_async((1, 2), queue="explicit")
    assert depth("explicit") == 1
    assert depth("math") == 0


@pytest.mark.django_db(transaction=True)
def test_task_queue_option_is_used_without_routes(broker):
    on_other_queue.delay("k")
    assert depth("other") == 1
    assert depth("default") == 0


@pytest.mark.django_db(transaction=True)
def test_task_queue_option_wins_over_routes(broker, settings):
    # Celery merges the task's own routing attributes into the call options,
    # which take precedence over task_routes.
    configure(settings, ROUTES={"tests.app.tasks.on_other_queue": {"queue": "routed"}})
    on_other_queue.delay("k")
    assert depth("other") == 1
    assert depth("routed") == 0


@pytest.mark.django_db(transaction=True)
def test_explicit_queue_wins_over_task_queue_option(broker):
    on_other_queue.apply_async(("k",), queue="explicit")
    assert depth("explicit") == 1
    assert depth("other") == 0


@pytest.mark.django_db(transaction=True)
def test_default_queue_setting_is_used_when_nothing_routes(broker, settings):
    configure(settings, DEFAULT_QUEUE="main")
    result = add.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).queue == "main"
    assert depth("main") == 1


def test_bad_queue_name_in_call_is_a_type_error():
    with pytest.raises(TypeError, match="queue"):
        add.apply_async((1, 2), queue="two words")


# -- priority -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("priority", [0, 9])
def test_priority_0_to_9_is_accepted(broker, priority):
    result = add.apply_async((1, 2), priority=priority)
    assert TaskResult.objects.get(task_id=result.id).priority == priority
    assert depth("default") == 1


@pytest.mark.parametrize("priority", [-1, 10, True, 5.0, "9"])
def test_priority_outside_0_to_9_is_a_type_error(priority):
    with pytest.raises(TypeError, match="priority"):
        add.apply_async((1, 2), priority=priority)


@pytest.mark.django_db(transaction=True)
def test_route_priority_is_used_when_the_call_gives_none(broker, settings):
    configure(settings, ROUTES={"tests.app.tasks.add": {"priority": 7}})
    result = add.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).priority == 7


@pytest.mark.django_db(transaction=True)
def test_default_priority_setting_is_used_when_nothing_else_sets_one(broker, settings):
    configure(settings, DEFAULT_PRIORITY=4)
    result = add.delay(1, 2)
    assert TaskResult.objects.get(task_id=result.id).priority == 4


# -- countdown and eta --------------------------------------------------------


def test_countdown_and_eta_together_are_a_type_error():
    with pytest.raises(TypeError, match="countdown or eta"):
        add.apply_async((1, 2), countdown=10, eta=timezone.now())


def test_negative_countdown_is_a_type_error():
    with pytest.raises(TypeError, match="countdown"):
        add.apply_async((1, 2), countdown=-1)


def test_eta_that_is_not_a_datetime_is_a_type_error():
    with pytest.raises(TypeError, match="eta"):
        add.apply_async((1, 2), eta=1_800_000_000)


@pytest.mark.django_db(transaction=True)
def test_countdown_puts_the_message_in_the_scheduled_set_not_the_queue(broker):
    result = add.apply_async((1, 2), countdown=60)
    assert broker.scheduled_count() == 1
    assert broker.queue_depths(["default"])["default"] == 0
    row = TaskResult.objects.get(task_id=result.id)
    assert row.eta is not None
    assert timedelta(seconds=55) < row.eta - timezone.now() <= timedelta(seconds=60)


@pytest.mark.django_db(transaction=True)
def test_future_eta_puts_the_message_in_the_scheduled_set(broker):
    add.apply_async((1, 2), eta=timezone.now() + timedelta(minutes=5))
    assert broker.scheduled_count() == 1
    assert broker.queue_depths(["default"])["default"] == 0


@pytest.mark.django_db(transaction=True)
def test_countdown_message_is_not_run_by_a_burst_worker_before_it_is_due(burst):
    result = add.apply_async((1, 2), countdown=60)
    burst()
    assert result.status == states.PENDING


# -- ALWAYS_EAGER --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_always_eager_delay_runs_inline_and_returns_an_eager_result(broker, settings, counter):
    configure(settings, ALWAYS_EAGER=True)
    key = counter("eager")
    result = record.delay(key)
    assert isinstance(result, EagerResult)
    assert result.status == states.SUCCESS
    assert result.get() == 1
    assert count(key) == 1


@pytest.mark.django_db(transaction=True)
def test_always_eager_writes_no_row_and_publishes_nothing(broker, settings):
    configure(settings, ALWAYS_EAGER=True)
    add.delay(1, 2)
    assert TaskResult.objects.count() == 0
    assert depth("default") == 0


def test_always_eager_still_rejects_a_model_instance(settings):
    configure(settings, ALWAYS_EAGER=True)
    with pytest.raises(TaskArgumentError):
        add.delay(Item(pk=1, name="x"), 1)


@pytest.mark.django_db(transaction=True)
def test_always_eager_failure_is_held_by_the_result_by_default(settings):
    # Celery's task_eager_propagates defaults to False too.
    configure(settings, ALWAYS_EAGER=True)
    result = fail.delay("boom")
    assert result.status == "FAILURE"
    with pytest.raises(ValueError, match="boom"):
        result.get()


def test_always_eager_failure_propagates_with_eager_propagates(settings):
    configure(settings, ALWAYS_EAGER=True, EAGER_PROPAGATES=True)
    with pytest.raises(ValueError, match="boom"):
        fail.delay("boom")


@pytest.mark.django_db(transaction=True)
def test_always_eager_runs_retries_inline(settings, counter):
    configure(settings, ALWAYS_EAGER=True)
    key = counter("flaky")
    assert flaky.delay(key, 2).get() == 2
    assert count(key) == 2


@pytest.mark.django_db
def test_always_eager_inside_atomic_runs_only_at_commit(
    settings, counter, django_capture_on_commit_callbacks
):
    configure(settings, ALWAYS_EAGER=True)
    key = counter("eager")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = record.delay(key)
        assert result.status == states.PENDING
        assert count(key) == 0
    assert len(callbacks) == 1
    assert result.status == states.SUCCESS
    assert count(key) == 1


@pytest.mark.django_db(transaction=True)
def test_always_eager_inside_a_rolled_back_atomic_never_runs(settings, counter):
    configure(settings, ALWAYS_EAGER=True)
    key = counter("eager")

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        result = record.delay(key)
        raise Rollback
    assert result.status == states.PENDING
    assert count(key) == 0


@pytest.mark.django_db(transaction=True)
def test_always_eager_with_on_commit_false_runs_at_once_inside_atomic(settings, counter):
    configure(settings, ALWAYS_EAGER=True)
    key = counter("eager")
    with transaction.atomic():
        result = record.apply_async((key,), on_commit=False)
        assert result.status == states.SUCCESS
        assert count(key) == 1


def test_module_tasks_are_registered_by_autodiscovery():
    assert registry.get("tests.app.tasks.add") is tasks.add


@pytest.mark.parametrize("bad", ["", "has space", "tab\there", "new\nline", "é-unicode",
                                 "x" * 256])
def test_task_id_must_be_printable_ascii_without_spaces(bad):
    with pytest.raises(TypeError, match="printable ASCII"):
        add.build_message([1, 2], {}, task_id=bad)


def test_a_custom_task_id_travels_and_is_kept(broker):
    message = add.build_message([1, 2], {}, task_id="report-2026-06:acct/42")
    assert message.id == "report-2026-06:acct/42"
