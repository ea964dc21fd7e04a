"""Call-site lint of the ID-not-object rule (DESIGN.md section 5, point 3).

The source is parsed with :mod:`ast`, never imported or run. A finding is a
``.delay(...)``, ``.apply_async(...)`` or ``send_task(...)`` call that passes
a model instance or a QuerySet where an id belongs::

    shop/views.py:31:38: DJT101 send_welcome_email.delay(user): 'user' is a model
        instance from line 29 (form.save()); pass user.pk

Codes: ``DJT101`` an object passed to a task; ``DJT100`` a file that does not
parse. Lines and columns are 1-based (as flake8 and ruff print them) and point
at the argument. Arguments checked: every argument of ``.delay``; ``args``
(or the 1st positional) and ``kwargs`` (or the 2nd) of ``.apply_async``;
``args``/``kwargs`` (or the 2nd/3rd positional) of ``send_task``; inside
list, tuple, set and dict literals and ``dict(k=v)``, at any depth.

What is an object, in source order per function (module and class bodies
have their own scope; a nested function or lambda starts from a copy of its
enclosing function's; a later binding to anything else clears a name):

- a manager chain on ``Model.objects``/``_default_manager``/``_base_manager``
  (``Model`` a capitalised name, a name in ``model_names`` -- whose lowercase
  attributes also count as managers -- or ``get_user_model()``):
  ``get/create/first/last/earliest/latest/create_user`` and their ``a*``
  forms give an instance; ``get_or_create``/``update_or_create`` an
  ``(instance, created)`` pair; ``all/filter/exclude/order_by/...`` a QuerySet,
  as do ``values()``/``values_list()`` (the fix is then ``list(...)``);
  ``qs[i]`` an instance, ``qs[a:b]`` a QuerySet;
- ``get_object_or_404(Model, ...)`` (and ``aget_``), model from the first arg;
- ``request.user``, ``self.request.user``, ``await request.auser()``: a User;
- in a view class (a base named ``*View``/``*ViewSet``/``*Mixin`` or a body
  setting ``model``/``queryset``): ``self.object`` and ``self.get_object()``
  are instances of its ``model``, ``self.get_queryset()`` a QuerySet;
- ``x.save()`` and ``x.instance`` where an ``_``-separated word of ``x``'s
  name is ``form`` or ``serializer`` (``form``, ``user_form``, not
  ``platform`` or ``formset``): a model instance of unknown model;
- the ``instance`` parameter of a ``@receiver(post_save, sender=Model)``
  handler (any of Django's model signals);
- the target of ``for``/``async for``/a comprehension over a QuerySet, a
  ``.iterator()`` or ``enumerate()`` of one;
- a relation: ``x.attr`` where ``x`` is an instance and ``attr`` is a model
  name of ``model_names`` in lower or snake case (``order.customer`` only
  when ``Customer`` is a model); the fix is ``x.attr_id``. ``x.rel.all()``
  (or ``filter``/``exclude``/``order_by``/``select_related``/
  ``prefetch_related``) on an instance is a QuerySet of a related manager.

Never reported: ``.pk``, ``.id``, ``*_id`` and any other attribute, subscripts
(``form.cleaned_data[...]``, ``request.POST[...]``), other calls (``int()``,
``str()``, ``list(...)``, ``.count()``, ``.exists()``), literals.

Limits, chosen for few false positives over catching everything: no data
flow across functions, modules or branches (the last binding in source order
wins); parameters are unknown (a task helper's ``user`` argument, an admin
action's ``queryset``); ``x.rel`` relations need ``model_names`` and guess by
name, so a model named like a scalar field (a ``Status`` model and an
``order.status`` CharField) is a false positive, and ``x.rel_id`` is the wrong
fix for a reverse one-to-one; ``form.save()`` returns an unknown model;
``formset.save()``, ``bulk_create()``, ``in_bulk()``, ``get_list_or_404()``,
``signal.connect(...)`` receivers and ``.s()``/``.si()`` signatures are not
followed; ``request.user`` is always called a User.
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
_GET_ALL = _GET | {f"a{m}" for m in _GET}
_PAIR = frozenset({"get_or_create", "update_or_create", "aget_or_create", "aupdate_or_create"})
_RELATED_QS = frozenset({"all", "filter", "exclude", "order_by", "select_related",
                         "prefetch_related"})
_QS = _RELATED_QS | {"distinct", "annotate", "alias", "only", "defer", "using", "reverse", "none",
                     "select_for_update", "union", "intersection", "difference"}
_VALUES = frozenset({"values", "values_list"})
_ITER = frozenset({"iterator", "aiterator"})
_MODEL_SIGNALS = frozenset({"pre_save", "post_save", "pre_delete", "post_delete", "m2m_changed",
                            "post_init"})
_VIEW_BASES = ("View", "ViewSet", "Mixin")
_REPORTED = frozenset({"instance", "queryset", "values"})


@dataclass(frozen=True, order=True)
class Finding:
    """One lint result; ``str()`` is ``path:line:col: CODE message``."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


