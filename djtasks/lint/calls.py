"""Call-site lint of the ID-not-object rule (DESIGN.md section 5, point 3).

Source is parsed with :mod:`ast`, never imported. DJT101 is a ``.delay()``,
``.apply_async()`` or ``send_task()`` call passing a model instance or a
QuerySet where an id belongs, at the argument's 1-based line and column::

    shop/views.py:20:34: DJT101 send_welcome_email.delay(user): 'user' is a model
        instance from line 19 (form.save()); pass user.pk

DJT100 is a file that does not parse. Checked: every ``.delay`` argument, the
``args``/``kwargs`` of ``.apply_async`` (or positional 1-2) and ``send_task``
(2-3), and Celery's ``delay_on_commit``/``apply_async_on_commit`` likewise,
inside list/tuple/set/dict literals and ``dict(k=v)``. Names are tracked per
function, module and class body in source order (nested functions, lambdas
and comprehensions start from the enclosing names); an assignment, ``:=``,
``+=`` or ``for`` to anything else clears a name.

Objects, where ``M`` is a capitalised (not ALL-CAPS) name, a name in
``model_names`` (whose lowercase attributes are managers too),
``get_user_model()`` or ``settings.AUTH_USER_MODEL``:

- on ``M.objects``/``_default_manager``/``_base_manager`` or a QuerySet:
  ``get/create/first/last/earliest/latest/create_user`` and ``a*`` forms (an
  instance), ``get_or_create``/``update_or_create`` (``obj, created = ...``),
  ``all/filter/exclude/order_by/...`` and ``values/values_list`` (QuerySets),
  ``qs[i]`` (an instance), ``qs[i:j]``; ``get_object_or_404(M, ...)``;
- ``request.user``, ``self.request.user``, ``await request.auser()`` (a User);
- in a view class (a base named ``*View``/``*ViewSet``/``*Mixin``, or a body
  setting ``model``/``queryset``): ``self.object``, ``self.get_object()``,
  ``self.get_queryset()``, of that model;
- ``x.save()``/``x.instance`` where a word of ``x`` is ``form`` or
  ``serializer`` (``user_form``, ``userForm``; not ``platform``, ``formset``);
- ``instance`` in a ``@receiver(<model signal>, sender=M)`` function;
- the target of a loop over a QuerySet, its ``.iterator()`` or ``enumerate()``;
- relations: ``x.attr`` of an instance where ``attr`` is a ``model_names``
  class in lower or snake case (``order.customer`` only with a ``Customer``
  model; fix ``order.customer_id``); ``x.attr.all()``/``.filter()``/... of an
  instance is a related manager's QuerySet.

Never reported: other attributes (``.pk``, ``.id``, ``.customer_id``),
subscripts (``form.cleaned_data[...]``, ``request.POST[...]``), other calls
(``int()``, ``list(...)``, ``.count()``, ``.exists()``), literals.

Limits, few false positives being worth more than catching everything: no
data flow across functions, modules or branches (the last binding in source
order wins; ``import``, ``with``/``except ... as`` and ``del`` do not clear);
parameters are unknown (a helper's ``user``, an admin action's ``queryset``);
relations are guessed by name, so a model named like a scalar field (a
``Status`` model, an ``order.status`` CharField) is a false positive and
``x.rel_id`` is the wrong fix for a reverse one-to-one; ``form.save()`` is of
unknown model, ``request.user`` always a User; ``formset.save()``,
``bulk_create()``, ``in_bulk()``, ``get_list_or_404()``, ``signal.connect()``
and ``.s()``/``.si()`` signatures are not followed.
"""
from __future__ import annotations

import ast
import re
import tokenize
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Finding", "installed_model_names", "lint_paths", "lint_source"]

_MANAGERS = frozenset({"objects", "_default_manager", "_base_manager"})
_GET = frozenset({"get", "create", "first", "last", "earliest", "latest", "get_by_natural_key",
                  "create_user", "create_superuser"})
_GET = _GET | {f"a{m}" for m in _GET}  # aget, acreate, afirst...
_PAIR = frozenset({"get_or_create", "update_or_create", "aget_or_create", "aupdate_or_create"})
_RELATED_QS = frozenset({"all", "filter", "exclude", "order_by", "select_related",
                         "prefetch_related"})
