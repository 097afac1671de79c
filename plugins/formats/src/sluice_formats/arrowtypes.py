"""Arrow types for Parquet: declared type names, the widening rules of an inferred schema, and
fitting a batch's table to a file's schema. pyarrow is imported inside functions.

Widening (``schema_changes: widen``): a type that is still unknown (null) takes the first one seen,
integers widen to floats, a struct gains the fields it lacked, a list widens its items, a record
brings new columns. Anything else (a string where the file has an integer) is a conflict.
"""

from __future__ import annotations

import re
from typing import Any

ALIASES = {
    "str": "string", "string": "string", "text": "string", "json": "string",
    "int": "int64", "integer": "int64", "long": "int64",
    "float": "float64", "double": "float64",
    "bool": "bool", "boolean": "bool",
    "date": "date32", "timestamp": "timestamp[us, tz=UTC]",
}


class Conflict(Exception):
    """Two types of one column that do not widen into each other."""

    def __init__(self, path: str, old: Any, new: Any) -> None:
        super().__init__(f"column {path!r}: {_name(old)} in the file's schema, {_name(new)} in this record")
        self.path, self.old, self.new = path, old, new


def _name(t: Any) -> str:
    return "absent" if t is None else str(t)


def parse_type(text: str) -> Any:
    """A pyarrow type from a declared name: ``string``, ``int64``, ``float``, ``bool``, ``date``,
    ``timestamp[ms, tz=UTC]``, ``decimal(12, 2)``, ``list<string>``, ``struct<id: int64, name: string>``,
    ``json`` (a string column holding JSON text), or any pyarrow type alias."""
    t, rest = _parse(text.strip())
    if rest.strip():
        raise ValueError(f"unexpected {rest.strip()!r} in type {text!r}")
    return t


def _parse(text: str) -> tuple[Any, str]:
    import pyarrow as pa

    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", text)
    if not m:
        raise ValueError(f"expected a type name at {text!r}")
    name, rest = m.group(1).lower(), text[m.end():]
    if name in ("list", "array") and rest.lstrip().startswith("<"):
        item, rest = _parse(rest.lstrip()[1:])
        return pa.list_(item), _expect(rest, ">")
    if name == "struct" and rest.lstrip().startswith("<"):
        rest, fields = rest.lstrip()[1:], []
        while True:
            fm = re.match(r"\s*([^:<>,]+?)\s*:", rest)
            if not fm:
                raise ValueError(f"expected 'name: type' in struct at {rest!r}")
            t, rest = _parse(rest[fm.end():])
            fields.append(pa.field(fm.group(1), t))
            rest = rest.lstrip()
            if rest.startswith(","):
                rest = rest[1:]
                continue
            return pa.struct(fields), _expect(rest, ">")
    if name in ("decimal", "decimal128") and rest.lstrip().startswith("("):
        dm = re.match(r"\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", rest)
        if not dm:
            raise ValueError(f"expected decimal(precision, scale) at {text!r}")
        return pa.decimal128(int(dm.group(1)), int(dm.group(2))), rest[dm.end():]
    if name == "timestamp" and rest.lstrip().startswith("["):
        tm = re.match(r"\s*\[\s*(s|ms|us|ns)\s*(?:,\s*(?:tz\s*=\s*)?([^\]\s]+)\s*)?\]", rest)
        if not tm:
            raise ValueError(f"expected timestamp[unit] or timestamp[unit, tz=zone] at {text!r}")
        return pa.timestamp(tm.group(1), tz=tm.group(2)), rest[tm.end():]
    alias = ALIASES.get(name, name)
    if alias != name:
        return _parse(alias)[0], rest
    try:
        return pa.type_for_alias(name), rest
    except ValueError:
        raise ValueError(f"unknown type {name!r}") from None


def _expect(rest: str, token: str) -> str:
    rest = rest.lstrip()
    if not rest.startswith(token):
        raise ValueError(f"expected {token!r} at {rest!r}")
    return rest[1:]


