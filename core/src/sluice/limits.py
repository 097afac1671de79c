"""Bounds on what a job's templates and expressions may build, checked before building.

A job file (or one record's fields) must not be able to stall a worker or exhaust its memory:
``'a' * 10**9``, ``10**(10**10)`` or ``'%999999999s' % x`` would each run for minutes or allocate
gigabytes before any check on the result could refuse it. So every operation that can make a
value much larger than its inputs checks the size it is about to build first, and refuses with a
``LimitExceeded`` (a ValueError) that says which limit. The Jinja sandbox (``sandbox.py``) and the
expression language of ``sluice-transforms`` share these functions, so both have one set of limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from string import Formatter
from typing import Any

MAX_SIZE = 1_000_000
"""Largest value a template or expression may build: characters of a string, or items of a list
or object plus the characters and items nested in them."""

MAX_POWER = 1000
"""Largest exponent ``**`` accepts."""

MAX_INT_BITS = 16_384
"""Largest integer ``**`` and ``*`` may build (about 4,900 decimal digits; Python prints at most
4,300): ``(10**1000)**1000`` is refused before it is computed."""

MAX_NDIGITS = 1000
"""Largest ``ndigits`` of ``round`` (``round(1, -10**9)`` would compute ``10**(10**9)``)."""


class LimitExceeded(ValueError):
    """A template or expression would build a value larger than a limit of this module."""


def weight(value: Any, limit: int = MAX_SIZE) -> int:
    """Size of a value: characters of strings plus items of containers, nested; counting stops
    past ``limit``. Bounding it for every value built keeps ``str()``, comparisons and ``in`` on
    built values cheap, since nested repetition cannot multiply past it."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) or 1
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item) or 1
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        else:
            total += 1
        if total > limit:
            return total
    return total


def check_text(value: Any) -> Any:
    """``value`` unchanged, or LimitExceeded when it is text longer than ``MAX_SIZE``."""
    if isinstance(value, str) and len(value) > MAX_SIZE:
        raise LimitExceeded(f"result longer than {MAX_SIZE} characters")
    return value


def check_size(value: Any) -> Any:
    """``value`` unchanged, or LimitExceeded when a built string or container is over ``MAX_SIZE``."""
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, list | tuple | set | frozenset | dict) and weight(value) > MAX_SIZE:
        raise LimitExceeded(f"result larger than {MAX_SIZE} items")
    return value


def _int_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"{what} would have more than {MAX_INT_BITS} bits")


def safe_pow(a: Any, b: Any) -> Any:
    """``a ** b`` with the exponent and the size of an integer result bounded."""
    if isinstance(b, int | float) and abs(b) > MAX_POWER:
        raise LimitExceeded(f"exponent {b} is larger than {MAX_POWER}")
    if isinstance(a, int) and isinstance(b, int) and b > 1 and abs(a) > 1:
        _int_bits((abs(a).bit_length() - 1) * b + 1, "the power")
    return a**b


def safe_mul(a: Any, b: Any) -> Any:
    """``a * b`` that refuses to build text or lists over ``MAX_SIZE`` or integers over ``MAX_INT_BITS``."""
    if isinstance(b, str | list | tuple) and isinstance(a, int):
        a, b = b, a
    if isinstance(a, str | list | tuple) and isinstance(b, int):
        size = len(a) if isinstance(a, str) else weight(a)
        if size * b > MAX_SIZE:
            raise LimitExceeded(f"repetition would build more than {MAX_SIZE} items")
    elif isinstance(a, int) and isinstance(b, int):
        _int_bits(a.bit_length() + b.bit_length() - 1, "the product")
    return a * b


def safe_add(a: Any, b: Any) -> Any:
    """``a + b`` with concatenations bounded by ``MAX_SIZE``."""
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_SIZE:
            raise LimitExceeded(f"result longer than {MAX_SIZE} characters")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if weight(a) + weight(b) > MAX_SIZE:
            raise LimitExceeded(f"result larger than {MAX_SIZE} items")
    return a + b


def numeric_mod(a: Any, b: Any) -> Any:
    """``%`` on numbers only (the expression language has no printf-style formatting)."""
    if isinstance(a, str | bytes):
        raise TypeError("'%' string formatting is not supported in expressions")
    return a % b


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def check_printf(template: str) -> None:
    """Refuse a printf-style format whose widths and precisions could build more than ``MAX_SIZE``
    characters (``'%999999999s'``), or that takes them from the arguments (``'%*s'``)."""
    total = len(template)
    for width, precision, _ in _PRINTF.findall(template):
        if "*" in (width, precision):
            raise LimitExceeded("'*' widths are not supported in '%' formatting")
        total += int(width or 0) + int(precision or 0)
    if total > MAX_SIZE:
        raise LimitExceeded(f"'%' formatting with these widths would build more than {MAX_SIZE} characters")


def printf(template: Any, args: Any) -> Any:
    """``template % args`` with the widths of a text template bounded; numbers as usual."""
    if isinstance(template, str):
        check_printf(template)
        return check_text(template % args)
    return template % args


def check_format(template: str) -> None:
    """The same bound for ``str.format`` templates: ``'{:>999999999}'`` is refused, and so are
    widths taken from the arguments (``'{:{w}}'``)."""
    total = len(template)
    for _, _, spec, _ in Formatter().parse(template):
        if spec:
            if "{" in spec:
                raise LimitExceeded("nested '{}' in a format spec are not supported")
            total += sum(int(n) for n in re.findall(r"\d+", spec))
    if total > MAX_SIZE:
        raise LimitExceeded(f"format widths would build more than {MAX_SIZE} characters")


def safe_replace(text: str, old: str, new: str, count: int = -1) -> str:
    """``str.replace`` with the size of the result checked before it is built."""
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = len(text) + 1 if old == "" else text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(text) + hits * (len(new) - len(old)) > MAX_SIZE:
            raise LimitExceeded(f"result longer than {MAX_SIZE} characters")
    return text.replace(old, new, count)


def safe_join(separator: str, values: Iterable[Any], convert: Callable[[Any], str] | None = None) -> str:
    """``separator.join(values)``, refused as soon as the parts reach ``MAX_SIZE`` characters (before
    they are joined, and before more of a generator is consumed). ``convert`` turns parts that are
    not text into text; without it they are a TypeError, as in Python."""
    parts: list[str] = []
    size = 0
    for value in values:
        if not isinstance(value, str):
            if convert is None:
                raise TypeError(f"sequence item {len(parts)}: expected str instance, {type(value).__name__} found")
            value = convert(value)
        size += len(value) + (len(separator) if parts else 0)
        if size > MAX_SIZE:
            raise LimitExceeded(f"result longer than {MAX_SIZE} characters")
        parts.append(value)
    return separator.join(parts)


def safe_round(value: Any, ndigits: Any = None) -> Any:
    """``round`` with ``ndigits`` bounded."""
    if isinstance(ndigits, int) and abs(ndigits) > MAX_NDIGITS:
        raise LimitExceeded(f"round: ndigits {ndigits} is beyond ±{MAX_NDIGITS}")
    return round(value) if ndigits is None else round(value, ndigits)