_QS = _RELATED_QS | {"distinct", "annotate", "alias", "only", "defer", "using", "reverse", "none",
                     "select_for_update", "union", "intersection", "difference"}
_MODEL_SIGNALS = frozenset({"pre_save", "post_save", "pre_delete", "post_delete", "m2m_changed",
                            "pre_transition", "post_transition"})  # the last two: django-fsm
_REPORTED = frozenset({"instance", "queryset", "values"})
_Env = dict[str, "_Obj"]


@dataclass(frozen=True, order=True)
class Finding:
    """One lint result; ``str()`` gives ``path:line:col: CODE message``."""

    path: str
    line: int
    col: int
    code: str  # DJT101 an object passed to a task, DJT100 a file that does not parse
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


@dataclass(frozen=True)
class _Obj:
    """What an expression evaluates to, as far as the lint can tell."""

    kind: str  # instance, queryset, values (values()/values_list()); manager, pair, iter
    model: str | None  # class name; None when unknown (form.save())
    origin: str = ""  # what a name was bound from, shown when the model is unknown
    line: int | None = None  # where a name was bound
    relation: bool = False  # x.rel of an instance: the fix is x.rel_id


def _last_name(node: ast.AST | None) -> str:
    """``b`` of ``b``, ``a.b``, ``a.b(...)``, ``a.b[...]``; "" for anything else."""
    if isinstance(node, ast.Call | ast.Subscript):
        return _last_name(node.func if isinstance(node, ast.Call) else node.value)
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_request(node: ast.AST) -> bool:
    """``request`` or ``self.request``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "request" and _is_self(node.value)
    return isinstance(node, ast.Name) and node.id == "request"


def _is_form(node: ast.AST) -> bool:
    """A name with a word ``form`` or ``serializer``: ``form``, ``user_form``, ``userForm2``."""
    if not isinstance(node, ast.Name | ast.Attribute):
        return False
    words = re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", _last_name(node).rstrip("0123456789"))
    return bool({"form", "serializer"} & {word.lower() for word in words})


def _arg_names(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return {a.arg for a in every if a is not None}


def _short(node: ast.expr) -> str:
    """Source text, a call's arguments elided: ``serializer.save(...)``."""
    if isinstance(node, ast.Call) and (node.args or node.keywords):
        return f"{ast.unparse(node.func)}(...)"
    return ast.unparse(node)


def _task_arguments(call: ast.Call) -> list[ast.expr | ast.keyword]:
    """The arguments of a task call that reach the task; [] for other calls."""

    def arg(index: int, keyword: str) -> list[ast.expr | ast.keyword]:
        named: list[ast.expr | ast.keyword] = [kw for kw in call.keywords if kw.arg == keyword]
        return named or ([call.args[index]] if len(call.args) > index else [])

    name, is_attribute = _last_name(call.func), isinstance(call.func, ast.Attribute)
    if name in ("delay", "delay_on_commit") and is_attribute:  # the latter: Celery 5.4
        return [*call.args, *call.keywords]
    if name in ("apply_async", "apply_async_on_commit") and is_attribute:
        return arg(0, "args") + arg(1, "kwargs")
    if name == "send_task" and isinstance(call.func, ast.Name | ast.Attribute):
        return arg(1, "args") + arg(2, "kwargs")
    return []


def _display(call: ast.Call, item: ast.expr | ast.keyword) -> str:
    """``callee(arg)``: the offending argument, ``...`` for the others, and the
    task name of a ``send_task``."""
    keep_name = _last_name(call.func) == "send_task" and bool(call.args)
    parts: list[str] = []
    for index, argument in enumerate([*call.args, *call.keywords]):
        if argument is item or (keep_name and index == 0):
            parts.append(ast.unparse(argument))
        elif parts[-1:] != ["..."]:
            parts.append("...")
    return f"{ast.unparse(call.func)}({', '.join(parts)})"


