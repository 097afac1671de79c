"""Compression for JSON Lines: detection by extension, streaming readers, incremental compressors.

Shared by the built-in jsonl file source/sink and by storage plugins (S3). zstd needs the optional
``zstandard`` package (``pip install sluice[zstd]``); it is imported only when used.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO, Literal, Protocol

from .errors import ConfigError

Compression = Literal["none", "gzip", "zstd"]
EXTENSIONS: dict[str, str] = {"none": "", "gzip": ".gz", "zstd": ".zst"}


def detect(name: str) -> Compression:
    """Compression implied by a file or key name."""
    if name.endswith((".gz", ".gzip")):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return "none"


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise ConfigError("zstd compression needs the 'zstandard' package: pip install 'sluice[zstd]'") from None
    return zstandard


def open_reader(raw: BinaryIO, compression: Compression) -> BinaryIO:
    """A streaming decompressing reader over ``raw``; never reads the whole stream into memory."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        reader = _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[arg-type]
    return raw


class Compressor(Protocol):
    """Incremental compressor: feed chunks, then ``flush`` once at the end."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Zstd:
    def __init__(self, level: int) -> None:
        self._obj = _zstandard().ZstdCompressor(level=level).compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def compressor(compression: Compression, level: int | None = None) -> Compressor:
    """An incremental compressor. gzip defaults to level 6 (zlib's balance); zstd to 3."""
    if compression == "gzip":
        # wbits=31: a gzip container, so the output is a valid .gz file
        return zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
    if compression == "zstd":
        return _Zstd(3 if level is None else level)
    return _Identity()
