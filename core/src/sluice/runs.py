"""``sluice runs``: the run history read back. Recent runs, one run in detail (with a bar chart of
throughput per partition, since a skewed partition shows faster as a bar than in a table), and a
job's last run as an exit code for shell checks.

Each function returns what to print and the exit code; the CLI prints it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError, SluiceError
from .history import OFF, HistoryStore, PartitionRecord, RunRecord, describe, location

CHART_WIDTH = 24
CHART_ROWS = 100  # partitions drawn at most (the slowest first beyond that)


@dataclass
class Output:
    """What a ``sluice runs`` command prints (rich renderables, or text) and its exit code."""

    code: int = 0
    text: str | None = None
    items: list[Any] = field(default_factory=list)


def parse_since(text: str) -> datetime:
    """``2024-01-31``, an ISO timestamp (UTC unless it says otherwise), or ``7d``, ``12h``, ``30m`` ago."""
    relative = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative[2]]
        return datetime.now(UTC) - timedelta(**{unit: int(relative[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected a date (2024-01-31), an ISO timestamp, or an age "
                          "such as 7d, 12h or 30m") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def open_store(where: str | None) -> HistoryStore | None:
    """The history store to read; None when nothing was ever recorded there (no SQLite file yet)."""
    where = where or location()
    if where.lower() in OFF:
        raise ConfigError(f"the run history is off ($SLUICE_HISTORY={where}); point --history at a store to read")
    if not where.startswith(("postgresql://", "postgres://")) and not Path(where.removeprefix("sqlite:///")).exists():
        return None
    return HistoryStore(where)


def _json(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode()


def _when(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _interval(run: RunRecord) -> str:
    start, end = run.interval_start, run.interval_end
    if start is None or end is None:
        return "-"
    if end - start == timedelta(days=1) and start.time() == datetime.min.time():
        return start.strftime("%Y-%m-%d")
    return f"{start.isoformat()} → {end.isoformat()}"


def _status(status: str) -> str:
    return f"[green]{status}[/green]" if status == "succeeded" else f"[red]{status}[/red]"


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


# -- sluice runs ------------------------------------------------------------------------------
def list_runs(where: str | None, *, job: str | None = None, since: str | None = None, limit: int = 50,
              as_json: bool = False) -> Output:
    """Recent attempts, the latest first."""
    after = parse_since(since) if since else None
    store = open_store(where)
    runs: list[RunRecord] = []
    if store is not None:
        with store:
            runs = store.runs(job=job, since=after, limit=limit)
    if as_json:
        return Output(text=_json([r.to_dict() for r in runs]))
    if not runs:
        return Output(text=f"no runs recorded in {describe(where or location())}"
                           + (f" for job {job!r}" if job else "") + (f" since {after.isoformat()}" if after else ""))
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="sluice runs")
    for column, justify in (("finished (UTC)", "left"), ("job", "left"), ("run id", "left"), ("#", "right"),
                            ("status", "left"), ("interval", "left"), ("read", "right"), ("written", "right"),
                            ("dead", "right"), ("duration", "right"), ("error", "left")):
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in runs:
        error = escape((r.error or "")[:60] + ("…" if r.error and len(r.error) > 60 else ""))
        t.add_row(_when(r.finished_at), escape(r.job), escape(r.run_id), str(r.attempt), _status(r.status),
                  _interval(r), _n(r.read), _n(r.written), _n(r.dead_lettered),
                  f"{r.duration_s:.1f} s" if r.duration_s is not None else "-", error)
    return Output(items=[t])


# -- sluice runs show -------------------------------------------------------------------------
def show(where: str | None, run_id: str, *, job: str | None = None, attempt: int | None = None,
         as_json: bool = False) -> Output:
    """One run (its latest attempt unless ``attempt``): counts, partitions, dead letters, error."""
    store = open_store(where)
    if store is None:
        raise SluiceError(f"no run {run_id!r} in the history at {describe(where or location())} (nothing recorded)")
    with store:
        attempts = store.attempts(run_id, job)
        chosen = [a for a in attempts if attempt is None or a.attempt == attempt]
        if not chosen:
            what = f"run {run_id!r}" + (f" of job {job!r}" if job else "") + (f", attempt {attempt}" if attempt else "")
            raise SluiceError(f"no {what} in the history at {describe(store.where)}")
        if len({a.job for a in chosen}) > 1:
            jobs = ", ".join(sorted({a.job for a in chosen}))
            raise ConfigError(f"run id {run_id!r} belongs to several jobs ({jobs}); add --job")
        run = chosen[0]
        partitions = store.partitions(run)
    if as_json:
        return Output(text=_json({"run": run.to_dict(), "attempts": [a.attempt for a in attempts],
                                  "partitions": [{**asdict(p), "records_per_s": p.records_per_s}
                                                 for p in partitions]}))
    return Output(items=[_details(run, len(attempts)), *_partition_chart(run, partitions)])


def _details(run: RunRecord, attempts: int) -> Any:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{escape(run.job)}  run {escape(run.run_id)}  attempt {run.attempt} of {attempts}  "
                    f"[{'green' if run.status == 'succeeded' else 'red'}]{run.status}[/]", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    kind = {"run": "sluice run", "staged": "staged run"}.get(run.kind, run.kind)
    t.add_row("kind", kind + (" (--resume)" if run.resumed else "")
              + ("" if run.finalized else " (not finalized: a step failed)"))
    t.add_row("interval", _interval(run))
    t.add_row("started / finished (UTC)", f"{_when(run.started_at)} / {_when(run.finished_at)}")
    t.add_row("duration", f"{run.duration_s:.2f} s" if run.duration_s is not None else "-")
    t.add_row("read", _n(run.read))
    if run.created:
        t.add_row("created by transforms", _n(run.created))
    t.add_row("written", _n(run.written))
    for step, n in run.filtered_by.items():
        t.add_row(f"filtered {escape(step)}", _n(n))
    for stage, n in run.dead_lettered_by.items():
        t.add_row(f"dead-lettered {escape(stage)}", _n(n))
    t.add_row("retries", _n(run.retries))
    for component, n in sorted(run.retries_by.items()):
        if n:
            t.add_row(f"retries {escape(component)}", _n(n))
    for name, n in sorted(run.counters.items()):
        t.add_row(escape(name), _n(n))
    t.add_row("error rate", f"{run.error_rate:.2%} (threshold {run.error_rate_threshold:.2%})")
    t.add_row("partitions done", f"{run.partitions_done}/{run.partitions}")
    t.add_row("destination", escape(run.destination or "-"))
    t.add_row("dead letters", escape(run.dead_letters or "-"))
    t.add_row("host / sluice", f"{escape(run.host)} / {escape(run.sluice_version)}")
    if run.error:
        t.add_row("[red]error[/red]", escape(run.error))
    return t


def _partition_chart(run: RunRecord, partitions: list[PartitionRecord]) -> list[Any]:
    """Partitions with their counts and a bar of records per second each, scaled to the fastest."""
    from rich.bar import Bar
    from rich.markup import escape
    from rich.table import Table

    if not partitions:
        return ["no partitions recorded"]
    rates = [p.records_per_s for p in partitions]
    shown = partitions
    if len(partitions) > CHART_ROWS:  # the slowest are the ones to look at
        shown = sorted(partitions, key=lambda p: (p.records_per_s is None, p.records_per_s or 0))[:CHART_ROWS]
    top = max((r for r in rates if r is not None), default=None)
    t = Table(title="partitions: records per second" if top else "partitions")
    for column, justify in (("partition", "left"), ("status", "left"), ("read", "right"), ("written", "right"),
                            ("dead", "right"), ("seconds", "right"), ("records/s", "right")):
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    if top:
        t.add_column("", width=CHART_WIDTH, no_wrap=True)
    else:
        t.add_column("checkpoint / error")
    for p in shown:
        rate = p.records_per_s
        cells = [escape(p.key), _status(p.status) if p.status != "done" else p.status, _n(p.read), _n(p.written),
                 _n(p.dead_lettered), f"{p.duration_s:.2f}" if p.duration_s is not None else "-",
                 f"{rate:,.0f}" if rate is not None else "-"]
        if top:
            color = "green" if p.status == "done" else "red"
            cells.append(Bar(size=top, begin=0, end=rate or 0, width=CHART_WIDTH, color=color))  # type: ignore[arg-type]
        else:
            cells.append(escape(p.error or (orjson.dumps(p.checkpoint).decode() if p.checkpoint is not None else "")))
        t.add_row(*cells)
    notes: list[Any] = [t]
    if len(partitions) > len(shown):
        notes.append(f"{len(partitions) - len(shown)} faster partitions not shown")
    if not top:
        notes.append("no partition has counts and a duration to chart (partitions done by an earlier attempt "
                     "have none)")
    return notes


# -- sluice runs last -------------------------------------------------------------------------
def last(where: str | None, job: str, *, as_json: bool = False) -> Output:
    """The job's latest attempt, one line; exit 0 when it succeeded, 1 otherwise (or when none)."""
    store = open_store(where)
    run = None
    if store is not None:
        with store:
            run = store.last(job)
    if run is None:
        return Output(code=1, text=_json(None) if as_json else
                      f"no runs of job {job!r} in the history at {describe(where or location())}")
    code = 0 if run.status == "succeeded" else 1
    if as_json:
        return Output(code=code, text=_json(run.to_dict()))
    line = (f"{run.job}: {run.status}, run {run.run_id} (attempt {run.attempt}), finished {_when(run.finished_at)} "
            f"UTC: read {run.read:,}, written {run.written:,}, dead-lettered {run.dead_lettered:,}")
    return Output(code=code, text=line + (f"\nerror: {run.error}" if run.error else ""))


__all__ = ["Output", "last", "list_runs", "parse_since", "show"]
