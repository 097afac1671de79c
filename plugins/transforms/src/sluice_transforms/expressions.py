"""The safe expression language of ``filter.where``, ``set`` and friends.

An expression is Python expression syntax, parsed once with ``ast.parse(mode="eval")`` and
compiled into a tree of closures, so evaluating it per record costs a few function calls and no
parsing. Only whitelisted node types compile: no ``eval``, no names but ``record``, the job
variables and the functions of ``functions.FUNCTIONS``, no attribute starting with ``_``, no
lambdas, comprehensions, f-strings or ``%`` formatting of text. Operators and methods that can
build large values check the size first, with core's limits (``sluice.limits``, shared with job
templates). Constant sub-expressions are folded at compile time, so ``9**9**9``, ``'a' * 10**9``
or ``'%s' % record.app`` fail at validation rather than per record.

Semantics users rely on:

- ``record.get('app') == 'frontend'`` works as written; ``record.app`` is the same lookup (a
  missing field, or a field of None, is None); ``record['a']['b']`` raises on a missing key,
  which dead-letters the record with the reason.
- ``true``/``false``/``null`` are accepted as spellings of ``True``/``False``/``None``.
- Job variables (``ds``, ``next_ds``, ``ts``, ``run_id``, ``job_name``, ``data_interval_start``,
  ``data_interval_end``) are names, bound when the step opens.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator

from sluice.limits import (
    MAX_SIZE,
    LimitExceeded,
    check_size,
    check_text,
    numeric_mod,
    safe_add,
    safe_mul,
    safe_pow,
    safe_replace,
)

from .functions import FUNCTIONS, METHODS

MAX_SOURCE_LENGTH = 10_000
"""Longest expression text accepted (deeply nested input would exhaust the parser)."""

VARIABLES = frozenset({"ds", "ds_nodash", "next_ds", "ts", "run_id", "job_name", "data_interval_start",
                       "data_interval_end"})
"""Job variables an expression may name; their values come from the run context."""

CONSTANT_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
IMPURE = frozenset({"now", "today"})  # never folded at compile time

Fn = Callable[[Any, Any], Any]  # (record, variables) -> value


def check_expression(source: str) -> str:
    """Pydantic validator: compile ``source`` now so errors surface at validation, with the column."""
    compile_expression(source)
    return source


ExpressionText = Annotated[str, AfterValidator(check_expression)]
"""A config field holding an expression; validated (and compiled once, cached) at load time."""


class ExpressionError(ValueError):
    """An expression that does not compile: the message names the column (1-based)."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.column = column
        super().__init__(f"{message} (column {column})" if column else message)


BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: safe_add, ast.Sub: operator.sub, ast.Mult: safe_mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: numeric_mod, ast.Pow: safe_pow,
}
CMP_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` as a field lookup: dicts only; None (a missing parent) stays None."""
    if type(obj) is dict:
        return obj.get(name)
    if obj is None:
        return None
    raise TypeError(f"cannot read field {name!r} of a {type(obj).__name__}")


_NO_KWARGS: dict[str, Any] = {}


def _method(obj: Any, name: str, args: Any, kwargs: dict[str, Any]) -> Any:
    allowed = METHODS.get(type(obj))
    if allowed is None or name not in allowed:
        raise TypeError(f"{type(obj).__name__} has no method {name!r} available in expressions")
    if name == "replace":  # the one method that can multiply a string: its size is checked first
        return safe_replace(obj, *args, **kwargs)
    return getattr(obj, name)(*args, **kwargs)


class Expression:
    """A compiled expression; call it with a record (and the job variables) to evaluate it."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, fn: Fn) -> None:
        self.source = source
        self._fn = fn

    def __call__(self, record: Any, variables: Any = None) -> Any:
        return self._fn(record, variables)

    @property
    def fn(self) -> Fn:
        """The raw ``(record, variables) -> value`` closure, for tight loops."""
        return self._fn

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return compile_expression, (self.source,)  # closures don't pickle; recompiling is cheap

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@lru_cache(maxsize=1024)
def compile_expression(source: str) -> Expression:
    """Parse and compile ``source``; raises ``ExpressionError`` (a ValueError) with the column."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("an expression must be non-empty text")
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_SOURCE_LENGTH} characters")
    text = source.strip()
    try:
        tree = ast.parse(text + "\n", mode="eval")  # the newline makes errors at the end point at the end
    except SyntaxError as exc:
        line = f" on line {exc.lineno}" if exc.lineno and exc.lineno > 1 else ""
        raise ExpressionError(f"syntax error{line}: {exc.msg}", max(exc.offset or 1, 1)) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ExpressionError(f"cannot parse: {type(exc).__name__}") from None
    try:
        fn = _Compiler().compile(tree.body).fn
    except RecursionError:
        raise ExpressionError("expression nested too deeply") from None
    return Expression(text, fn)


class _Node:
    """A compiled sub-expression: its closure, and its value when it is a constant."""

    __slots__ = ("const", "fn", "is_const")

    def __init__(self, fn: Fn, is_const: bool = False, const: Any = None) -> None:
        self.fn, self.is_const, self.const = fn, is_const, const


def _constant(value: Any) -> _Node:
    return _Node(lambda r, v: value, True, value)


class _Compiler:
    """Turns a whitelisted AST into closures; anything not handled here is refused."""

    def compile(self, node: ast.AST) -> _Node:
        handler = getattr(self, f"_{type(node).__name__}", None)
        if handler is None:
            raise ExpressionError(f"{_describe(node)} is not allowed in expressions", _col(node))
        return handler(node)

    def _fold(self, node: ast.AST, compiled: _Node, *parts: _Node) -> _Node:
        """Evaluate now when every part is constant: limits then fail at validation, not per record."""
        if parts and all(p.is_const for p in parts):
            try:
                return _constant(compiled.fn(None, None))
            except LimitExceeded as exc:
                raise ExpressionError(str(exc), _col(node)) from None
            except Exception as exc:
                raise ExpressionError(f"{type(exc).__name__}: {exc}", _col(node)) from None
        return compiled

    # leaves
    def _Constant(self, node: ast.Constant) -> _Node:
        if node.value is None or isinstance(node.value, bool | int | float | str):
            if isinstance(node.value, str) and len(node.value) > MAX_SIZE:
                raise ExpressionError("string literal too long", _col(node))
            return _constant(node.value)
        raise ExpressionError(f"{type(node.value).__name__} literals are not allowed", _col(node))

    def _Name(self, node: ast.Name) -> _Node:
        name = node.id
        if name == "record":
            return _Node(lambda r, v: r)
        if name in CONSTANT_NAMES:
            return _constant(CONSTANT_NAMES[name])
        if name in VARIABLES:
            return _Node(lambda r, v: v[name])
        if name in FUNCTIONS:
            raise ExpressionError(f"function {name!r} must be called: {name}(...)", _col(node))
        raise ExpressionError(f"unknown name {name!r} (use record.{name} or record.get({name!r}) for a field; "
                              f"functions: {', '.join(sorted(FUNCTIONS))})", _col(node))

    # access
    def _Attribute(self, node: ast.Attribute) -> _Node:
        name = _public(node.attr, node)
        obj = self.compile(node.value)
        get = obj.fn
        return self._fold(node, _Node(lambda r, v: _field(get(r, v), name)), obj)

    def _Subscript(self, node: ast.Subscript) -> _Node:
        obj, key = self.compile(node.value), self.compile(node.slice)
        get_obj, get_key = obj.fn, key.fn
        if key.is_const:
            k = key.const
            return self._fold(node, _Node(lambda r, v: get_obj(r, v)[k]), obj, key)
        return self._fold(node, _Node(lambda r, v: get_obj(r, v)[get_key(r, v)]), obj, key)

    def _Slice(self, node: ast.Slice) -> _Node:
        parts = [self.compile(p) if p is not None else _constant(None) for p in (node.lower, node.upper, node.step)]
        lo, hi, st = (p.fn for p in parts)
        return self._fold(node, _Node(lambda r, v: slice(lo(r, v), hi(r, v), st(r, v))), *parts)

    # operators
    def _BinOp(self, node: ast.BinOp) -> _Node:
        op = BIN_OPS.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed", _col(node))
        left, right = self.compile(node.left), self.compile(node.right)
        if isinstance(node.op, ast.Mod) and left.is_const and isinstance(left.const, str):
            # refused here, not per record: every record would be dead-lettered at run time
            raise ExpressionError("'%' string formatting is not allowed in expressions; build text with + and "
                                  "str(): 'app ' + str(record.app)", _col(node))
        lf, rf = left.fn, right.fn
        if op is operator.sub:
            return self._fold(node, _Node(lambda r, v: lf(r, v) - rf(r, v)), left, right)
        return self._fold(node, _Node(lambda r, v: op(lf(r, v), rf(r, v))), left, right)

    def _UnaryOp(self, node: ast.UnaryOp) -> _Node:
        operand = self.compile(node.operand)
        f = operand.fn
        if isinstance(node.op, ast.Not):
            return self._fold(node, _Node(lambda r, v: not f(r, v)), operand)
        if isinstance(node.op, ast.USub):
            return self._fold(node, _Node(lambda r, v: -f(r, v)), operand)
        if isinstance(node.op, ast.UAdd):
            return self._fold(node, _Node(lambda r, v: +f(r, v)), operand)
        raise ExpressionError(f"operator {type(node.op).__name__} is not allowed", _col(node))

    def _BoolOp(self, node: ast.BoolOp) -> _Node:
        parts = [self.compile(v) for v in node.values]
        fns = [p.fn for p in parts]
        is_or = isinstance(node.op, ast.Or)  # `or` stops at the first truthy value, `and` at the first falsy
        if len(fns) == 2:  # the common case, without a loop
            a, b = fns
            pair = (lambda r, v: a(r, v) or b(r, v)) if is_or else (lambda r, v: a(r, v) and b(r, v))
            return self._fold(node, _Node(pair), *parts)

        def chain(r: Any, v: Any) -> Any:
            value = None
            for f in fns:
                value = f(r, v)
                if bool(value) is is_or:
                    return value
            return value

        return self._fold(node, _Node(chain), *parts)

    def _Compare(self, node: ast.Compare) -> _Node:
        left = self.compile(node.left)
        rights = [self.compile(c) for c in node.comparators]
        ops = [CMP_OPS[type(o)] for o in node.ops]
        if len(ops) == 1:
            lf, right, op = left.fn, rights[0], ops[0]
            if right.is_const:  # the common case (field == 'value'): one closure call, no operator lookup
                c = right.const
                fast: dict[type, Fn] = {
                    ast.Eq: lambda r, v: lf(r, v) == c, ast.NotEq: lambda r, v: lf(r, v) != c,
                    ast.Lt: lambda r, v: lf(r, v) < c, ast.LtE: lambda r, v: lf(r, v) <= c,
                    ast.Gt: lambda r, v: lf(r, v) > c, ast.GtE: lambda r, v: lf(r, v) >= c,
                    ast.In: lambda r, v: lf(r, v) in c, ast.NotIn: lambda r, v: lf(r, v) not in c,
                    ast.Is: lambda r, v: lf(r, v) is c, ast.IsNot: lambda r, v: lf(r, v) is not c,
                }
                return self._fold(node, _Node(fast[type(node.ops[0])]), left, right)
            rf = right.fn
            return self._fold(node, _Node(lambda r, v: op(lf(r, v), rf(r, v))), left, right)
        fns = [left.fn] + [c.fn for c in rights]

        def chain(r: Any, v: Any) -> bool:
            a = fns[0](r, v)
            for op, f in zip(ops, fns[1:], strict=True):
                b = f(r, v)
                if not op(a, b):
                    return False
                a = b
            return True

        return self._fold(node, _Node(chain), left, *rights)

    def _IfExp(self, node: ast.IfExp) -> _Node:
        test, body, orelse = self.compile(node.test), self.compile(node.body), self.compile(node.orelse)
        t, b, o = test.fn, body.fn, orelse.fn
        return self._fold(node, _Node(lambda r, v: b(r, v) if t(r, v) else o(r, v)), test, body, orelse)

    # literals
    def _List(self, node: ast.List) -> _Node:
        parts = [self.compile(e) for e in node.elts]
        fns = [p.fn for p in parts]
        return self._fold(node, _Node(lambda r, v: check_size([f(r, v) for f in fns])), *parts) if parts else \
            _Node(lambda r, v: [])

    def _Tuple(self, node: ast.Tuple) -> _Node:
        parts = [self.compile(e) for e in node.elts]
        fns = [p.fn for p in parts]
        return self._fold(node, _Node(lambda r, v: check_size(tuple(f(r, v) for f in fns))), *parts) if parts \
            else _constant(())

    def _Set(self, node: ast.Set) -> _Node:
        parts = [self.compile(e) for e in node.elts]
        fns = [p.fn for p in parts]
        # folded to a frozenset: ``x in {'a', 'b'}`` is then one hash lookup per record
        return self._fold(node, _Node(lambda r, v: check_size(frozenset(f(r, v) for f in fns))), *parts)

    def _Dict(self, node: ast.Dict) -> _Node:
        if any(k is None for k in node.keys):
            raise ExpressionError("'**' unpacking is not allowed", _col(node))
        keys = [self.compile(k) for k in node.keys if k is not None]
        values = [self.compile(v) for v in node.values]
        pairs = [(k.fn, v.fn) for k, v in zip(keys, values, strict=True)]
        if not pairs:
            return _Node(lambda r, v: {})
        return self._fold(node, _Node(lambda r, v: check_size({kf(r, v): vf(r, v) for kf, vf in pairs})),
                          *keys, *values)

    # calls
    def _Call(self, node: ast.Call) -> _Node:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise ExpressionError("'*' and '**' arguments are not allowed", _col(node))
        args = [self.compile(a) for a in node.args]
        kwargs = {k.arg: self.compile(k.value) for k in node.keywords if k.arg is not None}
        arg_fns = [a.fn for a in args]
        kw_fns = {k: n.fn for k, n in kwargs.items()}
        parts = [*args, *kwargs.values()]
        func = node.func
        if isinstance(func, ast.Name):
            fn = FUNCTIONS.get(func.id)
            if fn is None:
                raise ExpressionError(f"unknown function {func.id!r}; available: {', '.join(sorted(FUNCTIONS))}",
                                      _col(func))
            if not arg_fns and not kw_fns:
                return _Node(lambda r, v: fn())
            if len(arg_fns) == 1 and not kw_fns:
                a0 = arg_fns[0]
                compiled = _Node(lambda r, v: check_text(fn(a0(r, v))))
            else:
                compiled = _Node(lambda r, v: check_text(fn(*[f(r, v) for f in arg_fns],
                                                             **{k: f(r, v) for k, f in kw_fns.items()})))
            return compiled if func.id in IMPURE else self._fold(node, compiled, *parts)
        if isinstance(func, ast.Attribute):
            name = _public(func.attr, func)
            if not any(name in names for names in METHODS.values()):
                raise ExpressionError(f"method {name!r} is not available in expressions", _col(func))
            obj = self.compile(func.value)
            of = obj.fn
            if name == "get" and isinstance(func.value, ast.Name) and func.value.id == "record" and not kw_fns \
                    and 1 <= len(args) <= 2 and all(a.is_const for a in args):
                # record.get('field'[, default]): the seed filter's shape, kept to one dict lookup
                key, default = args[0].const, args[1].const if len(args) == 2 else None
                return _Node(lambda r, v: r.get(key, default))
            if kw_fns:
                compiled = _Node(lambda r, v: _method(of(r, v), name, [f(r, v) for f in arg_fns],
                                                      {k: f(r, v) for k, f in kw_fns.items()}))
            elif not arg_fns:
                compiled = _Node(lambda r, v: _method(of(r, v), name, (), _NO_KWARGS))
            elif len(arg_fns) == 1:
                a0 = arg_fns[0]
                compiled = _Node(lambda r, v: _method(of(r, v), name, (a0(r, v),), _NO_KWARGS))
            else:
                compiled = _Node(lambda r, v: _method(of(r, v), name, [f(r, v) for f in arg_fns], _NO_KWARGS))
            return self._fold(node, compiled, obj, *parts)
        raise ExpressionError("only named functions and methods can be called", _col(node))


def _public(name: str, node: ast.AST) -> str:
    if name.startswith("_"):
        raise ExpressionError(f"attribute {name!r} is not allowed (names starting with '_' are private)",
                              _col(node))
    return name


def _col(node: ast.AST) -> int:
    if isinstance(node, ast.Attribute) and node.end_col_offset is not None:
        return node.end_col_offset - len(node.attr) + 1  # point at the attribute name, not the object
    return getattr(node, "col_offset", 0) + 1


def _describe(node: ast.AST) -> str:
    names = {"Lambda": "lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
             "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression",
             "NamedExpr": "':=' assignment", "JoinedStr": "an f-string", "Await": "await", "Yield": "yield",
             "Starred": "'*' unpacking"}
    return names.get(type(node).__name__, type(node).__name__)