class _Scanner:
    """Walks one module in source order, tracking names bound to ORM objects."""

    def __init__(self, path: str, model_names: Collection[str]) -> None:
        self.path = path
        self.models = frozenset(model_names)
        snake = [(m, re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", m).lower()) for m in self.models]
        self.relations = {key: m for m, s in snake for key in (m.lower(), s)}  # order_line
        self.findings: list[Finding] = []
        self.in_function = self.in_view = False
        self.view_model: str | None = None

    def block(self, body: list[ast.stmt], env: _Env) -> None:
        for stmt in body:
            self._stmt(stmt, env)

    def _stmt(self, node: ast.AST, env: _Env) -> None:
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self._function(node, env)
        elif isinstance(node, ast.ClassDef):
            self._class(node, env)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            if node.value is not None:
                self._expr(node.value, env)
            value = None if isinstance(node, ast.AugAssign) else node.value
            obj = None if value is None else self._bound(value, env)
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                self._bind(target, obj, env, line)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self._expr(node.iter, env)
            self._loop(node.target, node.iter, env, line)
            self.block(node.body + node.orelse, env)
        else:  # if, while, with, try, match, return, an expression...: children in order
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self._expr(child, env)
                else:
                    self._stmt(child, env)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, env: _Env) -> None:
        params = _arg_names(node.args)
        inner = {k: v for k, v in env.items() if k not in params} if self.in_function else {}
        if "instance" in params and (received := self._receiver_instance(node)):
            inner["instance"] = received
        saved, self.in_function = self.in_function, True
        self.block(node.body, inner)
        self.in_function = saved
        env.pop(node.name, None)

    def _receiver_instance(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> _Obj | None:
        """The ``instance`` of a ``@receiver(<model signal>, sender=M)`` function."""
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and _last_name(dec.func) == "receiver" and dec.args:
                signal = dec.args[0]
                signals = signal.elts if isinstance(signal, ast.List | ast.Tuple) else [signal]
                if any(_last_name(s) in _MODEL_SIGNALS for s in signals):
                    sender = next((kw.value for kw in dec.keywords if kw.arg == "sender"), None)
                    if isinstance(sender, ast.Constant) and isinstance(sender.value, str):
                        model: str | None = sender.value.rsplit(".", 1)[-1]  # "shop.Order"
                    else:
                        model = self._model_name(sender) if sender is not None else None
                    origin = f"{_last_name(signals[0])} receiver"
                    return _Obj("instance", model, origin, node.lineno)
        return None

    def _class(self, node: ast.ClassDef, env: _Env) -> None:
        saved = (self.in_function, self.in_view, self.view_model)
        self.in_function, self.view_model = False, None
        self.in_view = any(_last_name(b).endswith(("View", "ViewSet", "Mixin")) for b in node.bases)
        for stmt in node.body:  # model = Order, queryset = Order.objects.filter(...)
            if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] in (
                    ["model"], ["queryset"]):
                self.in_view = True
                self.view_model = self.view_model or self._model_of(stmt.value, {})
        self.block(node.body, {})
        self.in_function, self.in_view, self.view_model = saved
        env.pop(node.name, None)

    def _bound(self, value: ast.expr, env: _Env) -> _Obj | None:
        """``value`` classified, remembering its text as the origin of a new name."""
        obj = self._classify(value, env)
        return obj if obj is None or obj.line else replace(obj, origin=_short(value))

    def _bind(self, target: ast.expr, obj: _Obj | None, env: _Env, line: int) -> None:
        if isinstance(target, ast.Name):
            if obj is None:
                env.pop(target.id, None)
            else:
                env[target.id] = replace(obj, line=line, relation=False)
        elif isinstance(target, ast.Tuple | ast.List):
            # obj, created = Model.objects.get_or_create(...)
            first = replace(obj, kind="instance") if obj and obj.kind == "pair" else None
            for index, elt in enumerate(target.elts):
                self._bind(elt, first if index == 0 else None, env, line)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, None, env, line)

    def _loop(self, target: ast.expr, iterable: ast.expr, env: _Env, line: int) -> None:
        """Bind a loop target: an instance when iterating over a QuerySet."""
        if (isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name)
                and iterable.func.id == "enumerate" and iterable.args
                and isinstance(target, ast.Tuple) and len(target.elts) == 2):
            self._bind(target.elts[0], None, env, line)
            return self._loop(target.elts[1], iterable.args[0], env, line)
        source = self._classify(iterable, env)
        item = None
        if source is not None and source.kind in ("queryset", "iter"):
            item = _Obj("instance", source.model, f"loop over {ast.unparse(iterable)}")
        self._bind(target, item, env, line)

    def _expr(self, node: ast.expr, env: _Env) -> None:
        """Report every task call inside ``node``."""
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            inner = dict(env)
            for gen in node.generators:
                self._expr(gen.iter, inner)
                self._loop(gen.target, gen.iter, inner, gen.target.lineno)
                for condition in gen.ifs:
                    self._expr(condition, inner)
            for part in [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]:
                self._expr(part, inner)
            return
        if isinstance(node, ast.Lambda):
            params = _arg_names(node.args)
            return self._expr(node.body, {k: v for k, v in env.items() if k not in params})
        if isinstance(node, ast.NamedExpr):
            self._expr(node.value, env)
            return self._bind(node.target, self._bound(node.value, env), env, node.lineno)
        if isinstance(node, ast.Call):
            for item in _task_arguments(node):
                value = item.value if isinstance(item, ast.keyword) else item
                for expr, obj in self._offenders(value, env):
                    self.findings.append(self._finding(node, item, expr, obj))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr | ast.keyword):
                self._expr(child.value if isinstance(child, ast.keyword) else child, env)

    def _offenders(self, node: ast.expr, env: _Env) -> Iterator[tuple[ast.expr, _Obj]]:
        """Objects in a task argument, looking inside literal containers."""
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "dict":
            parts: list[ast.expr] = [kw.value for kw in node.keywords]
        elif isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.Starred):
            parts = [node.value] if isinstance(node, ast.Starred) else (
                node.values if isinstance(node, ast.Dict) else node.elts)
        else:
            obj = self._classify(node, env)
            if obj is not None and obj.kind in _REPORTED:
                yield node, obj
            return
        for part in parts:
            yield from self._offenders(part, env)

    def _finding(self, call: ast.Call, item: ast.expr | ast.keyword, node: ast.expr,
                 obj: _Obj) -> Finding:
        text, model = ast.unparse(node), obj.model
        noun = "instance" if obj.kind == "instance" else "QuerySet"
        if model:
            what = f"{'an' if model[0] in 'AEIO' else 'a'} {model} {noun}"  # "a User"
        else:
            what = "a model instance" if obj.kind == "instance" else "a QuerySet"
        where = f" from line {obj.line}" if obj.line else ""
        origin = f" ({obj.origin})" if model is None and obj.origin not in ("", text) else ""
        if obj.kind == "instance":
            fix = f"{text}_id" if obj.relation else f"{text}.pk"
        else:
            fix = f"list({text})" if obj.kind == "values" else (
                f"list({text}.values_list('pk', flat=True))")
        message = f"{_display(call, item)}: '{text}' is {what}{where}{origin}; pass {fix}"
        return Finding(self.path, node.lineno, node.col_offset + 1, "DJT101", message)

    def _model_name(self, node: ast.expr) -> str | None:
        """``Order`` for ``Order``/``models.Order``; ``User`` for ``get_user_model()``
        and ``settings.AUTH_USER_MODEL``; None for a CONSTANT or anything else."""
        if isinstance(node, ast.Call):
            return "User" if _last_name(node.func) == "get_user_model" else None
        name = _last_name(node) if isinstance(node, ast.Name | ast.Attribute) else ""
        if name == "AUTH_USER_MODEL":
            return "User"
        return name if name in self.models or (name[:1].isupper() and not name.isupper()) else None

    def _model_of(self, node: ast.expr, env: _Env) -> str | None:
        """The model of a model class or of a QuerySet expression, if known."""
        found = self._classify(node, env)
        return self._model_name(node) or (found.model if found is not None else None)

    def _classify(self, node: ast.expr, env: _Env) -> _Obj | None:
        """The ORM object ``node`` evaluates to; None when it is (or may be) harmless."""
        if isinstance(node, ast.Await):
            return self._classify(node.value, env)
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, env)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        if isinstance(node, ast.Subscript):
            base = self._classify(node.value, env)
            if base is not None and isinstance(node.slice, ast.Slice):
                return _Obj(base.kind, base.model) if base.kind in ("queryset", "values") else None
            return _Obj("instance", base.model) if base and base.kind == "queryset" else None
        return None

    def _attribute(self, node: ast.Attribute, env: _Env) -> _Obj | None:
        attr, receiver = node.attr, node.value
        if attr == "user" and _is_request(receiver):
            return _Obj("instance", "User")
        if attr == "object" and self.in_view and _is_self(receiver):
            return _Obj("instance", self.view_model)
        if attr == "instance" and _is_form(receiver):
            return _Obj("instance", None)
        model = self._model_name(receiver)
        if model and (attr in _MANAGERS or (
                model in self.models and attr.islower() and not attr.startswith("_"))):
            return _Obj("manager", model)
        base = self._classify(receiver, env)
        if base is not None and base.kind == "instance" and attr in self.relations:
            return _Obj("instance", self.relations[attr], relation=True)
        return None

    def _call(self, node: ast.Call, env: _Env) -> _Obj | None:
        func = node.func
        if isinstance(func, ast.Name):
            if func.id in ("get_object_or_404", "aget_object_or_404") and node.args:
                return _Obj("instance", self._model_of(node.args[0], env))
            return None
        if not isinstance(func, ast.Attribute):
            return None
        method, receiver = func.attr, func.value
        if method == "save" and _is_form(receiver):
            return _Obj("instance", None)
        if method in ("get_object", "get_queryset") and self.in_view and _is_self(receiver):
            return _Obj("instance" if method == "get_object" else "queryset", self.view_model)
        if method == "auser" and _is_request(receiver):
            return _Obj("instance", "User")
        base = self._classify(receiver, env)
        if base is None or base.kind not in ("manager", "queryset", "values"):
            if method in _RELATED_QS and isinstance(receiver, ast.Attribute):
                owner = self._classify(receiver.value, env)  # order.lines.all()
                if owner is not None and owner.kind == "instance":
                    return _Obj("queryset", None)
            return None
        if base.kind == "values":  # rows are dicts or tuples, not instances
            return _Obj("values", base.model) if method in _QS else None
        kind = ("instance" if method in _GET else "pair" if method in _PAIR
                else "values" if method in ("values", "values_list")
                else "queryset" if method in _QS
                else "iter" if method in ("iterator", "aiterator") else None)
        return _Obj(kind, base.model) if kind else None


