"""Limits on what an expression may build, so one record (or one job file) cannot stall a worker.

Every string, list or object an expression builds is bounded by ``MAX_STRING_LENGTH`` characters
plus nested items, and exponents by ``MAX_POWER``; the guarded operators check before they build.
"""

from __future__ import annotations

from typing import Any

MAX_STRING_LENGTH = 1_000_000
"""Largest value an expression may build, in characters plus nested items: guards against
``'a' * 10**9`` and ``[[1] * 1000] * 1000`` while leaving room for long log messages."""

MAX_POWER = 1000
"""Largest exponent ``**`` accepts: ``10**1000`` is fine, ``9**9**9`` is refused."""


def weight(value: Any, limit: int = MAX_STRING_LENGTH) -> int:
    """Size of a value: characters of strings plus items of containers, nested; counting stops past
    ``limit``. Bounding it for every value an expression builds keeps ``str()``, comparisons and
    ``in`` on built values cheap, since nested repetition cannot multiply past it."""
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
    """Function results: text is bounded (``str()`` of a built value); containers they return are
    either record data or bounded by their inputs, so they are not walked again."""
    if type(value) is str and len(value) > MAX_STRING_LENGTH:
        raise ValueError(f"result longer than {MAX_STRING_LENGTH} characters")
    return value


def check_size(value: Any) -> Any:
    """``value`` unchanged, or ValueError when a built string or container is over the limit."""
    if isinstance(value, str):
        if len(value) > MAX_STRING_LENGTH:
            raise ValueError(f"result longer than {MAX_STRING_LENGTH} characters")
    elif isinstance(value, list | tuple | set | frozenset | dict) and weight(value) > MAX_STRING_LENGTH:
        raise ValueError(f"result larger than {MAX_STRING_LENGTH} items")
    return value


def safe_pow(a: Any, b: Any) -> Any:
    """``a ** b`` with the exponent bounded, so one record cannot stall a worker."""
    if isinstance(b, int | float) and abs(b) > MAX_POWER:
        raise ValueError(f"exponent {b} is larger than {MAX_POWER}")
    return a**b


def safe_mul(a: Any, b: Any) -> Any:
    """``a * b`` that refuses to build values larger than ``MAX_STRING_LENGTH`` (nested items count)."""
    if isinstance(b, str | list | tuple) and isinstance(a, int):
        a, b = b, a
    if isinstance(a, str | list | tuple) and isinstance(b, int):
        size = len(a) if isinstance(a, str) else weight(a)
        if size * b > MAX_STRING_LENGTH:
            raise ValueError(f"repetition would build more than {MAX_STRING_LENGTH} items")
    return a * b


def safe_add(a: Any, b: Any) -> Any:
    """``a + b`` with concatenations bounded by ``MAX_STRING_LENGTH``."""
    if isinstance(a, str) and isinstance(b, str):
        if len(a) + len(b) > MAX_STRING_LENGTH:
            raise ValueError(f"result longer than {MAX_STRING_LENGTH} characters")
        return a + b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if weight(a) + weight(b) > MAX_STRING_LENGTH:
            raise ValueError(f"result larger than {MAX_STRING_LENGTH} items")
    return a + b


def safe_mod(a: Any, b: Any) -> Any:
    """Numeric ``%`` only: printf-style ``'%999999999s' % x`` would allocate without bound."""
    if isinstance(a, str | bytes):
        raise TypeError("'%' string formatting is not supported in expressions")
    return a % b
