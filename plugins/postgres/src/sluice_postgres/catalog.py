"""What the catalog says about a table: its columns and types, keys, unique indexes, foreign keys.

Read once when a component opens, so a missing table or column is an error before any data moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    """One column: its SQL type as the catalog prints it, and what the server fills in by itself."""

    name: str
    type: str  # format_type: 'timestamp with time zone', 'numeric(12,2)', 'text[]'
    base: str  # the (domain's base) type name: 'timestamptz', 'jsonb', '_text' for text[]
    not_null: bool = False
    has_default: bool = False
    identity: bool = False
    generated: bool = False
    plain: str = ""  # the type without modifiers: 'numeric', 'character varying'

    @property
    def is_json(self) -> bool:
        return self.base in ("json", "jsonb")

    @property
    def is_array(self) -> bool:
        return self.base.startswith("_")

    @property
    def is_bytea(self) -> bool:
        return self.base == "bytea"

    @property
    def server_filled(self) -> bool:
        """Identity and generated columns: the server computes them."""
        return self.identity or self.generated


@dataclass(frozen=True)
class Unique:
    """A unique index: its name, its plain columns, and whether it has no expression nor predicate."""

    name: str
    columns: tuple[str, ...]
    simple: bool
    primary: bool
    definition: str


@dataclass
class Table:
    """A table as the catalog describes it."""

    schema: str
    name: str
    oid: int
    columns: dict[str, Column] = field(default_factory=dict)
    unique: list[Unique] = field(default_factory=list)
    foreign_keys: list[tuple[str, str]] = field(default_factory=list)  # (name, definition)

    @property
    def qualified(self) -> str:
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def primary_key(self) -> list[str]:
        return next((list(u.columns) for u in self.unique if u.primary), [])

    def unique_on(self, columns: list[str]) -> Unique | None:
        """A simple unique index (or primary key) on exactly these columns, in any order."""
        wanted = set(columns)
        return next((u for u in self.unique if u.simple and set(u.columns) == wanted
                     and len(u.columns) == len(wanted)), None)


def split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` → (schema, table); quotes keep dots and case (``"My.Schema"."T"``)."""
    parts: list[str] = []
    buf, quoted, i = "", False, 0
    while i < len(name):
        ch = name[i]
        if ch == '"':
            if quoted and i + 1 < len(name) and name[i + 1] == '"':
                buf += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(buf)
            buf = ""
        else:
            buf += ch if quoted else ch.lower()
        i += 1
    parts.append(buf)
    if len(parts) == 1:
        return None, parts[0]
    return parts[-2], parts[-1]


def current_schema(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_schema()").fetchone()
    if not row or not row[0]:
        from sluice import ConfigError

        raise ConfigError("postgres: the connection has no current schema (search_path is empty): qualify the "
                          "table name (schema.table)")
    return str(row[0])


def find_table(conn: psycopg.Connection[Any], name: str) -> Table | None:
    """The table ``name`` (resolved like SQL would, through search_path), or None when it does not exist."""
    schema, table = split_name(name)
    qualified = f"{ident(schema)}.{ident(table)}" if schema else ident(table)
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%s)", (qualified,)).fetchone()
    if row is None:
        return None
    t = Table(schema=row[1], name=row[2], oid=row[0])
    for r in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
            "       CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END, "
            "       a.attnotnull, a.atthasdef, a.attidentity <> '', a.attgenerated <> '', "
            "       format_type(a.atttypid, NULL) "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_type bt ON bt.oid = t.typbasetype "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (t.oid,)):
        t.columns[r[0]] = Column(r[0], r[1], r[2], bool(r[3]), bool(r[4]), bool(r[5]), bool(r[6]), r[7])
    for r in conn.execute(
            "SELECT i.relname, ix.indisprimary, ix.indexprs IS NULL AND ix.indpred IS NULL, "
            "       ARRAY(SELECT a.attname FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum ORDER BY k.ord), "
            "       pg_get_indexdef(ix.indexrelid) "
            "FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid "
            "WHERE ix.indrelid = %s AND ix.indisunique AND ix.indisvalid ORDER BY ix.indisprimary DESC, i.relname",
            (t.oid,)):
        t.unique.append(Unique(r[0], tuple(r[3]), bool(r[2]), bool(r[1]), r[4]))
    t.foreign_keys = [(r[0], r[1]) for r in conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s AND contype = 'f' "
        "ORDER BY conname", (t.oid,))]
    return t
