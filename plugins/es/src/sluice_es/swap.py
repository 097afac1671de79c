"""``swap_alias: true``: each run builds a new index, and commit swaps the alias readers query.

The sink's rendered ``index`` (``logs-{{ ds }}``) is the READ alias. A run attempt builds a new
concrete index ``<alias>-<UTC yyyymmdd-hhmmss-ffffff>`` that readers never see. Commit points the
read alias at it and deletes the index it replaces in one atomic ``POST /_aliases``, so a reader
sees the previous complete index or the new complete one, never a mix; a run that fails or is
rejected never becomes visible.

Every operation starts from what the cluster holds (and the run's reports), so prepare, the
loads and commit may run in different processes, and each may run again alone. Two more aliases
name the index being built:

- ``<alias>-loading``: an attempt is building it; prepare run again and the loads continue it.
- ``<alias>-aborted``: the attempt was aborted. Its documents are kept, invisible, because they
  are durable for the engine: ``--resume`` (prepare with ``run.resume``), a load re-run alone and
  a finalize re-run continue it. A fresh attempt (prepare without ``resume``: a new run, a staged
  run's plan) deletes it and builds a new index, with the current ``create_index`` body.
- neither: the last attempt was committed. A load run alone (one task cleared after success)
  writes into the published index, overwriting its documents by id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sluice.retry import retry_call

from .cluster import Cluster, worth_retrying
from .errors import AliasSwapRefused, RequestRejected

T = TypeVar("T")
Kind = Literal["missing", "index", "alias"]
FORBIDDEN = re.compile(r"[\s,*?\"<>|/\\#:]")  # would turn a name into a pattern or a list


@dataclass(frozen=True)
class Names:
    """The names one read alias uses on the cluster (pure; no I/O)."""

    read: str

    @property
    def loading(self) -> str:
        return f"{self.read}-loading"

    @property
    def aborted(self) -> str:
        return f"{self.read}-aborted"

    def build(self, now: datetime) -> str:
        """A new build index name: the alias and the UTC time to the microsecond."""
        return f"{self.read}-{now:%Y%m%d-%H%M%S-%f}"


def check_alias_name(name: str) -> None:
    """Refuse a rendered alias name the cluster would read as a pattern or a list."""
    if not name or FORBIDDEN.search(name) or name.startswith(("-", "_", "+")):
        raise AliasSwapRefused(f"swap_alias: index {name!r} is not a usable alias name (no spaces, commas, "
                               "wildcards or \\/\"<>|#:, not starting with - _ +)")


@dataclass
class State:
    """What one name is on the cluster: nothing, a plain index, or an alias over ``targets``
    (``aliases``: each target index with all of its aliases)."""

    kind: Kind
    aliases: dict[str, list[str]]

    @property
    def targets(self) -> list[str]:
        return sorted(self.aliases)


class AliasSwap:
    """The alias-swap lifecycle for one read alias on one cluster (see the module docstring)."""

    def __init__(self, cluster: Cluster, read: str, create_body: dict[str, Any] | None, log: Any) -> None:
        check_alias_name(read)
        self.cluster = cluster
        self.names = Names(read)
        self.create_body = dict(create_body or {})
        self.log = log

    # -- reading the cluster ------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], doing: str) -> T:
        return self.cluster.call(fn, doing)

    def state(self, name: str) -> State:
        """What ``name`` is: ``GET /{name}/_alias`` answers for an index, an alias and nothing alike."""
        c = self.cluster
        found = self._call(lambda: c.dialect.aliases_of(c.client, name), f"reading the aliases of {name!r}")
        aliases = {index: sorted((body or {}).get("aliases") or {}) for index, body in found.items()}
        if not aliases:
            return State("missing", {})
        return State("index" if name in aliases else "alias", aliases)

    def _where(self) -> str:
        return f"{self.cluster.product} at {self.cluster.where}"

    def _published(self) -> State:
        """The read alias's state; a plain index of that name is refused with how to migrate."""
        read = self.names.read
        state = self.state(read)
        if state.kind == "index":
            raise AliasSwapRefused(
                f"{self._where()}: {read!r} is a plain index, but swap_alias needs that name for the alias "
                f"readers query. Sluice never deletes it for you. Migrate once: copy it under a new name (POST "
                f"_reindex {{source: {{index: {read}}}, dest: {{index: {read}-v0}}}}), delete {read!r}, then "
                f"POST _aliases {{actions: [{{add: {{index: {read}-v0, alias: {read}}}}}]}} (the next run "
                f"replaces {read}-v0); or delete it and run the interval again")
        return state

    def _unpublished(self, name: str, published: State) -> str | None:
        """The index alias ``name`` (loading or aborted) points at, if any: one, never a published one."""
        state = self.state(name)
        if state.kind == "missing":
            return None
        if state.kind == "index" or len(state.targets) != 1 or state.targets[0] in published.aliases:
            what = "a plain index" if state.kind == "index" else f"an alias over {', '.join(state.targets)}"
            raise AliasSwapRefused(
                f"{self._where()}: {name!r} is {what}; swap_alias expects an alias over one index that readers "
                f"do not see. Remove it (DELETE /{name} for an index, or POST _aliases with a remove action) and "
                "run the interval again")
        return state.targets[0]

    def _building(self, published: State) -> tuple[str | None, str | None]:
        """The indices behind the loading and the aborted alias (None where there is none)."""
        building = self._unpublished(self.names.loading, published)
        aborted = self._unpublished(self.names.aborted, published)
        if building is not None and building == aborted:
            raise AliasSwapRefused(f"{self._where()}: {building!r} carries both {self.names.loading!r} and "
                                   f"{self.names.aborted!r}; remove one of them (POST _aliases) and run again")
        return building, aborted

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run a whole operation again on transient errors: each attempt re-reads the cluster, so
        an action that did apply before the connection dropped is not applied twice."""
        return retry_call(fn, self.cluster.ctx.retry, retry_on=worth_retrying, metrics=self.cluster.ctx.metrics)

    def _atomic(self, actions: list[dict[str, Any]], doing: str) -> None:
        c = self.cluster
        if actions:
            self._call(lambda: c.dialect.update_aliases(c.client, actions), doing)

    # -- the lifecycle --------------------------------------------------------------------------
    def prepare(self, resume: bool) -> str:
        """The index this attempt builds: the loading alias's; with ``resume``, the aborted
        attempt's; else a new index (``create_index``'s body and the loading alias in one request).
        Never touches the published index."""
        return self._retry(lambda: self._prepare(resume))

    def _prepare(self, resume: bool) -> str:
        names = self.names
        building, aborted = self._building(self._published())
        if building is not None:
            self._atomic([{"remove_index": {"index": aborted}}] if aborted is not None else [],
                         f"deleting {aborted!r}")  # an older attempt's, left by a crash
            self.log.info("continuing the index an earlier call prepared", index=building, alias=names.read)
            return building
        if aborted is not None and resume:
            self._atomic([{"remove": {"index": aborted, "alias": names.aborted}},
                          {"add": {"index": aborted, "alias": names.loading}}], f"resuming {aborted!r}")
            self.log.info("resuming the index of the aborted attempt", index=aborted, alias=names.read)
            return aborted
        building = self._create_build()
        self._atomic([{"remove_index": {"index": aborted}}] if aborted is not None else [],
                     f"deleting {aborted!r}")
        self.log.info("created a build index", index=building, alias=names.read, deleted=aborted)
        return building

    def _create_build(self) -> str:
        c = self.cluster
        body = {**self.create_body, "aliases": {self.names.loading: {}}}  # atomic: never an index without it
        for _ in range(5):  # two names only collide within one microsecond
            name = self.names.build(datetime.now(UTC))
            try:
                self._call(lambda n=name: c.dialect.create_index(c.client, n, body), f"creating index {name!r}")
                return name
            except RequestRejected as exc:
                if "already_exists" not in str(exc):
                    raise
        raise AliasSwapRefused(f"{self._where()}: could not find a free name for a build index of {self.names.read!r}")

    def write_index(self) -> str:
        """Where a load writes: the index being built (or the aborted attempt's: a load re-run
        after a failed finalize), else, after a commit, the published index."""
        return self._retry(self._write_index)

    def _write_index(self) -> str:
        published = self._published()
        building, aborted = self._building(published)
        if building or aborted:
            return str(building or aborted)
        read = self.names.read
        if not published.targets:
            raise AliasSwapRefused(f"{self._where()}: neither {self.names.loading!r} nor {read!r} exists: "
                                   f"prepare the run first (a staged run's plan)")
        if len(published.targets) > 1:
            raise AliasSwapRefused(f"{self._where()}: alias {read!r} points to several indices "
                                   f"({', '.join(published.targets)}); a load run alone does not know which to "
                                   "write: run the interval again from the start")
        return published.targets[0]

    def commit(self, written: set[str]) -> str | None:
        """Publish the index the loads wrote (``written``: from the run's reports) or, when no load
        wrote, the one being built; returns it (None: nothing to publish)."""
        return self._retry(lambda: self._commit(written))

    def _commit(self, written: set[str]) -> str | None:
        names, c = self.names, self.cluster
        published = self._published()
        building, aborted = self._building(published)
        if len(written) > 1:
            raise AliasSwapRefused(
                f"{self._where()}: the loads of this run wrote into different indices ({', '.join(sorted(written))}): "
                f"the interval was prepared again between them; run the interval again from the start (plan, "
                "every load, finalize)")
        chosen = next(iter(written)) if written else building or aborted
        if chosen is None:
            return None  # nothing prepared, nothing written: the published index stays as it is
        if self.state(chosen).kind != "index":
            raise AliasSwapRefused(
                f"{self._where()}: index {chosen!r}, which the loads wrote, no longer exists (the interval was "
                "prepared again since); run the interval again from the start")
        # searchable before readers switch to it: they must find it complete
        self._call(lambda: c.dialect.refresh(c.client, [chosen]), f"refreshing {chosen!r}")
        actions: list[dict[str, Any]] = []
        dropped = [i for i in published.targets if i != chosen]
        if published.targets != [chosen]:
            actions.append({"add": {"index": chosen, "alias": names.read}})
            actions += [{"remove_index": {"index": i}} for i in dropped]
        for alias, index in ((names.loading, building), (names.aborted, aborted)):
            if index == chosen:
                actions.append({"remove": {"index": index, "alias": alias}})
            elif index is not None:  # not what this run's loads wrote (plan run again alone after success)
                actions.append({"remove_index": {"index": index}})
                dropped.append(index)
        self._atomic(actions, f"pointing alias {names.read!r} at {chosen!r}")
        if actions:
            self.log.info("published", alias=names.read, index=chosen, deleted=dropped)
        return chosen

    def abort(self) -> str | None:
        """Move the loading alias to ``-aborted``: readers keep the published index, and the
        attempt's documents stay invisible for a resume (the next fresh attempt deletes them).
        Returns that index. Documents a load wrote into the published index (after an earlier
        commit) cannot be withdrawn."""
        return self._retry(self._abort)

    def _abort(self) -> str | None:
        names = self.names
        published = self.state(names.read)
        if published.kind == "index":  # nothing of ours was published under that name
            published = State("missing", {})
        building, aborted = self._building(published)
        if building is None:
            return aborted
        actions: list[dict[str, Any]] = [{"remove": {"index": building, "alias": names.loading}},
                                          {"add": {"index": building, "alias": names.aborted}}]
        if aborted is not None:  # an older attempt's, left by a crash
            actions.append({"remove_index": {"index": aborted}})
        self._atomic(actions, f"withdrawing the build of {names.read!r}")
        self.log.info("aborted: readers keep the published index", index=building, alias=names.read,
                      published=published.targets)
        return building
