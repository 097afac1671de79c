"""The ``sluice`` command: run, validate, plugins, schema.

Exit codes: 0 ok, 1 the job failed, 2 bad configuration or usage, 141 the reader of stdout went
away (``sluice schema | head``), as for any Unix tool killed by SIGPIPE. Errors are one clear line
each (with secrets masked); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from . import __version__, secrets
from .errors import ConfigError, SluiceError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for `seq 1000000 | head`
JOB_SUFFIXES = (".yaml", ".yml", ".json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The CLI reports a run's outcome itself, once: the summary on stdout and one ``error:`` line on
# stderr. The engine's log events that say the same (every partition failure is in the summary's
# ``failures``) would repeat it on stderr, so ``sluice run`` leaves them out of its log.
REPORTED_AT_THE_END = frozenset({"run failed", "partition failed"})


class _OutputClosed(Exception):
    """The reader of stdout went away (``| head``): the command ends quietly."""


def _err(message: str) -> None:
    print(secrets.mask(message), file=sys.stderr)


@contextlib.contextmanager
def _stdout() -> Iterator[None]:
    """Around writes to stdout: flushed at the end, and a closed pipe becomes ``_OutputClosed``."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        raise _OutputClosed from None


def _out(text: str) -> None:
    with _stdout():
        print(text)


