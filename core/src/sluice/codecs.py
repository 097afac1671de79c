"""Compression for JSON Lines: detection by extension, streaming readers, incremental compressors.

Shared by the built-in jsonl file source/sink and by storage plugins (S3). zstd needs the optional
``zstandard`` package (``pip install sluice[zstd]``); it is imported only when used.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any, BinaryIO, Literal, Protocol

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
    """A streaming decompressing reader over ``raw``; never reads the whole stream into memory.

    Truncated or corrupt data raises (``EOFError``, ``OSError``...) after everything decodable
    before it was handed out, for gzip and zstd alike.
    """
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        return io.BufferedReader(_ZstdReader(raw), buffer_size=CHUNK)  # type: ignore[return-value]
    return raw


CHUNK = 1 << 20


class _ZstdReader(io.RawIOBase):
    """Decompressed bytes of a stream of zstd frames, noticing truncation.

    python-zstandard's ``stream_reader`` simply ends when its input stops inside a frame, so a
    truncated ``.zst`` file would read as a shorter, valid one. This decodes frame by frame and
    raises ``EOFError`` when the input ends inside a frame.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._new = _zstandard().ZstdDecompressor().decompressobj
        self._raw = raw
        self._frame: Any = None  # the frame being decoded; None between frames
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._done:
                return 0
            data = self._raw.read(CHUNK)
            if not data:
                self._done = True
                if self._frame is not None:
                    raise EOFError("zstd data ends inside a frame (truncated)")
                return 0
            self._out = memoryview(self._feed(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            if self._frame is None:
                self._frame = self._new()
            out.append(self._frame.decompress(data))
            if self._frame.eof:  # a frame ended: what follows starts the next one
                data, self._frame = self._frame.unused_data, None
            else:
                data = b""
        return b"".join(out)


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