def _unparsable(path: str, exc: Exception) -> Finding:
    line, col = getattr(exc, "lineno", None) or 1, getattr(exc, "offset", None) or 1
    reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return Finding(path, line, col, "DJT100", f"cannot parse: {reason}")


def lint_source(source: str, path: str = "<string>", *,
                model_names: Collection[str] = ()) -> list[Finding]:
    """Findings for one module's source, sorted by line and column.

    ``model_names`` are model class names (see :func:`installed_model_names`);
    without them only capitalised ``M.objects`` chains name a model and no
    relation attribute is reported. Source that does not parse (or nests too
    deeply to walk) gives one DJT100 finding; nothing is raised.
    """
    scanner = _Scanner(path, model_names)
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError, RecursionError) as exc:  # ValueError: null bytes
        return [_unparsable(path, exc)]
    try:
        scanner.block(tree.body, {})
    except RecursionError as exc:  # nested deeper than the walk's stack allows
        return [_unparsable(path, exc)]
    return sorted(scanner.findings)


def lint_paths(paths: Iterable[str | Path], *, model_names: Collection[str] = (),
               exclude: Collection[str] = ("migrations", ".venv", "node_modules", ".tox"),
               ) -> list[Finding]:
    """Findings for files and directories (walked for ``*.py``), sorted by path.

    Below a walked directory, any directory named in ``exclude`` is skipped; a
    file named explicitly is always read. A file that does not parse or decode
    is a DJT100 finding. Raises ``OSError`` for a path that cannot be read.
    """
    files: set[Path] = set()
    for root in map(Path, paths):
        if root.is_dir():
            files.update(f for f in root.rglob("*.py")
                         if f.is_file() and not set(exclude) & set(f.relative_to(root).parts))
        else:
            files.add(root)
    findings: list[Finding] = []
    for file in sorted(files):
        try:
            with tokenize.open(file) as fh:  # honours a PEP 263 coding line
                source = fh.read()
        except (SyntaxError, UnicodeDecodeError) as exc:
            findings.append(_unparsable(str(file), exc))
            continue
        findings.extend(lint_source(source, str(file), model_names=model_names))
    return sorted(findings)


def installed_model_names() -> set[str]:
    """Class names of ``django.apps.apps.get_models()``, for ``model_names``.

    Django is imported on call, not with this module; raises
    ``AppRegistryNotReady`` before ``django.setup()``.
    """
    from django.apps import apps

    return {model.__name__ for model in apps.get_models()}
