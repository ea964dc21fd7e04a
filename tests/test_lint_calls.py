"""The call-site lint of the ID-not-object rule (djtasks.lint.calls).

Each rule on a few lines of source, then both directions on a corpus of
real-looking Django modules (tests/lint_corpus: every planted bug reported,
nothing else), then the example project, which must be clean.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection
from pathlib import Path

import pytest

from djtasks.lint.calls import Finding, installed_model_names, lint_paths, lint_source

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "lint_corpus"
MODELS = frozenset({"User", "Customer", "Coupon", "Invoice", "Order", "OrderLine", "Payment",
                    "Plan", "Profile", "Report", "Shipment", "Subscription"})


def lint(source: str, *, models: Collection[str] = MODELS) -> list[Finding]:
    return lint_source(textwrap.dedent(source), "views.py", model_names=models)


def messages(source: str, *, models: Collection[str] = MODELS) -> list[str]:
    return [f.message for f in lint(source, models=models)]


def calls(source: str) -> list[str]:
    """The task call each finding shows: ``charge.delay(..., order)``."""
    return [f.message.split("): '", 1)[0] + ")" for f in lint(source)]


def subjects(source: str) -> list[str]:
    """The argument each finding names, and what it is: ``'order' is an Order instance``."""
    return ["'" + f.message.split("): '", 1)[1].split(" from line")[0].split(";")[0]
            for f in lint(source)]


# -- output ----------------------------------------------------------------


def test_a_view_passing_the_user_from_form_save_is_reported_with_line_and_fix() -> None:
    found = lint("""\
        def signup(request):
            form = SignUpForm(request.POST)
            if form.is_valid():
                user = form.save()
                send_welcome_email.delay(user)
    """)
    assert [str(f) for f in found] == [
        "views.py:5:34: DJT101 send_welcome_email.delay(user): 'user' is a model instance"
        " from line 4 (form.save()); pass user.pk"
    ]


def test_a_known_model_is_named_and_its_origin_left_out() -> None:
    assert messages("""\
        def v(request, pk):
            user = User.objects.get(pk=pk)
            send_welcome_email.delay(user)
    """) == ["send_welcome_email.delay(user): 'user' is a User instance from line 2; pass user.pk"]


def test_line_and_column_point_at_the_argument_one_based() -> None:
    [finding] = lint("""\
        order = Order.objects.get(pk=1)
        charge.delay(
            1, order)
    """)
    assert (finding.line, finding.col, finding.code) == (3, 8, "DJT101")


def test_other_arguments_are_elided_from_the_call_shown() -> None:
    assert messages("""\
        order = Order.objects.get(pk=1)
        charge.delay(1, order, 2, force=True)
    """) == ["charge.delay(..., order, ...): 'order' is an Order instance from line 1;"
             " pass order.pk"]


# -- where an object comes from --------------------------------------------


@pytest.mark.parametrize("method", ["get", "create", "first", "last", "earliest", "latest",
                                    "get_by_natural_key", "create_user", "create_superuser"])
def test_manager_methods_returning_an_instance_are_reported(method: str) -> None:
    assert messages(f"""\
        user = User.objects.{method}()
        send.delay(user)
    """) == ["send.delay(user): 'user' is a User instance from line 1; pass user.pk"]


def test_filter_then_first_is_an_instance() -> None:
    assert messages("""\
        shipment = Shipment.objects.filter(order_id=1).first()
        cancel.delay(shipment)
    """) == ["cancel.delay(shipment): 'shipment' is a Shipment instance from line 1;"
             " pass shipment.pk"]


def test_select_related_then_get_is_an_instance() -> None:
    assert len(lint("""\
        order = Order.objects.select_related("customer").get(pk=1)
        charge.delay(order)
    """)) == 1


def test_default_manager_and_base_manager_are_managers() -> None:
    assert len(lint("""\
        order = Order._default_manager.get(pk=1)
        invoice = Invoice._base_manager.get(pk=1)
        charge.delay(order, invoice)
    """)) == 2


def test_a_models_module_attribute_names_the_model() -> None:
    assert messages("""\
        order = shop_models.Order.objects.get(pk=1)
        charge.delay(order)
    """) == ["charge.delay(order): 'order' is an Order instance from line 1; pass order.pk"]


def test_an_upper_case_constant_is_not_a_model() -> None:
    assert lint("""\
        value = CONFIG.objects.get("user")
        send.delay(value)
    """) == []


def test_a_custom_manager_of_a_known_model_is_a_manager() -> None:
    assert len(lint("""\
        order = Order.paid.get(pk=1)
        charge.delay(order)
    """)) == 1


def test_get_user_model_objects_is_a_user_manager() -> None:
    assert messages("""\
        user = get_user_model().objects.get(pk=1)
        send.delay(user)
    """) == ["send.delay(user): 'user' is a User instance from line 1; pass user.pk"]


def test_await_aget_and_acreate_are_instances() -> None:
    assert [f.line for f in lint("""\
        async def v(request):
            customer = await Customer.objects.aget(pk=1)
            order = await Order.objects.acreate(customer=customer)
            notify.delay(customer, order)
    """)] == [4, 4]


def test_get_or_create_unpacks_the_instance_not_the_flag() -> None:
    assert messages("""\
        coupon, created = Coupon.objects.get_or_create(code="X")
        apply.delay(coupon, created)
    """) == ["apply.delay(coupon, ...): 'coupon' is a Coupon instance from line 1;"
             " pass coupon.pk"]


def test_update_or_create_unpacks_the_instance() -> None:
    assert len(lint("""\
        (profile, _) = Profile.objects.update_or_create(user_id=1)
        sync.delay(profile)
    """)) == 1


def test_get_object_or_404_takes_the_model_from_its_first_argument() -> None:
    assert messages("""\
        def v(request, pk):
            invoice = get_object_or_404(Invoice, pk=pk)
            send.delay(invoice)
    """) == ["send.delay(invoice): 'invoice' is an Invoice instance from line 2;"
             " pass invoice.pk"]


def test_get_object_or_404_of_a_queryset_takes_its_model() -> None:
    assert "an Order instance" in messages("""\
        order = get_object_or_404(Order.objects.filter(paid=True), pk=1)
        charge.delay(order)
    """)[0]


def test_request_user_passed_inline_is_reported() -> None:
    assert messages("""\
        def v(request):
            notify.delay(request.user)
    """) == ["notify.delay(request.user): 'request.user' is a User instance;"
             " pass request.user.pk"]


def test_self_request_user_is_reported() -> None:
    assert "pass self.request.user.pk" in messages("""\
        class V(View):
            def post(self, request):
                notify.delay(user=self.request.user)
    """)[0]


def test_a_name_bound_from_request_user_is_reported() -> None:
    assert messages("""\
        def v(request):
            user = request.user
            notify.delay(user)
    """) == ["notify.delay(user): 'user' is a User instance from line 2; pass user.pk"]


def test_await_request_auser_is_a_user() -> None:
    assert len(lint("""\
        async def v(request):
            user = await request.auser()
            notify.delay(user)
    """)) == 1


def test_self_object_in_a_view_is_an_instance_of_its_model() -> None:
    assert messages("""\
        class InvoiceCreate(CreateView):
            model = Invoice
            def form_valid(self, form):
                response = super().form_valid(form)
                send.delay(self.object)
                return response
    """) == ["send.delay(self.object): 'self.object' is an Invoice instance; pass self.object.pk"]


def test_self_get_object_in_a_view_without_a_model_is_a_model_instance() -> None:
    assert messages("""\
        class Detail(LoginRequiredMixin, generic.DetailView):
            def post(self, request, pk):
                invoice = self.get_object()
                send.delay(invoice)
    """) == ["send.delay(invoice): 'invoice' is a model instance from line 3"
             " (self.get_object()); pass invoice.pk"]


def test_the_queryset_attribute_gives_a_view_its_model() -> None:
    assert "a Subscription QuerySet" in messages("""\
        class List(generics.ListAPIView):
            queryset = Subscription.objects.filter(active=True)
            def post(self, request):
                sync.delay(self.get_queryset())
    """)[0]


def test_self_object_outside_a_view_class_is_not_reported() -> None:
    assert lint("""\
        class Notifier:
            def __init__(self, object_id):
                self.object = object_id
            def send(self):
                send.delay(self.object, self.get_object())
    """) == []


def test_form_instance_is_a_model_instance() -> None:
    assert messages("""\
        def v(request):
            profile_form = ProfileForm(request.POST)
            sync.delay(profile_form.instance)
    """) == ["sync.delay(profile_form.instance): 'profile_form.instance' is a model instance;"
             " pass profile_form.instance.pk"]


def test_serializer_save_is_a_model_instance_with_its_arguments_elided() -> None:
    assert messages("""\
        def perform_create(self, serializer):
            subscription = serializer.save(owner=self.request.user)
            activate.delay(subscription)
    """) == ["activate.delay(subscription): 'subscription' is a model instance from line 2"
             " (serializer.save(...)); pass subscription.pk"]


def test_a_camel_case_or_numbered_form_name_is_a_form() -> None:
    assert len(lint("""\
        def v(request):
            userForm, form2 = UserForm(request.POST), UserForm(request.POST)
            send.delay(userForm.save(), form2.save())
    """)) == 2


def test_save_on_a_name_merely_containing_form_is_not_reported() -> None:
    assert lint("""\
        result = platform.save()
        formset_rows = formset.save()
        publish.delay(result, formset_rows)
    """) == []


def test_instance_of_a_model_signal_receiver_is_reported() -> None:
    assert messages("""\
        @receiver(post_save, sender=Order)
        def reindex(sender, instance, created, **kwargs):
            index.delay(instance)
    """) == ["index.delay(instance): 'instance' is an Order instance from line 2;"
             " pass instance.pk"]


def test_a_receiver_for_auth_user_model_gets_a_user() -> None:
    assert "'instance' is a User instance" in messages("""\
        @receiver(post_save, sender=settings.AUTH_USER_MODEL)
        def welcome(sender, instance=None, created=False, **kwargs):
            send.delay(instance)
    """)[0]


def test_instance_of_a_receiver_without_sender_is_a_model_instance() -> None:
    assert messages("""\
        @receiver([post_save, post_delete])
        def reindex(sender, instance, **kwargs):
            index.delay(instance)
    """) == ["index.delay(instance): 'instance' is a model instance from line 2"
             " (post_save receiver); pass instance.pk"]


def test_instance_of_a_custom_signal_receiver_is_not_reported() -> None:
    assert lint("""\
        @receiver(order_paid)
        def on_paid(sender, instance, **kwargs):
            index.delay(instance)
    """) == []


# -- QuerySets and loops ---------------------------------------------------


def test_a_queryset_bound_to_a_name_is_reported_with_the_values_list_fix() -> None:
    assert messages("""\
        orders = Order.objects.filter(paid=True).order_by("-placed")
        export.delay(orders)
    """) == ["export.delay(orders): 'orders' is an Order QuerySet from line 1;"
             " pass list(orders.values_list('pk', flat=True))"]


def test_a_queryset_passed_inline_is_reported() -> None:
    assert messages("""\
        export.delay(Order.objects.all())
    """) == ["export.delay(Order.objects.all()): 'Order.objects.all()' is an Order QuerySet;"
             " pass list(Order.objects.all().values_list('pk', flat=True))"]


def test_an_unwrapped_values_list_is_a_queryset_fixed_by_list() -> None:
    assert messages("""\
        ids = Order.objects.filter(paid=True).values_list("pk", flat=True)
        export.delay(ids)
    """) == ["export.delay(ids): 'ids' is an Order QuerySet from line 1; pass list(ids)"]


def test_a_chain_on_a_name_bound_to_a_queryset_continues_it() -> None:
    assert subjects("""\
        orders = Order.objects.filter(paid=True)
        export.delay(orders.exclude(total=0), orders.first(), orders.count(), orders.exists())
    """) == ["'orders.exclude(total=0)' is an Order QuerySet",
             "'orders.first()' is an Order instance"]


def test_a_loop_variable_over_a_queryset_is_an_instance() -> None:
    assert messages("""\
        for order in Order.objects.filter(paid=True):
            receipt.delay(order)
    """) == ["receipt.delay(order): 'order' is an Order instance from line 1; pass order.pk"]


def test_a_loop_over_iterator_or_enumerate_of_a_queryset_gives_instances() -> None:
    assert [f.line for f in lint("""\
        orders = Order.objects.all()
        for order in orders.iterator(chunk_size=100):
            receipt.delay(order)
        for index, order in enumerate(orders):
            receipt.delay(order, index)
    """)] == [3, 5]


def test_a_loop_over_values_list_is_not_an_instance() -> None:
    assert lint("""\
        for order in Order.objects.values_list("pk", flat=True):
            receipt.delay(order)
    """) == []


def test_a_comprehension_over_a_queryset_binds_instances() -> None:
    assert [f.message for f in lint("""\
        results = [receipt.delay(o) for o in Order.objects.all()]
        ids = [o.pk for o in Order.objects.all()]
        receipt.delay(ids)
    """)] == ["receipt.delay(o): 'o' is an Order instance from line 1; pass o.pk"]


def test_indexing_a_queryset_is_an_instance_and_slicing_a_queryset() -> None:
    assert subjects("""\
        lines = OrderLine.objects.filter(order_id=1)
        reprice.delay(lines[0], lines[:10])
    """) == ["'lines[0]' is an OrderLine instance", "'lines[:10]' is an OrderLine QuerySet"]


def test_a_related_manager_of_an_instance_is_a_queryset() -> None:
    assert messages("""\
        def v(request):
            for line in request.user.orders.all():
                reprice.delay(line)
    """) == ["reprice.delay(line): 'line' is a model instance from line 2"
             " (loop over request.user.orders.all()); pass line.pk"]


def test_get_on_an_attribute_of_an_instance_is_not_reported() -> None:
    # order.metadata may be a dict (JSONField): only QuerySet methods mark a related manager
    assert lint("""\
        order = Order.objects.get(pk=1)
        tag.delay(order.metadata.get("tag"), order.items.count())
    """) == []


# -- relations -------------------------------------------------------------


def test_an_attribute_named_after_a_model_is_a_relation_fixed_with_its_id() -> None:
    assert messages("""\
        order = Order.objects.get(pk=1)
        notify.delay(order.customer)
    """) == ["notify.delay(order.customer): 'order.customer' is a Customer instance;"
             " pass order.customer_id"]


def test_a_snake_case_attribute_names_a_model_too() -> None:
    assert "an OrderLine instance" in messages("""\
        shipment = Shipment.objects.get(pk=1)
        pack.delay(shipment.order_line)
    """)[0]


def test_relations_chain_through_instances() -> None:
    assert messages("""\
        def v(request):
            sync.delay(request.user.profile.plan)
    """) == ["sync.delay(request.user.profile.plan): 'request.user.profile.plan' is a Plan"
             " instance; pass request.user.profile.plan_id"]


def test_an_attribute_not_named_after_a_model_is_not_reported() -> None:
    assert lint("""\
        report = Report.objects.get(pk=1)
        build.delay(report.owner, report.status, report.customer_id, report.pk)
    """) == []


def test_relations_are_only_known_from_model_names() -> None:
    assert lint("""\
        order = Order.objects.get(pk=1)
        notify.delay(order.customer)
    """, models=()) == []


def test_a_relation_bound_to_a_name_is_fixed_with_pk() -> None:
    assert "pass customer.pk" in messages("""\
        order = Order.objects.get(pk=1)
        customer = order.customer
        notify.delay(customer)
    """)[0]


# -- scope and source order ------------------------------------------------


def test_rebinding_to_the_pk_clears_the_name() -> None:
    assert lint("""\
        def v(request):
            user = form.save()
            user = user.pk
            send.delay(user)
    """) == []


def test_a_binding_from_request_user_pk_is_harmless() -> None:
    assert lint("""\
        def v(request):
            user_id = request.user.pk
            user = int(request.POST["user"])
            send.delay(user_id, user, request.user.id)
    """) == []


def test_a_call_before_the_binding_is_not_reported() -> None:
    assert lint("""\
        def v(request, order):
            charge.delay(order)
            order = Order.objects.get(pk=1)
    """) == []


def test_bindings_do_not_leak_between_functions() -> None:
    assert lint("""\
        def a(request):
            order = Order.objects.get(pk=1)

        def b(order):
            charge.delay(order)
    """) == []


def test_module_level_bindings_are_tracked() -> None:
    assert [f.line for f in lint("""\
        ADMIN = User.objects.get(username="admin")
        notify.delay(ADMIN)
    """)] == [2]


def test_lambdas_and_nested_functions_see_the_enclosing_bindings() -> None:
    assert [f.line for f in lint("""\
        def v(request):
            order = Order.objects.get(pk=1)
            transaction.on_commit(lambda: charge.delay(order))
            def later():
                charge.delay(order)
            transaction.on_commit(later)
    """)] == [3, 5]


def test_a_parameter_shadows_an_enclosing_binding() -> None:
    assert lint("""\
        def v(request):
            order = Order.objects.get(pk=1)
            run(lambda order: charge.delay(order))
            def later(order):
                charge.delay(order)
    """) == []


def test_a_walrus_binds_a_name() -> None:
    assert len(lint("""\
        if (order := Order.objects.filter(paid=False).first()) is not None:
            charge.delay(order)
    """)) == 1


# -- which arguments are checked -------------------------------------------


def test_delay_keyword_arguments_are_checked() -> None:
    assert messages("""\
        order = Order.objects.get(pk=1)
        charge.delay(1, order=order)
    """) == ["charge.delay(..., order=order): 'order' is an Order instance from line 1;"
             " pass order.pk"]


def test_apply_async_args_and_kwargs_are_checked_but_not_its_options() -> None:
    assert [f.col for f in lint("""\
        order = Order.objects.get(pk=1)
        charge.apply_async(args=[order], kwargs={"o": order}, headers={"o": order}, countdown=5)
    """)] == [26, 47]


def test_apply_async_positional_args_and_kwargs_are_checked() -> None:
    assert calls("""\
        order = Order.objects.get(pk=1)
        tasks.charge.apply_async((order,), {"again": order})
    """) == ["tasks.charge.apply_async((order,), ...)",
              "tasks.charge.apply_async(..., {'again': order})"]


def test_celery_on_commit_forms_are_checked_like_delay_and_apply_async() -> None:
    assert calls("""\
        order = Order.objects.get(pk=1)
        charge.delay_on_commit(order)
        charge.apply_async_on_commit(args=[order])
    """) == ["charge.delay_on_commit(order)", "charge.apply_async_on_commit(args=[order])"]


def test_apply_async_kwargs_given_as_dict_call_are_checked() -> None:
    assert len(lint("""\
        order = Order.objects.get(pk=1)
        charge.apply_async(kwargs=dict(order=order, force=True))
    """)) == 1


def test_send_task_args_and_kwargs_are_checked_and_the_name_kept() -> None:
    assert calls("""\
        invoice = Invoice.objects.get(pk=1)
        app.send_task("billing.archive", args=[invoice], countdown=60)
        send_task("billing.archive", (1,), {"invoice": invoice})
    """) == ["app.send_task('billing.archive', args=[invoice], ...)",
              "send_task('billing.archive', ..., {'invoice': invoice})"]


def test_objects_nested_in_literals_are_found() -> None:
    assert subjects("""\
        order = Order.objects.get(pk=1)
        batch.delay([{"orders": (1, order)}, {*[order.customer]}], **{"o": order})
    """) == ["'order' is an Order instance", "'order.customer' is a Customer instance",
             "'order' is an Order instance"]


def test_other_calls_with_objects_are_not_reported() -> None:
    assert lint("""\
        order = Order.objects.get(pk=1)
        log.info(order)
        charge.s(order)
        render(request, "o.html", {"order": order})
    """) == []


@pytest.mark.parametrize("argument", [
    "user.pk", "user.id", "order.customer_id", "user.email", "42", "'bob'", "None",
    "int(request.POST['user'])", "str(user)", "list(orders.values_list('pk', flat=True))",
    "request.user.pk", "request.user.id", "form.cleaned_data['user']", "request.POST['id']",
    "orders.count()", "orders.exists()", "[o.pk for o in orders]", "cache.get('user')",
])
def test_harmless_arguments_are_not_reported(argument: str) -> None:
    assert lint(f"""\
        def v(request, form):
            user = User.objects.get(pk=1)
            order = Order.objects.get(pk=1)
            orders = Order.objects.all()
            task.delay({argument})
    """) == []


# -- files -----------------------------------------------------------------


def test_source_that_does_not_parse_is_a_djt100_finding() -> None:
    [finding] = lint_source("def broken(:\n    pass\n", "broken.py")
    assert (finding.path, finding.line, finding.code) == ("broken.py", 1, "DJT100")
    assert finding.message.startswith("cannot parse: ")


@pytest.mark.parametrize("terms", [1500, 5000])  # too deep for the walk, for the parser
def test_source_nested_too_deeply_is_a_djt100_finding_not_an_error(terms: int) -> None:
    [finding] = lint_source("x = " + " + ".join(["a"] * terms) + "\n", "deep.py")
    assert finding.code == "DJT100"
    assert "maximum recursion depth exceeded" in finding.message


def test_lint_paths_walks_python_files_and_sorts_the_findings(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "views.py").write_text("o = Order.objects.get()\nrun.delay(o)\n")
    (tmp_path / "accounts.py").write_text("u = User.objects.get()\nrun.delay(1, u)\n")
    (tmp_path / "notes.txt").write_text("u = User.objects.get()\nrun.delay(u)\n")
    found = lint_paths([tmp_path])
    assert [(Path(f.path).relative_to(tmp_path).as_posix(), f.line) for f in found] == [
        ("accounts.py", 2), ("shop/views.py", 2)]


def test_lint_paths_skips_excluded_directories(tmp_path: Path) -> None:
    for folder in ("migrations", ".venv", "node_modules", "vendor"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text("o = Order.objects.get()\nrun.delay(o)\n")
    assert [Path(f.path).parent.name for f in lint_paths([tmp_path])] == ["vendor"]
    assert lint_paths([tmp_path], exclude=("vendor", "migrations", ".venv", "node_modules")) == []


def test_lint_paths_reads_a_file_named_explicitly_whatever_its_suffix() -> None:
    assert {f.line for f in lint_paths([CORPUS / "webhooks.py.txt"])} == {28, 33}


def test_lint_paths_reports_unparsable_and_undecodable_files(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = (\n")
    (tmp_path / "b.py").write_bytes(b"x = '\xff'\n")
    (tmp_path / "c.py").write_bytes(b"# -*- coding: latin-1 -*-\nx = '\xff'\n")
    assert [(Path(f.path).name, f.code) for f in lint_paths([tmp_path])] == [
        ("a.py", "DJT100"), ("b.py", "DJT100")]


# -- the corpus: both directions -------------------------------------------

EXPECTED = {
    ("accounts_views.py.txt", 20, "DJT101"),  # form.save()
    ("accounts_views.py.txt", 42, "DJT101"),  # request.user inline
    ("accounts_views.py.txt", 64, "DJT101"),  # form.instance
    ("accounts_views.py.txt", 71, "DJT101"),  # User.objects.create_user
    ("api_views.py.txt", 20, "DJT101"),  # serializer.save()
    ("api_views.py.txt", 35, "DJT101"),  # self.get_object() in a ViewSet
    ("api_views.py.txt", 40, "DJT101"),  # self.get_queryset()
    ("api_views.py.txt", 51, "DJT101"),  # kwargs=dict(subscription=self.get_object())
    ("billing_services.py.txt", 21, "DJT101"),  # on_commit(lambda: ...delay(customer))
    ("billing_services.py.txt", 28, "DJT101"),  # _default_manager.get, apply_async args
    ("billing_services.py.txt", 30, "DJT101"),  # send_task kwargs
    ("billing_services.py.txt", 37, "DJT101"),  # qs[0] inside a list
    ("billing_services.py.txt", 43, "DJT101"),  # relation line.order
    ("billing_services.py.txt", 48, "DJT101"),  # await aget
    ("billing_services.py.txt", 53, "DJT101"),  # await acreate
    ("invoice_views.py.txt", 20, "DJT101"),  # self.object of a CreateView
    ("invoice_views.py.txt", 29, "DJT101"),  # self.request.user
    ("invoice_views.py.txt", 60, "DJT101"),  # loop over .iterator()
    ("orders_views.py.txt", 23, "DJT101"),  # get_object_or_404
    ("orders_views.py.txt", 25, "DJT101"),  # relation order.customer
    ("orders_views.py.txt", 35, "DJT101"),  # .filter().first()
    ("orders_views.py.txt", 45, "DJT101"),  # get_or_create, apply_async kwargs
    ("orders_views.py.txt", 55, "DJT101"),  # a QuerySet
    ("orders_views.py.txt", 64, "DJT101"),  # loop over a QuerySet
    ("send_digests.py.txt", 33, "DJT101"),  # enumerate() of a QuerySet
    ("send_digests.py.txt", 36, "DJT101"),  # a QuerySet inline
    ("signals.py.txt", 21, "DJT101"),  # post_save receiver instance, in a lambda
    ("signals.py.txt", 27, "DJT101"),  # receiver with sender=get_user_model()
    ("webhooks.py.txt", 28, "DJT101"),  # select_related().get()
    ("webhooks.py.txt", 33, "DJT101"),  # apply_async positional args list
}
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.py.txt"))


def lint_corpus() -> set[tuple[str, int, str]]:
    found = set()
    for name in CORPUS_FILES:
        source = (CORPUS / name).read_text()
        found |= {(f.path, f.line, f.code) for f in lint_source(source, name, model_names=MODELS)}
    return found


def test_the_corpus_has_realistic_modules_of_every_kind() -> None:
    assert len(CORPUS_FILES) >= 8
    assert not list(CORPUS.glob("*.py")), "corpus modules are data: name them *.py.txt"


def test_the_corpus_reports_every_planted_bug_and_nothing_else() -> None:
    assert lint_corpus() == EXPECTED


def test_the_expected_findings_are_the_lines_marked_bug_in_the_corpus() -> None:
    marked = {(name, number, "DJT101") for name in CORPUS_FILES
              for number, text in enumerate((CORPUS / name).read_text().splitlines(), 1)
              if "# bug" in text}
    assert marked == EXPECTED


def test_the_corpus_messages_name_the_fix() -> None:
    source = (CORPUS / "orders_views.py.txt").read_text()
    assert [f.message for f in lint_source(source, model_names=MODELS)] == [
        "charge_order.delay(order): 'order' is an Order instance from line 22; pass order.pk",
        "notify_warehouse.delay(order.customer): 'order.customer' is a Customer instance;"
        " pass order.customer_id",
        "cancel_shipment.delay(shipment): 'shipment' is a Shipment instance from line 33;"
        " pass shipment.pk",
        "recalculate_totals.apply_async(..., kwargs={'coupon': coupon}): 'coupon' is a Coupon"
        " instance from line 44; pass coupon.pk",
        "export_orders.delay(orders): 'orders' is an Order QuerySet from line 52;"
        " pass list(orders.values_list('pk', flat=True))",
        "email_receipt.delay(order, ...): 'order' is an Order instance from line 63;"
        " pass order.pk",
    ]


# -- the installed models and the example project -------------------------


def test_installed_model_names_are_the_model_class_names() -> None:
    assert {"User", "Order", "Report", "TaskResult"} <= installed_model_names()


def test_the_example_project_reports_nothing() -> None:
    assert lint_paths([ROOT / "example_project"], model_names=installed_model_names()) == []
