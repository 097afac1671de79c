"""The Jinja environment job templates render in: sandboxed, and bounded in time and size.

Jinja's sandbox stops attribute escapes (``__class__``, ``__globals__``) but not a template that
runs for ever or builds gigabytes. Here, in addition:

- the operators that can build large values (``+ * ** %``, ``~``) check the size first
  (``limits.py``); methods of text, lists and objects are limited to a list that builds nothing
  large, and the filters that pad or repeat (``center``, ``indent``, ``replace``, ``format``...)
  check their arguments;
- each render has a budget: ``MAX_STEPS`` loop iterations, calls and filters, ``MAX_BUILT``
  characters and items built (output included), and ``MAX_SECONDS``, checked at every step, so
  neither nested loops nor values kept in a list can add up past it;
- loops cannot be recursive, and a template cannot include, import or extend another (there are
  no files to read).

Exceeding a bound raises ``LimitExceeded`` naming it; the renderer turns it into a config error
(or, for a per-record template, a dead letter).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes, pass_context, pass_environment
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import limits
from .limits import LimitExceeded

MAX_STEPS = 100_000
"""Loop iterations, calls and filters one render may take (Jinja's own cap on one ``range``)."""

MAX_BUILT = 10 * limits.MAX_SIZE
"""Characters and items one render may build, its output included."""

MACRO_COST = 10
"""Steps a macro call counts for: it costs a new frame and argument handling, about ten simple steps."""

MAX_SECONDS = 2.0
"""Time one render may take: a backstop for work the step count does not see."""

SAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset({
        "capitalize", "casefold", "count", "endswith", "find", "format", "format_map", "index", "isalnum",
        "isalpha", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join",
        "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
        "upper"}),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    int: frozenset({"bit_length", "is_integer"}),
    float: frozenset({"is_integer"}),
    bytes: frozenset(),
}
"""Methods (and attributes) of built-in values a template may use; none builds a large value, or
it is checked (``replace``, ``join``, ``format``)."""

LOOP_FILTER = "_sluice_loop"
CHARGE_FILTER = "_sluice_charge"


class _Budget:
    """What one render may still spend."""

    __slots__ = ("built", "deadline", "steps")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.built = MAX_BUILT
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self, cost: int = 1) -> None:
        self.steps -= cost
        if self.steps < 0:
            raise LimitExceeded(f"more than {MAX_STEPS} steps (loop iterations, calls, filters) in one render")
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"rendering took longer than {MAX_SECONDS:g} s")

    def build(self, size: int) -> None:
        self.built -= size
        if self.built < 0:
            raise LimitExceeded(f"more than {MAX_BUILT} characters and items built in one render")


_budget: ContextVar[_Budget | None] = ContextVar("sluice_template_budget", default=None)


def render(template: Any, variables: dict[str, Any]) -> str:
    """Render a template of a ``BoundedEnvironment`` with a fresh budget."""
    token = _budget.set(_Budget())
    try:
        return template.render(variables)
    finally:
        _budget.reset(token)