def _print_rich(*items: Any) -> None:
    """Print rich tables and markup to stdout (styled on a terminal). Rendered first, then written
    like any output: rich's own handling of a closed pipe would exit 1."""
    from rich.console import Console

    console = Console()
    with console.capture() as captured:
        for item in items:
            console.print(item)
    with _stdout():
        sys.stdout.write(captured.get())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description="Move data between Elasticsearch/OpenSearch and S3.",
                                epilog="exit codes: 0 ok, 1 the job failed, 2 bad configuration or usage, "
                                       "141 stdout was closed early (| head)")
    p.add_argument("--version", action="version", version=f"sluice {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="run, validate, plugins, schema, runs or demo; `sluice COMMAND --help` for its "
                                "arguments")

    run = sub.add_parser("run", help="run a job for one data interval",
                         description="Run a job for one data interval (default: yesterday, UTC). On a terminal: "
                                     "live progress and a summary table; otherwise JSON log lines on stderr and "
                                     "the JSON summary on stdout.")
    run.add_argument("job", type=Path, metavar="JOB", help="the job file (YAML or JSON)")
    when = run.add_mutually_exclusive_group()
    when.add_argument("--ds", metavar="YYYY-MM-DD", help="the day to process: interval [ds, ds+1d)")
    when.add_argument("--start", metavar="TS", help="interval start (ISO timestamp); needs --end")
    run.add_argument("--end", metavar="TS", help="interval end (ISO timestamp, exclusive); needs --start")
    run.add_argument("--run-id", metavar="ID", help="override the run id (default: derived from job and interval)")
    run.add_argument("--resume", action="store_true", help="continue the run from its checkpoints")
    run.add_argument("--dry-run", action="store_true", help="read one batch, transform it, write nothing")
    run.add_argument("--staged", action="store_true",
                     help="run the steps an orchestrator runs (plan, extract, transform, load, finalize; or the "
                          "fused steps), in this process, over the job's staging (default .sluice/staging)")
    run.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                     help=f"least severe log events shown: {', '.join(LOG_LEVELS)} (default: INFO)")
    run.add_argument("--summary-json", type=Path, metavar="PATH", help="also write the run summary to this file")
    run.add_argument("--metrics-port", type=int, metavar="PORT",
                     help="serve Prometheus /metrics on this port while the run lasts (needs sluice-metrics)")

    val = sub.add_parser("validate", help="validate job files (every error is listed)",
                         description="Validate job files with the installed plugins, listing every error of "
                                     "every file; secrets need not be set. Exit 2 if any file is invalid.")
    val.add_argument("jobs", nargs="+", type=Path, metavar="JOB", help="job files or directories of them")

    plugins = sub.add_parser("plugins", help="installed plugins, their types and load failures",
                             description="Installed plugins: distribution, version, the types they give "
                                         "(sources, sinks, transforms, checkpoint stores, formats, metrics "
                                         "exporters; with aliases) and plugins that failed to load (exit 1 if any).")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    schema = sub.add_parser("schema", help="JSON Schema of the job file for the installed plugins",
                            description="JSON Schema of job files, every component block, format: and metrics: "
                                        "exporter typed by its plugin (point an editor at it for completion and "
                                        "inline errors).")
    schema.add_argument("-o", "--output", type=Path, metavar="PATH", help="write it to this file instead of stdout")

    # options every `runs` action takes; SUPPRESS keeps an action's parser from resetting them
    history = argparse.ArgumentParser(add_help=False)
    history.add_argument("--history", metavar="URL", default=argparse.SUPPRESS,
                         help="the history store: a SQLite file or postgresql://... (default: $SLUICE_HISTORY, "
                              "else .sluice/history.db)")
    history.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    runs = sub.add_parser("runs", parents=[history], help="the run history: recent runs, one in detail, a job's last",
                          description="Every run records itself in the history (.sluice/history.db, or "
                                      "$SLUICE_HISTORY). Without an action: recent runs, the latest first.")
    runs.add_argument("--job", metavar="JOB", default=argparse.SUPPRESS, help="only this job's runs")
    runs.add_argument("--since", metavar="WHEN", help="runs finished since: 2024-01-31, an ISO timestamp, or 7d, 12h")
    runs.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs (default: 50)")
    actions = runs.add_subparsers(dest="action", metavar="ACTION", help="show RUN_ID, or last JOB")
    show = actions.add_parser("show", parents=[history], help="one run: counts, partitions, dead letters, error",
                              description="One run in detail (its latest attempt): counts, each partition with a "
                                          "bar of its throughput, where the dead letters are, and the error.")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--job", metavar="JOB", default=argparse.SUPPRESS, help="the job, when run ids repeat")
    show.add_argument("--attempt", type=int, metavar="N", help="an earlier attempt (default: the latest)")
    last = actions.add_parser("last", parents=[history], help="a job's last run; exit 0 if it succeeded, else 1",
                              description="The job's last run in one line; exit 0 if it succeeded, 1 if it failed "
                                          "or none is recorded (for shell checks and cron).")
    last.add_argument("last_job", metavar="JOB")

    demo = sub.add_parser("demo", help="run the example jobs on embedded OpenSearch and S3 servers",
                          description="Seed embedded OpenSearch and S3 servers and run the example jobs on them.")
    demo.add_argument("--out", default="out/demo", metavar="DIR",
                      help="where to leave copies of the output (default: out/demo)")
    demo.add_argument("--events", type=int, default=50_000, metavar="N", help="log events to seed (default: 50000)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(globals()[f"cmd_{args.command}"](args))
    except ConfigError as exc:
        for problem in exc.problems:
            _err(f"error: {problem}")
        return EXIT_CONFIG
    except SluiceError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except _OutputClosed:
        # the flush at exit must not meet the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED


def _interval(args: argparse.Namespace) -> Any:
    from .templating import Interval

    if args.start or args.end:
        if not (args.start and args.end):
            raise ConfigError("--start and --end go together")
        return Interval.between(args.start, args.end)
    if args.ds:
        try:
            return Interval.for_day(args.ds)
        except ValueError:
            raise ConfigError(f"--ds {args.ds!r} is not a date (YYYY-MM-DD)") from None
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_job
    from .engine import Engine
    from .logs import configure_logging

    interactive = sys.stderr.isatty() and not args.log_json
    configure_logging(json_logs=not interactive, level=args.log_level)
    _leave_out_of_log(REPORTED_AT_THE_END)
    job = load_job(args.job, interval=_interval(args), run_id=args.run_id)
    if args.dry_run:
        return _dry_run(job)
    from .observe import watch

    watch(job, metrics_port=args.metrics_port)  # metrics while the run lasts, over every step of --staged
    if args.staged:
        if args.resume:
            raise ConfigError("--resume and --staged do not go together: a staged run re-runs its steps, "
                              "each replacing its own output")
        from .stages import run_staged

        summary = run_staged(job)
        return _report(args, job, summary)
    engine = Engine(job, resume=args.resume)
    if interactive and os.environ.get("SLUICE_NO_PROGRESS") is None:
        from .progress import LiveProgress

        with LiveProgress(engine.metrics, job.name):
            summary = engine.run()
    else:
        summary = engine.run()
    return _report(args, job, summary)


def _leave_out_of_log(events: frozenset[str]) -> None:
    """Drop the error events named ``events`` from the log: the CLI reports them at the end."""
    import structlog

    def drop(_: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if method == "error" and event.get("event") in events:
            raise structlog.DropEvent
        return event

    structlog.configure(processors=[drop, *structlog.get_config()["processors"]])


def _report(args: argparse.Namespace, job: Any, summary: Any) -> int:
    """Print the summary (a table on a terminal, JSON otherwise) and return the exit code."""
    data = summary.to_dict()
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    if sys.stdout.isatty():
        _print_summary(summary, job)
    else:
        _out(secrets.mask(orjson.dumps(data).decode()))
    if summary.status != "succeeded":
        _err(f"error: job {job.name!r} failed: {summary.error}")
        return EXIT_FAILED
    return EXIT_OK


def _print_summary(summary: Any, job: Any) -> None:
    from rich.table import Table

    t = Table(title=f"{summary.job}  run {summary.run_id}  [{summary.status}]", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_row("read", f"{summary.read:,}")
    t.add_row("created by transforms", f"{summary.created:,}")
    t.add_row("written", f"{summary.written:,}")
    for step, n in summary.filtered.items():
        t.add_row(f"filtered {step}", f"{n:,}")
    for stage, n in summary.dead_lettered.items():
        t.add_row(f"dead-lettered {stage}", f"{n:,}")
    t.add_row("in flight (re-read on --resume)" if summary.in_flight else "reconciled",
              f"{summary.in_flight:,}" if summary.in_flight else "yes")
    t.add_row("retries", f"{summary.retries:,}")
    for name, n in sorted(summary.counters.items()):
        t.add_row(name, f"{n:,}")
    t.add_row("partitions", f"{summary.partitions_done}/{summary.partitions}")
    t.add_row("duration", f"{summary.duration_s:.2f} s")
    t.add_row("throughput", f"{summary.docs_per_s:,.0f} docs/s")
    t.add_row("output", secrets.mask(job.destination.raw.get("path") or job.destination.raw.get("uri")
                                     or job.destination.raw.get("index") or job.destination.type))
    _print_rich(t)


def _dry_run(job: Any) -> int:
    from .chain import Chain
    from .context import RunContext

    ctx = RunContext.for_job(job)
    source = job.source.build()
    chain = Chain.for_job(job)
    opened = []
    try:
        for component in (source, *chain.steps):
            component.open(ctx)
            opened.append(component)
        partitions = list(source.partitions())
        out: dict[str, Any] = {"job": job.name, "run_id": job.run_id, "partitions": len(partitions),
                               "interval": [job.interval.start.isoformat(), job.interval.end.isoformat()]}
        if partitions:
            batches = source.read(partitions[0], None)
            first = next(iter(batches), None)
            getattr(batches, "close", lambda: None)()
            if first is not None:
                n_in = len(first.records)
                batch, counts = chain.apply(first)
                out.update(read=n_in, after_transforms=len(batch.records), filtered=dict(counts.filtered),
                           dead_lettered=len(batch.dead_letters), sample=batch.records[:3],
                           dead_letter_sample=[d.reason for d in batch.dead_letters[:3]])
        _out(secrets.mask(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str).decode()))
    finally:
        for component in opened:
            component.close()
    return EXIT_OK


def _job_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in JOB_SUFFIXES and f.is_file()))
        else:
            files.append(p)
    return files


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_job

    files = _job_files(args.jobs)
    if not files:
        raise ConfigError(f"no job files (*.yaml, *.yml, *.json) in {', '.join(map(str, args.jobs))}")
    bad = 0
    for path in files:
        try:
            job = load_job(path, secret_mode="placeholder")
        except ConfigError as exc:
            bad += 1
            for problem in exc.problems:
                _err(_in_file(path, problem))
            continue
        except Exception as exc:  # a plugin's bug while validating one file must not hide the others
            if args.debug:
                raise
            bad += 1
            _err(f"{path}: internal error while validating: {type(exc).__name__}: {exc} "
                 "(run with --debug for the traceback)")
            continue
        steps = " → ".join(s.type for s in job.steps)
        _out(f"ok  {path}  ({job.name}: {job.source.type} → {steps + ' → ' if steps else ''}{job.destination.type})")
    if bad:
        _err(f"{bad} of {len(files)} job file(s) invalid")
        return EXIT_CONFIG
    return EXIT_OK


