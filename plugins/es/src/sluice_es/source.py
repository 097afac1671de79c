"""Reading an index with sliced point-in-time searches or sliced scrolls, resumable per slice.

Each slice is an engine partition (``slice-2-of-4``). Pages become batches; the checkpoint of a
batch says where the slice continues:

- PIT: ``{"after": <sort values of the last hit>}``. One PIT per run is shared by all slices and
  closed by ``close()``. A resumed run (or a slice whose PIT expired) opens a new PIT and
  continues with ``search_after`` from those values.
- Scroll: ``{"skip": <hits of the slice delivered so far>}``. Scroll ids do not survive a restart,
  so a resumed slice opens a new scroll with the same query, slice and ``_doc`` order and drops
  the hits already delivered (skipped pages are fetched without ``_source``). This is exact while
  the documents matching the query do not change, the normal case for a closed time range; use
  PIT with a unique ``sort`` for an index under writes. A transient failure in the middle of a
  scroll is handled the same way, since re-sending a scroll request could skip a page.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from sluice import Batch, Partition, PermanentError, RunContext, Source
from sluice.retry import is_transient

from .cluster import Cluster, connect
from .config import EsSourceConfig
from .errors import AccessDenied, IndexNotFound, ScrollShrank, SearchContextMissing

# Pages that deliver documents ask for the whole response: trimming it with filter_path saves only a
# few bytes per hit (_score, _type) and some servers filter slowly (3x slower scrolls on osmem).
# Pages resumed past (already delivered) are trimmed to their ids, which saves transferring _source.
HITS: str | None = None
SKIP = "_scroll_id,hits.hits._id"
SKIP_PAGE = 10_000  # hits per page of a reopened scroll (the most a search page may hold by default)


class EsSource(Source):
    """Reads documents from Elasticsearch or OpenSearch: sliced PIT or scroll, resumable per slice."""

    type = "elasticsearch"
    aliases = ("opensearch",)
    Config = EsSourceConfig
    config: EsSourceConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.log = ctx.logger(self.type)
        self.cluster: Cluster = connect(self.config, ctx)
        self.mode = self.config.pagination or ("pit" if self.cluster.dialect.supports_pit(self.cluster.version)
                                               else "scroll")
        self.size = min(self.config.page_size, ctx.runtime.batch_size)
        self._pit: str | None = None
        self._pits: set[str] = set()
        self._lock = threading.Lock()
        try:
            self._check_indices()
        except BaseException:
            self.close()  # the engine closes only components that opened
            raise

    def describe(self) -> str:
        where = getattr(self, "cluster", None)
        return f"{where.where if where else ', '.join(self.config.hosts)}/{','.join(self.config.index)}"

    def _check_indices(self) -> None:
        """Fail at once, naming it, when a concrete index or alias does not exist (patterns may match nothing)."""
        cluster = self.cluster
        for name in self.config.index:
            if any(c in name for c in "*?,") or name.startswith("-"):
                continue
            try:
                exists = cluster.retried(lambda n=name: cluster.dialect.index_exists(cluster.client, n),
                                         f"checking index {name!r}")
            except AccessDenied:  # a reader without view_index_metadata: the search will tell
                continue
            if not exists:
                raise IndexNotFound(f"{cluster.product} at {cluster.where}: index or alias {name!r} does not exist")

    def partitions(self) -> list[Partition]:
        n = self.config.slices
        return [Partition(f"slice-{i}-of-{n}", {"slice": i, "slices": n, "mode": self.mode}) for i in range(n)]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        mode = partition.spec.get("mode", self.mode)
        if checkpoint and ("after" if mode == "pit" else "skip") not in checkpoint:
            # starting over would deliver the slice twice; say so instead
            raise PermanentError(f"{partition.key}: the checkpoint {checkpoint!r} was written with another "
                                 f"pagination than {mode!r}; resume with the same settings or run without --resume")
        # a generator, so that errors surface inside the engine's read loop, as this partition's failure
        if mode == "pit":
            yield from self._read_pit(partition, checkpoint)
        else:
            yield from self._read_scroll(partition, checkpoint)

    # -- shared pieces ------------------------------------------------------------------------
    def _body(self, partition: Partition) -> dict[str, Any]:
        body: dict[str, Any] = {"size": self.size, "track_total_hits": False}
        if self.config.query is not None:
            body["query"] = self.config.query
        if self.config.fields is not None:
            body["_source"] = self.config.fields
        slices = int(partition.spec["slices"])
        if slices > 1:
            body["slice"] = {"id": int(partition.spec["slice"]), "max": slices}
        return body

    def _records(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        include_id, include_index = self.config.include_id, self.config.include_index
        records = []
        append = records.append
        for hit in hits:
            record = hit.get("_source") or {}
            if include_id:
                record["_id"] = hit["_id"]
            if include_index:
                record["_index"] = hit["_index"]
            append(record)
        return records

    # -- point in time ------------------------------------------------------------------------
    def _current_pit(self, stale: str | None = None) -> str:
        """The run's PIT, opened on first use; a new one when ``stale`` (expired) is still the current."""
        with self._lock:
            if self._pit is None or self._pit == stale:
                cluster = self.cluster
                self._pit = cluster.retried(
                    lambda: cluster.dialect.open_pit(cluster.client, self.config.index, self.config.keep_alive),
                    f"opening a point in time on {','.join(self.config.index)}")
                self._pits.add(self._pit)
                if stale is not None:
                    self.log.info("point in time expired; reopened it", index=self.config.index)
            return self._pit

    def _read_pit(self, partition: Partition, checkpoint: Any) -> Iterator[Batch]:
        cluster = self.cluster
        body = self._body(partition)
        body["sort"] = self.config.sort or ["_shard_doc"]
        after = (checkpoint or {}).get("after")
        pit = base = self._current_pit()  # ES may hand back an updated id for the same PIT: use the latest
        doing = f"searching {partition.key} of {','.join(self.config.index)}"
        reopened = 0
        while True:
            body["pit"] = {"id": pit, "keep_alive": self.config.keep_alive}
            if after is not None:
                body["search_after"] = after
            try:
                page = cluster.retried(lambda: cluster.dialect.search(cluster.client, body, index=None,
                                                                      filter_path=HITS), doing)
            except SearchContextMissing:
                reopened += 1
                if reopened >= self.ctx.retry.attempts:  # a PIT that dies at once every time: keep_alive too short
                    raise
                pit = base = self._current_pit(stale=base)  # search_after values carry over to the new PIT
                continue
            reopened = 0
            if page.get("pit_id"):
                pit = page["pit_id"]
            hits = (page.get("hits") or {}).get("hits") or []
            if not hits:
                return
            after = hits[-1]["sort"]
            yield Batch(self._records(hits), checkpoint={"after": after})
            if len(hits) < self.size:
                return

    # -- scroll -------------------------------------------------------------------------------
    def _read_scroll(self, partition: Partition, checkpoint: Any) -> Iterator[Batch]:
        """Scroll the slice; after a transient failure, reopen it after the hits delivered.

        The retry budget counts failures that got no further than the attempt before: re-paging
        through hits already delivered is progress too, so a long slice survives drops that come
        more often than a budget's worth per slice, as long as each attempt gets further.
        """
        delivered = int((checkpoint or {}).get("skip", 0))
        policy = self.ctx.retry
        failures = 0
        furthest = delivered
        while True:
            reached = [delivered]  # the position this attempt's pages reached, delivered or skipped
            try:
                for batch in self._scroll_once(partition, delivered, reached):
                    delivered = batch.checkpoint["skip"]
                    yield batch
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if reached[0] > furthest:
                    furthest, failures = reached[0], 0
                failures += 1
                if failures >= policy.attempts:
                    raise
                self.ctx.metrics.add("retries")
                wait = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (failures - 1))
                self.log.warning("scroll failed; reopening it after the delivered hits", partition=partition.key,
                                 delivered=delivered, error=str(exc))
                time.sleep(random.uniform(0, wait))

    def _scroll_once(self, partition: Partition, skip: int, reached: list[int]) -> Iterator[Batch]:
        """One scroll from the start of the slice, dropping the first ``skip`` hits.

        A reopened scroll pages in large pages (ids only while they hold delivered hits), so getting
        back to ``skip`` takes a few requests rather than one per batch; pages are handed on in
        batches of the usual size.
        """
        cluster, dialect, keep_alive = self.cluster, self.cluster.dialect, self.config.keep_alive
        size = self.size if skip == 0 else max(self.size, min(SKIP_PAGE, skip))
        body = self._body(partition)
        body["size"] = size
        body["sort"] = ["_doc"]
        del body["track_total_hits"]  # scroll refuses to disable it
        doing = f"scrolling {partition.key} of {','.join(self.config.index)}"
        position = 0
        scroll_id: str | None = None
        try:
            filter_path = SKIP if skip >= size else HITS
            page = cluster.call(lambda: dialect.search(cluster.client, body, index=self.config.index,
                                                       filter_path=filter_path, scroll=keep_alive), doing)
            while True:
                scroll_id = page.get("_scroll_id") or scroll_id
                hits = (page.get("hits") or {}).get("hits") or []
                start = position
                position += len(hits)
                reached[0] = max(reached[0], position)
                if position > skip:
                    fresh = hits[skip - start:] if start < skip else hits
                    done = max(start, skip)
                    for at in range(0, len(fresh), self.size):
                        chunk = fresh[at:at + self.size]
                        done += len(chunk)
                        yield Batch(self._records(chunk), checkpoint={"skip": done})
                if len(hits) < size:  # the last page
                    if position < skip:  # permanent: retrying cannot bring the documents back
                        raise ScrollShrank(
                            f"{cluster.product} at {cluster.where}: {partition.key} now matches {position} "
                            f"documents, fewer than the {skip} already delivered; the index changed, "
                            "run again without --resume")
                    return
                filter_path = SKIP if skip - position >= size else HITS
                sid = scroll_id
                page = cluster.call(lambda s=sid, f=filter_path: dialect.scroll(cluster.client, s, keep_alive, f),
                                    doing)
        finally:
            if scroll_id is not None:
                try:
                    cluster.call(lambda: dialect.clear_scroll(cluster.client, scroll_id), "clearing a scroll")
                except Exception as exc:  # the scroll expires on its own after keep_alive
                    self.log.warning("clearing a scroll failed", partition=partition.key, error=str(exc))

    def close(self) -> None:
        cluster = getattr(self, "cluster", None)
        if cluster is None:
            return
        with self._lock:
            pits, self._pits, self._pit = list(self._pits), set(), None
        for pit in pits:
            try:
                cluster.call(lambda p=pit: cluster.dialect.close_pit(cluster.client, p), "closing a point in time")
            except Exception as exc:  # an expired PIT is already gone
                self.log.warning("closing a point in time failed", error=str(exc))
        cluster.close()
        self.cluster = None  # type: ignore[assignment]
