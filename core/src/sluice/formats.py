"""File formats: how records become the bytes of a part file, and how a file's bytes become records.

A format has a **reader** (a byte stream in, chunks of records out, each with the position reached,
so a partition resumes inside a file) and a **writer** (batches in, the bytes of one part file out).
File-based sources and sinks (core's ``file``, sluice-s3's ``s3``) take ``format:``, a name or a
block with the format's own options, and leave the rest to the format:

    format: parquet
    format: {type: csv, delimiter: ";", header: false}

Formats come from the ``sluice_formats`` hook; core ships ``jsonl``, ``sluice-formats`` adds
``parquet``, ``csv`` and ``tsv``. Text formats (``text = True``) read and write plain bytes that the
container compresses (gzip, zstd); binary ones (Parquet) compress inside and read from a seekable
file, so a container hands them random access instead of a stream.
"""

from __future__ import annotations

import difflib
import threading
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, ClassVar

from pydantic import BaseModel, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from .components import ComponentConfig
from .errors import ConfigError, PluginError
from .records import DeadLetter, Record

if TYPE_CHECKING:
    from .registry import Registry


class FormatConfig(ComponentConfig):
    """Base of a format's options (unknown keys are errors, as for components)."""


@dataclass(slots=True)
class Chunk:
    """Records read from one file, with where the next read resumes.

    ``position`` is JSON-safe and belongs to the format (``{"line": 120}`` for text formats,
    ``{"row_group": 3, "offset": 500}`` for Parquet); passing it back to ``read`` continues right after
    these records. ``damage`` is set on the last chunk when the file turned out corrupt or truncated
    after the records delivered so far.
    """

    records: list[Record]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    position: dict[str, Any] = field(default_factory=dict)
    damage: BaseException | None = None


class Rollover(Exception):
    """Raised by ``FormatWriter.add`` before it takes anything: the open file cannot hold these
    records (its schema is fixed once written). The container closes the file, starts the next one
    with ``state=writer.state`` and adds the same records there."""


class FormatWriter:
    """Writes one part file: ``add`` batches, then ``finish``. The container stores the bytes (and,
    for text formats, compresses them), names the file and decides when to roll over."""

    records: int = 0
    state: Any = None  # carried to the next file of the same partition (e.g. the schema learned)

    def add(self, records: list[Record]) -> tuple[bytes, list[DeadLetter]]:
        """Encode ``records``; returns the bytes ready now (maybe none yet) and the records refused."""
        raise NotImplementedError

    def finish(self) -> bytes:
        """The rest of the file (buffered rows, a footer); the writer is done after this."""
        return b""


class Format:
    """A file format, named by ``type`` in ``format:``; ``Config`` validates its options.

    Subclasses set ``type``, ``Config``, ``extension`` (added to part-file names, before any
    compression extension), ``suffixes`` (file names a folder listing reads) and ``content_type``.
    An instance holds validated options only: it is cheap, thread-safe and picklable.
    """

    type: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = FormatConfig
    extension: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    content_type: ClassVar[str] = "application/octet-stream"
    text: ClassVar[bool] = True
    """True: a byte stream that gzip/zstd may wrap, read sequentially. False: the format compresses
    inside and ``read`` gets a seekable file (a local file, or ranged reads of an object)."""

    def __init__(self, config: BaseModel | None = None) -> None:
        self.config = config if config is not None else self.Config()

    def read(self, stream: BinaryIO, *, position: dict[str, Any] | None, batch_size: int,
             where: dict[str, Any]) -> Iterator[Chunk]:
        """Chunks of at most ``batch_size`` records plus dead letters, from ``position`` on (None:
        the start). ``where`` (file, bucket and key...) goes into each dead letter's context."""
        raise NotImplementedError

    def writer(self, *, state: Any = None, partition_column: str | None = None) -> FormatWriter:
        """A writer of one part file. ``state`` comes from the previous file of the same partition;
        ``partition_column`` names a record field whose value the file's folder already holds
        (hive ``name=value``): a columnar format may leave it out of the file."""
        raise NotImplementedError

    def count(self, stream: BinaryIO) -> int:
        """Records in a whole file this format wrote (for the manifest of files written elsewhere)."""
        raise NotImplementedError

    def describe(self, position: dict[str, Any] | None) -> str:
        """A position in words, for messages: ``line 41``, ``row group 2, row 100``."""
        position = position or {}
        if "line" in position:
            return f"line {position['line']}"
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in position.items()) or "the start"

    def spec(self) -> dict[str, Any]:
        """The ``format:`` block this instance was built from (only the options that were set)."""
        return {"type": self.type, **self.config.model_dump(exclude_unset=True, by_alias=True, mode="json")}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config == self.config  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.type)

    def __repr__(self) -> str:
        return f"<format {self.spec()}>"