@dataclass(frozen=True)
class _Obj:
    """What an expression evaluates to, as far as the lint can tell.

    kind: "instance", "queryset", "values" (a values()/values_list() QuerySet),
    or, never reported: "manager", "pair" (get_or_create's tuple), "iter".
    """

    kind: str
    model: str | None  # class name, None when unknown (form.save())
    origin: str = ""  # source text that produced a bound name
    line: int | None = None  # where a name was bound to it
    relation: bool = False  # x.rel of an instance: the fix is x.rel_id


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


def _last_name(node: ast.AST | None) -> str:
    """``b`` of ``a.b``, ``b(...)``, ``b[...]``; "" for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call | ast.Subscript):
        return _last_name(node.func if isinstance(node, ast.Call) else node.value)
    return ""


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_request(node: ast.AST) -> bool:
    """``request`` or ``self.request``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "request" and _is_self(node.value)
    return isinstance(node, ast.Name) and node.id == "request"


def _is_form(node: ast.AST) -> bool:
    if not isinstance(node, ast.Name | ast.Attribute):
        return False
    words = _last_name(node).lower().split("_")
    return "form" in words or "serializer" in words


def _snake(name: str) -> str:
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


def _arg_names(args: ast.arguments) -> list[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [a.arg for a in every if a is not None]


def _task_arguments(call: ast.Call) -> list[ast.expr | ast.keyword]:
    """The arguments of a task call that reach the task; [] for other calls."""
    func, name = call.func, _last_name(call.func)

    def arg(index: int, keyword: str) -> list[ast.expr | ast.keyword]:
        for kw in call.keywords:
            if kw.arg == keyword:
                return [kw]
        return [call.args[index]] if len(call.args) > index else []

    if name == "delay" and isinstance(func, ast.Attribute):
        return [*call.args, *call.keywords]
    if name == "apply_async" and isinstance(func, ast.Attribute):
        return arg(0, "args") + arg(1, "kwargs")
    if name == "send_task" and isinstance(func, ast.Name | ast.Attribute):
        return arg(1, "args") + arg(2, "kwargs")
    return []


def _display(call: ast.Call, item: ast.expr | ast.keyword) -> str:
    """``callee(arg)``: the offending top-level argument, ``...`` for the others
    (a ``send_task`` keeps its task name)."""
    keep_name = _last_name(call.func) == "send_task" and bool(call.args)
    parts: list[str] = []
    for index, argument in enumerate([*call.args, *call.keywords]):
        if argument is item or (keep_name and index == 0):
            parts.append(_text(argument))
        elif not parts or parts[-1] != "...":
            parts.append("...")
    return f"{_text(call.func)}({', '.join(parts)})"


class _Scanner:
    """Walks one module in source order, tracking names bound to ORM objects."""

    def __init__(self, path: str, model_names: Collection[str]) -> None:
        self.path = path
        self.models = frozenset(model_names)
        self.relations = {key: m for m in self.models for key in (m.lower(), _snake(m))}
        self.findings: list[Finding] = []
        self.in_function = False
        self.in_view = False
        self.view_model: str | None = None

    # -- statements ---------------------------------------------------------

    def block(self, body: list[ast.stmt], env: dict[str, _Obj]) -> None:
        for stmt in body:
            self._stmt(stmt, env)

    def _stmt(self, node: ast.stmt, env: dict[str, _Obj]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self._function(node, env)
        elif isinstance(node, ast.ClassDef):
            self._class(node, env)
        elif isinstance(node, ast.Assign):
            self._expr(node.value, env)
            for target in node.targets:
                self._assign(target, node.value, env, node.lineno)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            if node.value is not None:
                self._expr(node.value, env)
            value = node.value if isinstance(node, ast.AnnAssign) else None
            self._assign(node.target, value, env, node.lineno)
        elif isinstance(node, ast.For | ast.AsyncFor):
            self._expr(node.iter, env)
            self._loop(node.target, node.iter, env, node.lineno)
            self.block(node.body, env)
            self.block(node.orelse, env)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                env.pop(alias.asname or alias.name.split(".")[0], None)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self._bind(target, None, env, node.lineno)
        else:  # if/while/with/try/match/return/expression...: children in source order
            for child in ast.iter_child_nodes(node):
                self._child(child, env, node.lineno)

    def _child(self, child: ast.AST, env: dict[str, _Obj], line: int) -> None:
        if isinstance(child, ast.expr):
            self._expr(child, env)
        elif isinstance(child, ast.stmt):
            self._stmt(child, env)
        elif isinstance(child, ast.withitem):
            self._expr(child.context_expr, env)
            if child.optional_vars is not None:
                self._bind(child.optional_vars, None, env, line)
        elif isinstance(child, ast.ExceptHandler | ast.match_case):
            if isinstance(child, ast.ExceptHandler):
                if child.type is not None:
                    self._expr(child.type, env)
                env.pop(child.name or "", None)
            else:
                for node in ast.walk(child.pattern):
                    env.pop(getattr(node, "name", None) or getattr(node, "rest", None) or "", None)
                if child.guard is not None:
                    self._expr(child.guard, env)
            self.block(child.body, env)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, env: dict[str, _Obj]) -> None:
        for expr in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if expr is not None:
                self._expr(expr, env)
        inner = dict(env) if self.in_function else {}
        for name in _arg_names(node.args):
            inner.pop(name, None)
        received = self._receiver_instance(node)
        if received is not None:
            inner["instance"] = received
        saved, self.in_function = self.in_function, True
        self.block(node.body, inner)
        self.in_function = saved
        env.pop(node.name, None)

    def _receiver_instance(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> _Obj | None:
        """The ``instance`` parameter of a ``@receiver(<model signal>, sender=M)``."""
        if "instance" not in _arg_names(node.args):
            return None
        for dec in node.decorator_list:
            if not (isinstance(dec, ast.Call) and _last_name(dec.func) == "receiver" and dec.args):
                continue
            signal = dec.args[0]
            signals = signal.elts if isinstance(signal, ast.List | ast.Tuple) else [signal]
            if not any(_last_name(s) in _MODEL_SIGNALS for s in signals):
                continue
            sender = next((kw.value for kw in dec.keywords if kw.arg == "sender"), None)
            model = None
            if isinstance(sender, ast.Constant) and isinstance(sender.value, str):
                model = sender.value.rsplit(".", 1)[-1]  # sender="shop.Order"
            elif sender is not None:
                model = self._model_name(sender)
            return _Obj("instance", model, f"{_last_name(signals[0])} receiver", node.lineno)
        return None

    def _class(self, node: ast.ClassDef, env: dict[str, _Obj]) -> None:
        for expr in [*node.decorator_list, *node.bases, *(kw.value for kw in node.keywords)]:
            self._expr(expr, env)
        saved = (self.in_function, self.in_view, self.view_model)
        self.in_view = any(_last_name(b).endswith(_VIEW_BASES) for b in node.bases)
        self.view_model = None
        for stmt in node.body:  # model = Order / queryset = Order.objects.filter(...)
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id in ("model", "queryset")):
                self.in_view = True
                self.view_model = self.view_model or self._model_of(stmt.value, {})
        self.in_function = False
        self.block(node.body, {})
        self.in_function, self.in_view, self.view_model = saved
        env.pop(node.name, None)

    # -- bindings -----------------------------------------------------------

    def _assign(self, target: ast.expr, value: ast.expr | None, env: dict[str, _Obj],
                line: int) -> None:
        if (isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List)
                and len(target.elts) == len(value.elts)
                and not any(isinstance(e, ast.Starred) for e in target.elts)):
            # a, b = x, y: the right side is evaluated before any name is bound
            objs = [self._bound(v, env) for v in value.elts]
            for elt, obj in zip(target.elts, objs, strict=True):
                self._bind(elt, obj, env, line)
        else:
            self._bind(target, self._bound(value, env) if value is not None else None, env, line)

    def _bound(self, value: ast.expr, env: dict[str, _Obj]) -> _Obj | None:
        obj = self._classify(value, env)
        return obj if obj is None or obj.line else replace(obj, origin=_text(value))

    def _bind(self, target: ast.expr, obj: _Obj | None, env: dict[str, _Obj], line: int) -> None:
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

    def _loop(self, target: ast.expr, iterable: ast.expr, env: dict[str, _Obj], line: int) -> None:
        """Bind a loop target: an instance when iterating over a QuerySet."""
        if (isinstance(iterable, ast.Call) and _last_name(iterable.func) == "enumerate"
                and isinstance(iterable.func, ast.Name) and iterable.args
                and isinstance(target, ast.Tuple) and len(target.elts) == 2):
            self._bind(target.elts[0], None, env, line)
            self._loop(target.elts[1], iterable.args[0], env, line)
            return
        source = self._classify(iterable, env)
        item = None
        if source is not None and source.kind in ("queryset", "iter"):
            item = _Obj("instance", source.model, f"loop over {_text(iterable)}")
        self._bind(target, item, env, line)

    # -- expressions --------------------------------------------------------

    def _expr(self, node: ast.expr, env: dict[str, _Obj]) -> None:
        """Check every task call inside ``node``."""
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            inner = dict(env)
            for gen in node.generators:
                self._expr(gen.iter, inner)
                self._loop(gen.target, gen.iter, inner, gen.target.lineno)
                for condition in gen.ifs:
                    self._expr(condition, inner)
            parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            for part in parts:
                self._expr(part, inner)
            return
        if isinstance(node, ast.Lambda):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    self._expr(default, env)
            inner = {k: v for k, v in env.items() if k not in _arg_names(node.args)}
            self._expr(node.body, inner)
            return
        if isinstance(node, ast.NamedExpr):
            self._expr(node.value, env)
            self._bind(node.target, self._bound(node.value, env), env, node.lineno)
            return
        if isinstance(node, ast.Call):
            for item in _task_arguments(node):
                value = item.value if isinstance(item, ast.keyword) else item
                for expr, obj in self._offenders(value, env):
                    self.findings.append(self._finding(node, item, expr, obj))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self._expr(child, env)
            elif isinstance(child, ast.keyword):
                self._expr(child.value, env)

    def _offenders(self, node: ast.expr, env: dict[str, _Obj]) -> Iterator[tuple[ast.expr, _Obj]]:
        if isinstance(node, ast.Starred):
            yield from self._offenders(node.value, env)
        elif isinstance(node, ast.List | ast.Tuple | ast.Set):
            for elt in node.elts:
                yield from self._offenders(elt, env)
        elif isinstance(node, ast.Dict):
            for value in node.values:
                yield from self._offenders(value, env)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            for kw in node.keywords:
                yield from self._offenders(kw.value, env)
        else:
            obj = self._classify(node, env)
            if obj is not None and obj.kind in _REPORTED:
                yield node, obj

    def _finding(self, call: ast.Call, item: ast.expr | ast.keyword, node: ast.expr,
                 obj: _Obj) -> Finding:
        text = _text(node)
        noun = "instance" if obj.kind == "instance" else "QuerySet"
        if obj.model:
            what = f"{_article(obj.model)} {obj.model} {noun}"
        else:
            what = "a model instance" if obj.kind == "instance" else "a QuerySet"
        where = f" from line {obj.line}" if obj.line else ""
        origin = f" ({obj.origin})" if obj.model is None and obj.origin not in ("", text) else ""
        if obj.kind == "instance":
            fix = f"{text}_id" if obj.relation else f"{text}.pk"
        elif obj.kind == "values":
            fix = f"list({text})"
        else:
            fix = f"list({text}.values_list('pk', flat=True))"
        message = f"{_display(call, item)}: '{text}' is {what}{where}{origin}; pass {fix}"
        return Finding(self.path, node.lineno, node.col_offset + 1, "DJT101", message)

    def _model_name(self, node: ast.expr) -> str | None:
        """``Order`` for ``Order``/``models.Order``; ``User`` for ``get_user_model()``."""
        if isinstance(node, ast.Call):
            return "User" if _last_name(node.func) == "get_user_model" else None
        if not isinstance(node, ast.Name | ast.Attribute):
            return None
        name = _last_name(node)
        return name if name in self.models or name[:1].isupper() else None

    def _model_of(self, node: ast.expr, env: dict[str, _Obj]) -> str | None:
        """The model of a model class or a QuerySet expression, if known."""
        found = self._classify(node, env)
        return self._model_name(node) or (found.model if found is not None else None)

    def _classify(self, node: ast.expr, env: dict[str, _Obj]) -> _Obj | None:
        """The ORM object ``node`` evaluates to, or None when it is (or may be) harmless."""
        if isinstance(node, ast.Await):
            return self._classify(node.value, env)
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Subscript):
            base = self._classify(node.value, env)
            if base is None or base.kind not in ("queryset", "values"):
                return None
            if isinstance(node.slice, ast.Slice):
                return _Obj(base.kind, base.model)
            return _Obj("instance", base.model) if base.kind == "queryset" else None
        if isinstance(node, ast.Attribute):
            return self._attribute(node, env)
        if isinstance(node, ast.Call):
            return self._call(node, env)
        return None

    def _attribute(self, node: ast.Attribute, env: dict[str, _Obj]) -> _Obj | None:
        attr, receiver = node.attr, node.value
        if attr == "user" and _is_request(receiver):
            return _Obj("instance", "User")
        if attr == "object" and self.in_view and _is_self(receiver):
            return _Obj("instance", self.view_model)
        if attr == "instance" and _is_form(receiver):
            return _Obj("instance", None)
        model = self._model_name(receiver)
        if model and (attr in _MANAGERS or (model in self.models and attr.islower()
                                            and not attr.startswith("_"))):
            return _Obj("manager", model)
        base = self._classify(receiver, env)
        if base is not None and base.kind == "instance" and attr in self.relations:
            return _Obj("instance", self.relations[attr], relation=True)
        return None

    def _call(self, node: ast.Call, env: dict[str, _Obj]) -> _Obj | None:
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
        if self.in_view and _is_self(receiver) and method in ("get_object", "get_queryset"):
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
        values = base.kind == "values"
        if method in _GET_ALL:
            return None if values else _Obj("instance", base.model)
        if method in _PAIR:
            return None if values else _Obj("pair", base.model)
        if method in _VALUES or (values and method in _QS):
            return _Obj("values", base.model)
        if method in _QS:
            return _Obj("queryset", base.model)
        if method in _ITER and not values:
            return _Obj("iter", base.model)
        return None