def _step(cost: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.step(cost)


def _built(value: Any) -> Any:
    """``value``, counted against the render's budget when it is text or a container."""
    if isinstance(value, str | list | tuple | dict):
        budget = _budget.get()
        if budget is not None:
            budget.build(len(value))
    return value


def _finalize(value: Any) -> str:
    """Every ``{{ ... }}`` output: counted against the render's budget."""
    return _built(value if type(value) is str else str(value))


@pass_context  # never folded at compile time
def _loop(context: Context, iterable: Any, body_size: int) -> Iterator[Any]:
    """Wraps every ``{% for %}``: each iteration is a step and outputs the body's literal text."""
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.step()
            budget.build(body_size)
        yield item


@pass_context
def _charge(context: Context, value: Any, body_size: int) -> str:
    """At the start of a macro or call block body: its literal text is output once per call."""
    budget = _budget.get()
    if budget is not None:
        budget.build(body_size)
    return ""


def _literal_size(body: list[nodes.Node]) -> int:
    total = 0
    for node in body:
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        total += sum(len(data.data) for data in node.find_all(nodes.TemplateData))
    return total


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles templates with every loop, macro and concatenation going through the budget."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for other in node.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            tag = type(other).__name__.lower().replace("fromimport", "from ... import")
            self.fail(f"{{% {tag} %}} is not available in job templates (they cannot read other files)",
                      other.lineno)
        for loop in list(node.find_all(nodes.For)):
            if loop.recursive:
                self.fail("recursive loops are not available in job templates", loop.lineno)
            loop.iter = nodes.Filter(loop.iter, LOOP_FILTER, [nodes.Const(_literal_size(loop.body))], [], None,
                                     None, lineno=loop.lineno)
        for block in list(node.find_all((nodes.Macro, nodes.CallBlock))):
            charge = nodes.Filter(nodes.Const(""), CHARGE_FILTER, [nodes.Const(_literal_size(block.body))], [],
                                  None, None, lineno=block.lineno)
            block.body.insert(0, nodes.Output([charge], lineno=block.lineno))
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _checked_filter(name: str, fn: Callable[..., Any], check: Callable[..., None] | None) -> Callable[..., Any]:
    """A built-in filter counted as a step, with its arguments checked first and its text result after."""

    @functools.wraps(fn)  # keeps ``jinja_pass_arg`` (pass_context and friends)
    def run(*args: Any, **kwargs: Any) -> Any:
        _step()
        if check is not None:
            # the value is the first argument after any context/environment Jinja passes
            offset = 1 if getattr(fn, "jinja_pass_arg", None) is not None else 0
            check(*args[offset:], **kwargs)
        return _built(limits.check_text(fn(*args, **kwargs)))

    return run


def _at_most(limit: int, what: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if isinstance(value, int) and abs(value) > limit:
            raise LimitExceeded(f"{what} {value} is larger than {limit}")

    return check


_size = _at_most(limits.MAX_SIZE, "width")
_steps = _at_most(MAX_STEPS, "count")


def _check_indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if per_line * (str(value).count("\n") + 1) > limits.MAX_SIZE:
        raise LimitExceeded(f"indent would build more than {limits.MAX_SIZE} characters")


def _check_wordwrap(value: Any, width: int = 79, break_long_words: bool = True, wrapstring: Any = None,
                    *args: Any, **kwargs: Any) -> None:
    width, wrapstring = kwargs.get("width", width), kwargs.get("wrapstring", wrapstring)
    lines = len(str(value)) // max(int(width), 1) + 1 if isinstance(width, int) else 1
    if isinstance(wrapstring, str) and lines * len(wrapstring) > limits.MAX_SIZE:
        raise LimitExceeded(f"wordwrap would build more than {limits.MAX_SIZE} characters")


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None, **kwargs: Any) -> None:
    text = str(value)
    limits.safe_replace(text, str(old), str(new), -1 if count is None else count)


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    limits.check_printf(str(value))


def _check_batch(value: Any, linecount: Any = 1, *args: Any, **kwargs: Any) -> None:
    _size(kwargs.get("linecount", linecount))


def _check_slice(value: Any, slices: Any = 1, *args: Any, **kwargs: Any) -> None:
    _steps(kwargs.get("slices", slices))


def _check_round(value: Any, precision: Any = 0, *args: Any, **kwargs: Any) -> None:
    limits.safe_round(0, kwargs.get("precision", precision))


def _check_sum(value: Any, attribute: Any = None, start: Any = 0, **kwargs: Any) -> None:
    start = kwargs.get("start", start)
    if not isinstance(start, int | float):
        raise LimitExceeded("sum adds numbers (start must be a number)")


def _check_tojson(value: Any, indent: Any = None, **kwargs: Any) -> None:
    _at_most(16, "indent")(kwargs.get("indent", indent))


@pass_environment
def _join(environment: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """The ``join`` filter, refused as soon as the parts reach ``MAX_SIZE`` characters."""
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    return limits.safe_join(str(d), value, convert=str)


def _check_center(value: Any, width: Any = 80, **kwargs: Any) -> None:
    _size(kwargs.get("width", width))


FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "batch": _check_batch, "center": _check_center, "format": _check_format, "indent": _check_indent,
    "replace": _check_replace, "round": _check_round, "slice": _check_slice,
    "sum": _check_sum, "tojson": _check_tojson, "wordwrap": _check_wordwrap,
}
"""Filters whose arguments can make the result much larger than the value: checked before they run."""


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with the bounds of this module."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    code_generator_class = _BoundedCodeGenerator
    BINOPS: dict[str, Callable[[Any, Any], Any]] = {
        "+": limits.safe_add, "*": limits.safe_mul, "**": limits.safe_pow, "%": limits.printf,
    }

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals.pop("lipsum", None)  # lipsum(n=10**9) would write for ever; no job needs it
        self.filters = {name: _checked_filter(name, fn, FILTER_CHECKS.get(name)) for name, fn in self.filters.items()}
        self.filters["join"] = _checked_filter("join", _join, None)
        self.filters[LOOP_FILTER] = _loop
        self.filters[CHARGE_FILTER] = _charge

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _built(self.BINOPS[operator](left, right))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, allowed in SAFE_METHODS.items():
            if isinstance(obj, kind):
                return attr in allowed
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, tuple(SAFE_METHODS)) and not attribute.startswith("_"):
            from jinja2.exceptions import SecurityError

            return self.undefined(f"{type(obj).__name__}.{attribute} is not available in job templates",
                                  name=attribute, obj=obj, exc=SecurityError)
        return super().unsafe_undefined(obj, attribute)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            limits.check_format(value.__self__)
        return wrapped

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step(MACRO_COST if isinstance(__obj, Macro) else 1)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "replace":
                return _built(limits.safe_replace(owner, *args, **kwargs))
            if name == "join" and len(args) == 1 and not kwargs:
                return _built(limits.safe_join(owner, args[0]))
        return _built(limits.check_text(super().call(__context, __obj, *args, **kwargs)))

    @staticmethod
    def concat_bounded(parts: tuple[Any, ...]) -> str:
        """``a ~ b ~ c``, refused before building more than ``MAX_SIZE`` characters."""
        texts = [p if type(p) is str else str(p) for p in parts]
        if sum(map(len, texts)) > limits.MAX_SIZE:
            raise LimitExceeded(f"'~' would build more than {limits.MAX_SIZE} characters")
        return _built("".join(texts))
