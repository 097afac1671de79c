"""Which keys a source reads: glob and modification-time filters over a paginated listing, and the
grouping of keys into partitions that are small descriptors (key ranges), never lists of keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a key glob: ``*`` and ``?`` stay within one ``/`` segment, ``**`` crosses segments,
    ``**/`` also matches no folder at all, ``[abc]`` is a character class."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            body = body.replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body[:1] in "!^" else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class KeyFilter:
    """Decides whether a listed object is data to read.

    Without a glob, hidden names (a last segment starting with ``_`` or ``.``, like ``_SUCCESS`` and
    ``_manifest.json``) and folder markers are skipped, so a sink's output reads back as data only.
    """

    prefix: str  # listing prefix, with its trailing slash (or empty)
    glob: re.Pattern[str] | None
    since: datetime | None
    until: datetime | None

    def __call__(self, obj: dict[str, Any]) -> bool:
        key: str = obj["Key"]
        if key.endswith("/"):
            return False
        rel = key[len(self.prefix):]
        if self.glob is not None:
            if not self.glob.match(rel):
                return False
        elif rel.rsplit("/", 1)[-1].startswith(("_", ".")):
            return False
        if self.since is not None or self.until is not None:
            modified: datetime = obj["LastModified"]
            if self.since is not None and modified < self.since:
                return False
            if self.until is not None and modified >= self.until:
                return False
        return True


def list_objects(list_page: Callable[[str | None], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every object of a ListObjectsV2 listing, one page at a time (``list_page(token)`` fetches one)."""
    token: str | None = None
    while True:
        page = list_page(token)
        yield from page.get("Contents") or ()
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]


def objects_under(client: Any, bucket: str, prefix: str, retry: Callable[[Callable[[], Any], str, str | None], Any],
                  what: str = "listing") -> Iterator[dict[str, Any]]:
    """Every object under ``prefix``; ``retry(fn, what, where)`` runs each page request (error
    translation and retries as the caller's component does them)."""

    def page(token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        return retry(lambda: client.list_objects_v2(**kwargs), what, prefix or None)  # type: ignore[no-any-return]

    return list_objects(page)


@dataclass
class KeyRange:
    """Keys after ``start_after`` up to and including ``last_key``: a partition's work."""

    start_after: str
    last_key: str
    keys: int
    bytes: int


def group_keys(objects: Iterator[dict[str, Any]], accept: KeyFilter, keys_per_partition: int,
               bytes_per_partition: int) -> Iterator[KeyRange]:
    """Group accepted keys (listed in key order) into ranges of at most ``keys_per_partition`` keys
    and about ``bytes_per_partition`` bytes; only the current range is held in memory."""
    start_after = ""
    current: KeyRange | None = None
    for obj in objects:
        key = obj["Key"]
        if accept(obj):
            if current is None:
                current = KeyRange(start_after, key, 0, 0)
            current.last_key = key
            current.keys += 1
            current.bytes += int(obj.get("Size") or 0)
            if current.keys >= keys_per_partition or current.bytes >= bytes_per_partition:
                yield current
                current, start_after = None, key
        elif current is None:
            start_after = key
    if current is not None:
        yield current