def _unparsable(path: str, exc: Exception) -> Finding:
    line = getattr(exc, "lineno", None) or 1
    col = getattr(exc, "offset", None) or 1
    reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return Finding(path, line, col, "DJT100", f"cannot parse: {reason}")


def lint_source(source: str, path: str = "<string>", *,
                model_names: Collection[str] = ()) -> list[Finding]:
    """Findings for one module's source, sorted by line and column.

    ``model_names`` are model class names (see :func:`installed_model_names`);
    without them only capitalised ``X.objects`` chains count as models and no
    relation attribute is reported. Source that does not parse gives a single
    DJT100 finding; nothing is raised.
    """
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes
        return [_unparsable(path, exc)]
    scanner = _Scanner(path, model_names)
    scanner.block(tree.body, {})
    return sorted(scanner.findings)


def _python_files(paths: Iterable[str | Path], exclude: Collection[str]) -> list[Path]:
    excluded = frozenset(exclude)
    files: set[Path] = set()
    for root in map(Path, paths):
        if root.is_dir():
            files.update(f for f in root.rglob("*.py")
                         if f.is_file() and not excluded.intersection(f.relative_to(root).parts))
        else:
            files.add(root)
    return sorted(files)


def lint_paths(paths: Iterable[str | Path], *, model_names: Collection[str] = (),
               exclude: Collection[str] = ("migrations", ".venv", "node_modules", ".tox"),
               ) -> list[Finding]:
    """Findings for files and directories (walked for ``*.py``), sorted by path.

    A directory below a walked path whose name is in ``exclude`` is skipped; a
    file named explicitly is always read. A file that does not parse or decode
    is a DJT100 finding. Raises ``OSError`` for a path that cannot be read.
    """
    findings: list[Finding] = []
    for file in _python_files(paths, exclude):
        try:
            with tokenize.open(file) as fh:  # honours a PEP 263 coding cookie
                source = fh.read()
        except (SyntaxError, UnicodeDecodeError) as exc:
            findings.append(_unparsable(str(file), exc))
            continue
        findings.extend(lint_source(source, str(file), model_names=model_names))
    return sorted(findings)


def installed_model_names() -> set[str]:
    """Class names of every installed model (``django.apps.apps.get_models()``).

    Django is imported here, not at module import; raises
    ``AppRegistryNotReady`` before ``django.setup()``.
    """
    from django.apps import apps

    return {model.__name__ for model in apps.get_models()}
