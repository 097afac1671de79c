"""A zstd decompressing reader that notices truncation.

python-zstandard's ``stream_reader`` simply ends when its input stops inside a frame, so a
truncated ``.zst`` object would read as a shorter, valid one. This reader decodes frame by frame
with ``decompressobj`` and raises ``EOFError`` when the input ends before a frame is complete,
after handing out everything decodable before that point (like ``gzip`` does).
"""

from __future__ import annotations

import io
from typing import Any, BinaryIO

CHUNK = 1 << 20


class ZstdReader(io.RawIOBase):
    """Raw reader of the decompressed bytes of a stream of zstd frames."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        super().__init__()
        self._new = zstandard.ZstdDecompressor().decompressobj
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
                    raise EOFError("zstd data ends inside a frame (truncated object)")
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


def open_zstd(raw: BinaryIO) -> io.BufferedReader:
    """A buffered reader of ``raw``'s decompressed bytes that raises ``EOFError`` on truncation."""
    return io.BufferedReader(ZstdReader(raw), buffer_size=CHUNK)
