"""Bulk loading with per-item results: retry what is transient, dead-letter what is not.

Every bulk request is retried as a whole on connection errors, 429 and 5xx; after each response
only the items that answered 429/5xx are sent again. Both share one jittered backoff budget
(``runtime.retry``), and every re-sent request counts as a retry. 4xx items become dead letters
with the cluster's error type and reason; ``create`` on an existing id counts as written.
"""

from __future__ import annotations

import threading
from typing import Any

from sluice import Batch, RunContext, Sink, SinkRun, TransientError, WriteResult
from sluice.retry import retry_call

from .bulk import Action, ActionBuilder, Outcome, chunks, read_response
from .cluster import Cluster, connect
from .config import EsSinkConfig
from .errors import ClusterBusy, PayloadTooLarge, RequestRejected
from .swap import AliasSwap, check_alias_name


class BulkItemsFailed(TransientError):
    """Some bulk items still answered 429/5xx when the retry budget ran out."""


class EsSink(Sink):
    """Writes records to Elasticsearch or OpenSearch with the bulk API, idempotently by document id.

    How it meets the two-phase sink contract (``sluice.Sink``):

    - ``prepare`` does nothing: target indices are named per record, so they are created (with
      ``create_index``) before their first write instead.
    - ``start_partition`` does nothing: ids are deterministic, so a partition written again
      overwrites the documents it wrote before. An index cannot tell which partition wrote a
      document, so commit never removes documents of partitions a run no longer has.
    - ``report()`` names the indices this instance wrote; ``commit`` refreshes (``refresh: true``)
      every index named in the run's reports, so a fresh instance in another process (a staged
      run's finalize) refreshes what the loads wrote.
    - ``abort``: a bulk write cannot be withdrawn. Documents already indexed stay; "not committed"
      means only that the refresh is skipped (the cluster's own ``refresh_interval`` still applies).

    With ``swap_alias: true`` (``sluice_es.swap``) each run attempt builds its own index instead:
    ``prepare`` creates it (or finds the one an earlier call created), writes go there, ``report()``
    names it, ``commit`` swaps the alias readers query onto it and deletes the index it replaces,
    and ``abort`` sets it aside, unseen, for a resume. Output of partitions a run no longer has is
    then gone after commit.
    """

    type = "elasticsearch"
    aliases = ("opensearch",)
    Config = EsSinkConfig
    config: EsSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.log = ctx.logger(self.type)
        cfg = self.config
        index_of = None
        alias = None
        if cfg.swap_alias:  # one index per instance, found when the first write (or prepare) needs it
            alias = str(ctx.render(cfg.index, "destination.index"))
            check_alias_name(alias)
            index_of = lambda _r: self._target  # noqa: E731
        elif cfg.index is not None:
            render = ctx.compile(cfg.index, "destination.index")
            constant = None if "{" in cfg.index else cfg.index
            index_of = (lambda _r, c=constant: c) if constant else (lambda r: render(record=r))
        routing_of = None
        if cfg.routing is not None:
            render_routing = ctx.compile(cfg.routing, "destination.routing")
            routing_of = lambda r: render_routing(record=r)  # noqa: E731
        self.builder = ActionBuilder(cfg.op_type, cfg.id, cfg.id_fields, index_of, routing_of, cfg.retry_on_conflict)
        self._lock = threading.Lock()
        self._indices: set[str] = set()  # written to (refresh at commit)
        self._ready: set[str] = set()  # checked or created (create_index)
        self._target: str | None = None  # swap_alias: the concrete index this instance writes
        self.cluster: Cluster = connect(cfg, ctx)  # nothing after it may fail and leak the client
        self.swap = AliasSwap(self.cluster, alias, cfg.create_index, self.log) if alias is not None else None

    def describe(self) -> str:
        cluster = getattr(self, "cluster", None)
        where = cluster.where if cluster else ", ".join(self.config.hosts)
        return f"{where}/{self.config.index or '<record _index>'}"

    def prepare(self, run: SinkRun) -> None:
        """``swap_alias``: create (or find, or with ``run.resume`` take back from an aborted attempt)
        the index this run attempt builds; else nothing."""
        if self.swap is not None:
            with self._lock:
                self._use(self.swap.prepare(run.resume))

    def _use(self, index: str) -> None:
        """Write into ``index`` from now on (``swap_alias``; the caller holds the lock)."""
        self._target = index
        self._ready.add(index)  # it exists: create_index made it, or it is the published one
        self._indices.add(index)

    def write(self, batch: Batch) -> WriteResult:
        if self.swap is not None and self._target is None:
            with self._lock:  # partitions share one target: find it once per instance
                if self._target is None:
                    self._use(self.swap.write_index())
        actions, dead = self.builder.build(batch.records)
        written = 0
        todo = list(chunks(actions, self.config.batch_size, self.config.max_bytes))
        while todo:
            chunk = todo.pop(0)
            self._prepare({a.index for a in chunk})
            try:
                outcome = self._send(chunk)
            except PayloadTooLarge:
                if len(chunk) == 1:
                    raise
                # a limit below max_bytes (a proxy, a small managed instance): send it in halves
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
                self.log.warning("bulk request too large; splitting it", documents=len(chunk))
                continue
            written += outcome.written
            dead.extend(outcome.dead)
        return WriteResult(written=written, dead_letters=dead)

    def _send(self, chunk: list[Action]) -> Outcome:
        """Send one chunk until every item is written or dead-lettered (or the retry budget runs out)."""
        cluster, dialect, pipeline = self.cluster, self.cluster.dialect, self.config.pipeline
        total = Outcome()
        pending = chunk

        def attempt() -> None:
            nonlocal pending
            payload = b"".join([a.payload for a in pending])
            response = cluster.call(lambda: dialect.bulk(cluster.client, payload, pipeline),
                                    f"bulk-writing {len(pending)} documents")
            outcome = read_response(self.config.op_type, pending, response)
            total.written += outcome.written
            total.dead.extend(outcome.dead)
            total.conflicts += outcome.conflicts
            if outcome.retry:
                self.ctx.metrics.add("es_bulk_items_retried", len(outcome.retry))
                pending = outcome.retry
                reasons = ", ".join(f"{n} x {r}" for r, n in outcome.retry_reasons.items())
                raise BulkItemsFailed(f"{cluster.product} at {cluster.where}: {len(outcome.retry)} bulk items "
                                      f"not written yet ({reasons})")

        # retries are counted here (metrics) rather than in WriteResult.retries, so they show even
        # when the budget runs out and the engine retries the whole batch
        retry_call(attempt, self.ctx.retry, retry_on=lambda e: isinstance(e, TransientError),
                   metrics=self.ctx.metrics)
        if total.conflicts:
            self.ctx.metrics.add("es_create_conflicts", total.conflicts)
        return total

    def _prepare(self, indices: set[str]) -> None:
        """Create missing target indices before their first write, when ``create_index`` asks for it."""
        new = indices - self._ready
        if not new:
            return
        with self._lock:
            new = indices - self._ready
            self._indices |= new
            if self.config.create_index is None:
                self._ready |= new
                return
            cluster = self.cluster
            for name in sorted(new):
                if not cluster.retried(lambda n=name: cluster.dialect.index_exists(cluster.client, n),
                                       f"checking index {name!r}"):
                    try:
                        cluster.retried(lambda n=name: cluster.dialect.create_index(
                            cluster.client, n, dict(self.config.create_index or {})), f"creating index {name!r}")
                    except RequestRejected as exc:
                        if "already_exists" not in str(exc):  # another thread or job made it first
                            raise
                    self.log.info("created index", index=name)
                self._ready.add(name)

    def report(self) -> dict[str, Any]:
        """The indices this instance wrote to (sorted), for ``commit`` in whichever process runs it."""
        with self._lock:
            return {"indices": sorted(self._indices)}

    def commit(self, run: SinkRun) -> None:
        """Refresh (``refresh: true``) every index the run wrote: those named in ``run.reports``
        and those this instance wrote, so a fresh instance that wrote nothing commits correctly.
        ``swap_alias``: publish the index the run built (which refreshes it first)."""
        if self.swap is not None:
            self.swap.commit(indices_of(run) | self._indices)
            return
        if not self.config.refresh:
            return
        names = sorted(indices_of(run) | self._indices)
        if not names:
            return
        cluster = self.cluster
        for group in url_groups(names):
            try:
                cluster.retried(lambda g=group: cluster.dialect.refresh(cluster.client, g),
                                f"refreshing {','.join(group)}")
            except ClusterBusy as exc:  # the data is written; a failed refresh only delays visibility
                self.log.warning("refresh failed", error=str(exc), indices=len(group))

    def abort(self, run: SinkRun) -> None:
        """Nothing to withdraw: indexed documents stay (a re-run overwrites them by id); no refresh.
        ``swap_alias``: readers keep the published index; the attempt's stays unseen for a resume."""
        if self.swap is not None:
            self.swap.abort()

    def close(self) -> None:
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            cluster.close()
            self.cluster = None  # type: ignore[assignment]


def indices_of(run: SinkRun) -> set[str]:
    """The index names in a run's reports (``{"indices": [...]}`` from each writing instance)."""
    names: set[str] = set()
    for report in run.reports:
        names.update(str(n) for n in (report or {}).get("indices") or ())
    return names


def url_groups(names: list[str], limit: int = 3000) -> list[list[str]]:
    """``names`` cut into groups whose comma-joined form stays under ``limit`` characters, so that
    refreshing thousands of daily indices never builds a URL that a proxy or the cluster refuses."""
    groups: list[list[str]] = []
    size = limit
    for name in names:
        if size + len(name) + 1 > limit:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += len(name) + 1
    return groups
