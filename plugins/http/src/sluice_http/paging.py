"""Pagination as pure logic: where the next page is, and when to stop. No I/O here.

A ``Position`` names one page to request (its number, page, offset, cursor or URL) plus the
records of it already delivered (``skip``); it is the source's checkpoint, so ``--resume``
requests exactly the page a partition stopped in and skips what was already delivered.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluice_transforms.paths import MISSING, get_path, split_path

Style = Literal["none", "page", "offset", "cursor", "link_header", "next_url"]


class Pagination(BaseModel):
    """How to get from one page to the next, and when to stop."""

    model_config = ConfigDict(extra="forbid")

    type: Style = Field("none", description="none (one request), page (page number), offset (offset/limit), "
                                            "cursor (a cursor from the body), link_header (rel=\"next\" in the Link "
                                            "header) or next_url (the next page's URL in the body).")
    page_param: str = Field("page", description="For page: the query parameter holding the page number.")
    start_page: int = Field(1, description="For page: the first page's number.")
    offset_param: str = Field("offset", description="For offset: the query parameter holding the offset.")
    cursor_param: str = Field("cursor", description="For cursor: the query parameter the cursor is sent in.")
    size_param: str | None = Field(None, description="The page-size parameter (offset: default 'limit').")
    size: int | None = Field(None, ge=1, description="Records per page, sent in size_param; a page with fewer "
                                                     "records is the last (page and offset).")
    next: str | None = Field(None, description="For cursor and next_url: the path of the next cursor or URL in the "
                                               "body (e.g. meta.next_cursor, links.next).")
    total: str | None = Field(None, description="Path of the total record count in the body: stop once that many "
                                                "records were read.")
    max_pages: int | None = Field(None, ge=1, description="Stop after this many pages per partition.")
    stop_on_empty: bool = Field(True, description="A page without records is the last (always so for page and "
                                                  "offset).")
    param_in: Literal["query", "json"] = Field("query", description="Send the page, offset, cursor and size "
                                                                    "parameters in the query or in the JSON body.")

    @model_validator(mode="after")
    def _complete(self) -> Pagination:
        if self.type in ("cursor", "next_url") and not self.next:
            raise ValueError(f"{self.type} pagination needs 'next': the path of the next "
                             f"{'cursor' if self.type == 'cursor' else 'URL'} in the body")
        for path in (self.next, self.total):
            if path:
                split_path(path)
        if self.type == "offset" and self.size is None:
            raise ValueError("offset pagination needs 'size' (the limit sent with each request)")
        return self

    @property
    def needs_body(self) -> bool:
        """Whether the next page or the stop is read from the body (so it must be JSON)."""
        return self.type in ("cursor", "next_url") or self.total is not None


@dataclass(frozen=True, slots=True)
class Position:
    """One page of a partition, and the records of it already delivered."""

    number: int = 0  # pages requested before this one
    page: int | None = None
    offset: int | None = None
    cursor: str | None = None
    url: str | None = None  # link_header / next_url: None is the first request
    skip: int = 0
    seen: int = 0  # records before this page (for `total`)
    done: bool = False

    def checkpoint(self) -> dict[str, Any]:
        """The position as a small JSON dict (counters at zero and unused fields left out)."""
        counters = ("number", "skip", "seen", "done")
        return {k: v for k, v in asdict(self).items() if v is not None and not (k in counters and not v)}

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> Position:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, slots=True)
class Page:
    """What the paginator needs to know of a page it got."""

    records: int
    body: Any = None  # parsed JSON, or None
    link: str | None = None  # the Link header
    url: str = ""  # the URL the page came from


class Paginator:
    """Positions for one pagination style."""

    def __init__(self, cfg: Pagination) -> None:
        self.cfg = cfg
        self.size_param = cfg.size_param or ("limit" if cfg.type == "offset" else None)

    def first(self) -> Position:
        c = self.cfg
        return Position(page=c.start_page if c.type == "page" else None, offset=0 if c.type == "offset" else None)

    def params(self, pos: Position) -> list[tuple[str, Any]]:
        """The page parameters of ``pos`` (none for URL-driven styles after the first page)."""
        c, out = self.cfg, []
        if c.type == "page":
            out.append((c.page_param, pos.page))
        elif c.type == "offset":
            out.append((c.offset_param, pos.offset))
        elif c.type == "cursor" and pos.cursor is not None:
            out.append((c.cursor_param, pos.cursor))
        if self.size_param and c.size and pos.url is None:
            out.append((self.size_param, c.size))
        return out

    def after_malformed(self, pos: Position, page: Page) -> Position | None:
        """The page after one whose body could not be read, when it is known without the body (page
        and offset: the next number; link_header: the header); None when it is not."""
        c = self.cfg
        if c.needs_body or c.type not in ("page", "offset", "link_header"):
            return None
        if c.max_pages is not None and pos.number + 1 >= c.max_pages:
            return Position(pos.number + 1, seen=pos.seen, done=True)
        following = Position(pos.number + 1, seen=pos.seen)
        if c.type == "page":
            return replace(following, page=(pos.page or 0) + 1)
        if c.type == "offset":
            return replace(following, offset=(pos.offset or 0) + (c.size or 0))
        target = next_link(page.link)
        if not target:
            return replace(following, done=True)  # no next page: this one was the last
        return replace(following, url=urljoin(page.url, target))

    def next(self, pos: Position, page: Page) -> Position:
        """The position after ``page`` (``done`` when it was the last)."""
        c = self.cfg
        seen = pos.seen + page.records
        end = Position(pos.number + 1, seen=seen, done=True)
        if c.max_pages is not None and pos.number + 1 >= c.max_pages:
            return end
        if page.records == 0 and (c.stop_on_empty or c.type in ("page", "offset")):
            return end
        if c.total is not None:
            total = get_path(page.body, split_path(c.total)) if isinstance(page.body, dict) else MISSING
            if as_int(total) is not None and seen >= as_int(total):  # type: ignore[operator]
                return end
        following = Position(pos.number + 1, seen=seen)
        if c.type == "none":
            return end
        if c.type in ("page", "offset"):
            if c.size is not None and page.records < c.size:
                return end
            if c.type == "page":
                return replace(following, page=(pos.page or 0) + 1)
            return replace(following, offset=(pos.offset or 0) + (c.size or page.records))
        if c.type == "cursor":
            cursor = self._from_body(page.body)
            if cursor in (None, "") or str(cursor) == pos.cursor:
                return end
            return replace(following, cursor=str(cursor))
        target = self._from_body(page.body) if c.type == "next_url" else next_link(page.link)
        if not target:
            return end
        absolute = urljoin(page.url, str(target))
        if absolute == (pos.url or page.url):
            return end  # a server pointing at the same page again would loop forever
        return replace(following, url=absolute)

    def _from_body(self, body: Any) -> Any:
        value = get_path(body, split_path(self.cfg.next or "")) if isinstance(body, dict) else MISSING
        return None if value is MISSING else value


def as_int(value: Any) -> int | None:
    """An integer from a body (a total, a status): None when it is missing or not a number."""
    if isinstance(value, bool) or value is MISSING or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_LINK = re.compile(r'<([^>]*)>\s*((?:;\s*[^;,]+)*)')
_REL = re.compile(r';\s*rel\s*=\s*"?([^";]+)"?', re.I)


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (RFC 8288), if any."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        for rel in _REL.findall(match.group(2)):
            if "next" in rel.lower().split():
                return match.group(1)
    return None