def merge(old: Any, new: Any, path: str = "") -> Any:
    """The narrowest type holding values of both ``old`` and ``new``; raises ``Conflict``."""
    import pyarrow as pa
    import pyarrow.types as pt

    if old.equals(new):
        return old
    if pt.is_null(old):
        return new
    if pt.is_null(new):
        return old
    if pt.is_integer(old) and pt.is_integer(new):
        return pa.int64()
    if (pt.is_integer(old) or pt.is_floating(old)) and (pt.is_integer(new) or pt.is_floating(new)):
        return pa.float64()
    if pt.is_struct(old) and pt.is_struct(new):
        return pa.struct(merge_fields(list(old), list(new), path))
    if pt.is_list(old) and pt.is_list(new):
        return pa.list_(merge(old.value_type, new.value_type, f"{path}[]"))
    raise Conflict(path, old, new)


def merge_fields(old: list[Any], new: list[Any], path: str = "") -> list[Any]:
    """Fields of ``old`` in their order (widened), then the fields only ``new`` has."""
    import pyarrow as pa

    by_name = {f.name: f for f in new}
    out = []
    for f in old:
        other = by_name.pop(f.name, None)
        out.append(f if other is None else pa.field(f.name, merge(f.type, other.type, _join(path, f.name))))
    return out + list(by_name.values())


def merge_schema(old: Any, new: Any) -> Any:
    import pyarrow as pa

    return pa.schema(merge_fields(list(old), list(new)), metadata=old.metadata)


def first_change(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """Where ``new`` (a widening of ``old``) differs from it: ``(column, old type or None, new type)``."""
    import pyarrow.types as pt

    old_fields = {f.name: f for f in old}
    for f in new:
        here = _join(path, f.name)
        before = old_fields.get(f.name)
        if before is None:
            return here, None, f.type
        if not before.type.equals(f.type):
            if pt.is_struct(before.type) and pt.is_struct(f.type):
                inner = first_change(before.type, f.type, here)
                if inner is not None:
                    return inner
            return here, before.type, f.type
    return None


def only_fills_nulls(old: Any, new: Any) -> bool:
    """Whether ``new`` differs from ``old`` only by types that were unknown (null) becoming known."""
    import pyarrow.types as pt

    if old.equals(new) or pt.is_null(old):
        return True
    if pt.is_struct(old) and pt.is_struct(new):
        return [f.name for f in old] == [f.name for f in new] and \
            all(only_fills_nulls(a.type, b.type) for a, b in zip(old, new, strict=True))
    if pt.is_list(old) and pt.is_list(new):
        return only_fills_nulls(old.value_type, new.value_type)
    return False


def has_empty_struct(t: Any) -> bool:
    """Parquet cannot store a struct without fields (what ``{}`` infers to)."""
    import pyarrow.types as pt

    if pt.is_struct(t):
        return t.num_fields == 0 or any(has_empty_struct(f.type) for f in t)
    if pt.is_list(t):
        return has_empty_struct(t.value_type)
    return False


def fit(column: Any, target: Any) -> Any:
    """A (chunked) array cast to ``target``, recursing into structs so missing fields become nulls."""
    import pyarrow as pa
    import pyarrow.types as pt

    if column.type.equals(target):
        return column
    if pt.is_struct(target) and pt.is_struct(column.type):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        return pa.chunked_array([_fit_struct(c, target) for c in chunks], type=target)
    return column.cast(target)


def _fit_struct(array: Any, target: Any) -> Any:
    import pyarrow as pa

    names = [array.type.field(i).name for i in range(array.type.num_fields)]
    children = []
    for f in target:
        if f.name in names:
            children.append(fit(array.field(names.index(f.name)), f.type))
        else:
            children.append(pa.nulls(len(array), f.type))
    children = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in children]
    return pa.StructArray.from_arrays(children, fields=list(target), mask=array.is_null())


def fit_table(table: Any, schema: Any) -> Any:
    """``table`` with the columns of ``schema``, in its order and types (absent ones all null)."""
    import pyarrow as pa

    columns = [fit(table[f.name], f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