def _in_file(path: Path, problem: str) -> str:
    """``job.yaml: <problem>``, the file named once: problems found while reading the file
    (a YAML error) or before the job has a name already start with it."""
    for lead in (f"{path}: ", f"job file {path}: "):
        if problem.startswith(lead):
            return f"{path}: {problem[len(lead):]}"
    return f"{path}: {problem}"


def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import get_registry

    registry = get_registry()
    data = {
        "plugins": [{"name": i.name, "distribution": i.distribution, "version": i.version, "types": i.types,
                     "aliases": i.aliases} for i in registry.plugins.values()],
        "failures": [f.__dict__ for f in registry.failures],
    }
    if args.json:
        _out(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.markup import escape
        from rich.table import Table

        t = Table(title="sluice plugins")
        for col in ("plugin", "distribution", "version", "types"):
            t.add_column(col)
        for i in data["plugins"]:
            types = "; ".join(f"{kind}: {', '.join(_with_aliases(n, i['aliases'].get(kind, {})) for n in names)}"
                              for kind, names in i["types"].items())
            t.add_row(i["name"], i["distribution"], i["version"], types)
        failed = [escape(f"{f['name']} ({f['distribution']}): {f['error']}") for f in data["failures"]]
        _print_rich(t, *(f"[red]failed to load[/red] {what}" for what in failed))
    return EXIT_FAILED if registry.failures else EXIT_OK


def _with_aliases(name: str, aliases: dict[str, list[str]]) -> str:
    """``elasticsearch (alias: opensearch)``."""
    names = aliases.get(name)
    return f"{name} ({'aliases' if len(names) > 1 else 'alias'}: {', '.join(names)})" if names else name


def cmd_schema(args: argparse.Namespace) -> int:
    from .registry import get_registry
    from .schema import job_schema

    text = orjson.dumps(job_schema(get_registry()), option=orjson.OPT_INDENT_2).decode()
    if args.output:
        args.output.write_text(text + "\n")
    else:
        _out(text)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from . import runs

    where, as_json = getattr(args, "history", None), getattr(args, "json", False)
    if args.action == "show":
        out = runs.show(where, args.run_id, job=getattr(args, "job", None), attempt=args.attempt, as_json=as_json)
    elif args.action == "last":
        out = runs.last(where, args.last_job, as_json=as_json)
    else:
        out = runs.list_runs(where, job=getattr(args, "job", None), since=args.since, limit=args.limit,
                             as_json=as_json)
    if out.text is not None:
        _out(out.text)
    if out.items:
        _print_rich(*out.items)
    return out.code


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import main as demo

    return demo(args.out, args.events)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