# -- lookup -------------------------------------------------------------------------------------

_BUILTIN = "jsonl"
_cache: weakref.WeakKeyDictionary[Registry, dict[str, type[Format]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _builtin() -> dict[str, type[Format]]:
    from .builtin.jsonl import JsonlFormat

    return {JsonlFormat.type: JsonlFormat}


def format_types(registry: Registry | None = None) -> dict[str, type[Format]]:
    """Every format name (and alias) the registry's plugins provide, core's ``jsonl`` included.

    Two plugins giving one name fail, naming both, as for component types."""
    from .registry import get_registry

    registry = registry or get_registry()
    with _lock:
        known = _cache.get(registry)
        if known is not None:
            return known
        known, owners = _builtin(), {_BUILTIN: "sluice"}
        for impl in registry.hook().sluice_formats.get_hookimpls():
            try:
                classes = impl.function() or []
            except Exception as exc:  # one broken plugin must not hide the other formats
                from .registry import PluginFailure

                dist = getattr(registry.plugins.get(impl.plugin_name), "distribution", "")
                registry.failures.append(PluginFailure(impl.plugin_name, dist,
                                                       f"sluice_formats() raised {type(exc).__name__}: {exc}"))
                continue
            for klass in classes:
                for name in (klass.type, *getattr(klass, "aliases", ())):
                    if name in known and known[name] is not klass:
                        raise PluginError(f"format {name!r} is provided by two plugins: {owners[name]!r} and "
                                          f"{impl.plugin_name!r}")
                    known[name], owners[name] = klass, impl.plugin_name
        _cache[registry] = known
        return known


def get_format(value: Any, registry: Registry | None = None) -> Format:
    """A format from a ``format:`` value: a name, or a block ``{type: name, <options>}``."""
    if isinstance(value, Format):
        return value
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, dict) and isinstance(value.get("type"), str):
        name, options = value["type"], {k: v for k, v in value.items() if k != "type"}
    else:
        raise ValueError("a format is a name (format: parquet) or a block with its options "
                         "(format: {type: parquet, compression: snappy})")
    known = format_types(registry)
    klass = known.get(name)
    if klass is None:
        from .registry import get_registry

        failures = (registry or get_registry()).failures
        raise ValueError(_unknown(name, sorted(known), [f"{f.name} ({f.error})" for f in failures]))
    try:
        return klass(klass.Config.model_validate(options))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"format {name}: {problems}") from None


def _unknown(name: str, known: list[str], failures: list[str]) -> str:
    msg = f"unknown format {name!r}."
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    msg += f" Known formats: {', '.join(known)}."
    if failures:
        msg += " Plugins that failed to load: " + "; ".join(failures) + "."
    elif name in ("parquet", "csv", "tsv"):
        msg += " It comes with sluice-formats: pip install sluice-formats."
    return msg


def _dump(fmt: Format) -> Any:
    spec = fmt.spec()
    return spec["type"] if len(spec) == 1 else spec


FormatOption = Annotated[
    Format,
    PlainValidator(get_format),
    PlainSerializer(_dump),
    WithJsonSchema({"anyOf": [{"type": "string"},
                              {"type": "object", "properties": {"type": {"type": "string"}}, "required": ["type"]}]}),
]
"""A config field holding a format: ``format: FormatOption = Field("jsonl", validate_default=True)``."""


# -- helpers for containers and formats ------------------------------------------------------------

def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` means corrupt or truncated input (as decompressors and parsers report it),
    rather than a failure to reach the data (those are ``SluiceError``s and propagate)."""
    if isinstance(exc, EOFError | OSError | ValueError | zlib.error):
        return True
    return type(exc).__name__ == "ZstdError"  # zstandard is imported only when used


def until_damaged(items: Iterator[Any], damage: list[BaseException]) -> Iterator[Any]:
    """``items`` until reading them reports corrupt or truncated data, which lands in ``damage``:
    everything whole before the damage is still handed out."""
    try:
        yield from items
    except Exception as exc:
        if not is_damage(exc):
            raise
        damage.append(exc)


def strip_compression(name: str) -> str:
    """A file name without a compression extension (``a.csv.gz`` → ``a.csv``)."""
    for ext in (".gz", ".gzip", ".zst", ".zstd"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def check_compression(fmt: Format, compression: str, where: str) -> None:
    """Refuse container compression for a format that compresses inside (Parquet)."""
    if not fmt.text and compression not in ("none", "auto"):
        raise ConfigError(f"{where}: compression {compression!r} applies to text formats; {fmt.type} compresses "
                          f"inside the file (set it in the format block: format: {{type: {fmt.type}, ...}})")


__all__ = ["Chunk", "Format", "FormatConfig", "FormatOption", "FormatWriter", "Rollover", "check_compression",
           "format_types", "get_format", "is_damage", "strip_compression", "until_damaged"]
