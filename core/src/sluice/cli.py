"""The ``sluice`` command: run, validate, plugins, schema.

Exit codes: 0 ok, 1 the job failed, 2 bad configuration or usage. Errors are one clear line each
(with secrets masked); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from . import __version__, secrets
from .errors import ConfigError, SluiceError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
JOB_SUFFIXES = (".yaml", ".yml", ".json")


def _err(message: str) -> None:
    print(secrets.mask(message), file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice", description="Move data between Elasticsearch/OpenSearch and S3.")
    p.add_argument("--version", action="version", version=f"sluice {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job for one data interval")
    run.add_argument("job", type=Path)
    when = run.add_mutually_exclusive_group()
    when.add_argument("--ds", help="the day to process (YYYY-MM-DD): interval [ds, ds+1d)")
    when.add_argument("--start", help="interval start (ISO timestamp); needs --end")
    run.add_argument("--end", help="interval end (ISO timestamp, exclusive)")
    run.add_argument("--run-id", help="override the run id (default: derived from job and interval)")
    run.add_argument("--resume", action="store_true", help="continue the run from its checkpoints")
    run.add_argument("--dry-run", action="store_true", help="read one batch, transform it, write nothing")
    run.add_argument("--staged", action="store_true",
                     help="run the steps an orchestrator runs (plan, extract, transform, load, finalize; or the "
                          "fused steps), in this process, over the job's staging (default .sluice/staging)")
    run.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    run.add_argument("--log-level", default="INFO")
    run.add_argument("--summary-json", type=Path, help="also write the run summary to this file")

    val = sub.add_parser("validate", help="validate job files (every error is listed)")
    val.add_argument("jobs", nargs="+", type=Path, help="job files or directories of them")

    plugins = sub.add_parser("plugins", help="installed plugins, their types and load failures")
    plugins.add_argument("--json", action="store_true")

    schema = sub.add_parser("schema", help="JSON Schema of the job file for the installed plugins")
    schema.add_argument("-o", "--output", type=Path)

    demo = sub.add_parser("demo", help="run the example jobs on embedded OpenSearch and S3 servers")
    demo.add_argument("--out", default="out/demo", help="where to leave copies of the output")
    demo.add_argument("--events", type=int, default=50_000, help="log events to seed")
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
    job = load_job(args.job, interval=_interval(args), run_id=args.run_id)
    if args.dry_run:
        return _dry_run(job)
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


def _report(args: argparse.Namespace, job: Any, summary: Any) -> int:
    """Print the summary (a table on a terminal, JSON otherwise) and return the exit code."""
    data = summary.to_dict()
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    if sys.stdout.isatty():
        _print_summary(summary, job)
    else:
        print(secrets.mask(orjson.dumps(data).decode()))
    if summary.status != "succeeded":
        _err(f"error: job {job.name!r} failed: {summary.error}")
        return EXIT_FAILED
    return EXIT_OK


def _print_summary(summary: Any, job: Any) -> None:
    from rich.console import Console
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
    Console().print(t)


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
        print(secrets.mask(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str).decode()))
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
                _err(f"{path}: {problem}")
            continue
        steps = " → ".join(s.type for s in job.steps)
        print(f"ok  {path}  ({job.name}: {job.source.type} → {steps + ' → ' if steps else ''}{job.destination.type})")
    if bad:
        _err(f"{bad} of {len(files)} job file(s) invalid")
        return EXIT_CONFIG
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from .registry import get_registry

    registry = get_registry()
    data = {
        "plugins": [{"name": i.name, "distribution": i.distribution, "version": i.version, "types": i.types}
                    for i in registry.plugins.values()],
        "failures": [f.__dict__ for f in registry.failures],
    }
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="sluice plugins")
        for col in ("plugin", "distribution", "version", "types"):
            t.add_column(col)
        for i in data["plugins"]:
            types = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in i["types"].items())
            t.add_row(i["name"], i["distribution"], i["version"], types)
        console = Console()
        console.print(t)
        for f in data["failures"]:
            console.print(f"[red]failed to load[/red] {f['name']} ({f['distribution']}): {f['error']}")
    return EXIT_FAILED if registry.failures else EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .registry import get_registry
    from .schema import job_schema

    text = orjson.dumps(job_schema(get_registry()), option=orjson.OPT_INDENT_2).decode()
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import main as demo

    return demo(args.out, args.events)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
