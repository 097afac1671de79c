"""Runs the demo: start the servers, seed a week of events, run the example jobs through the real
CLI (ES→S3, S3→ES, and ES→PostgreSQL when sluice-postgres and pgserver are installed), check that
every summary reconciles, print where the output is, stop everything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ..errors import SluiceError
from . import data, servers

INDEX, RESTORED, BUCKET = "demo-logs", "demo-logs-restored", "demo-lake"
NEEDED = {"elasticsearch": "sluice-es", "s3": "sluice-s3", "filter": "sluice-transforms"}


def _say(text: str) -> None:
    print(text, flush=True)


def _check_plugins() -> None:
    from ..registry import get_registry

    registry = get_registry()
    missing = sorted({dist for name, dist in NEEDED.items()
                      if name not in registry.types["source"] and name not in registry.types["transform"]})
    if missing:
        raise SluiceError(f"the demo needs {', '.join(missing)}: pip install {' '.join(missing)}")


def _run_job(job: Path, start: str, end: str, out: Path, env: dict[str, str]) -> dict[str, Any]:
    summary_file = out / f"{job.stem}.summary.json"
    cmd = [sys.executable, "-m", "sluice.cli", "run", str(job), "--start", start, "--end", end,
           "--summary-json", str(summary_file)]
    _say(f"\n$ sluice run {job.name} --start {start} --end {end}")
    code = subprocess.call(cmd, env=env)
    if not summary_file.exists():
        raise SluiceError(f"{job.name} ended with exit code {code} and no summary")
    summary = orjson.loads(summary_file.read_bytes())
    if code != 0 or summary["status"] != "succeeded":
        raise SluiceError(f"{job.name} failed (exit {code}): {summary.get('error')}")
    if not summary["reconciled"]:
        raise SluiceError(f"{job.name}: counts do not reconcile: {summary['in_flight']} records unaccounted for")
    return summary


def _postgres_installed() -> bool:
    from ..registry import get_registry

    return "postgres" in get_registry().types["sink"]


def _show_postgres(pg: servers.Server, summary: dict[str, Any]) -> None:
    """The ES→PostgreSQL job's counts, and a SELECT of what the table now holds."""
    rows = servers.psql(pg, "SELECT count(*) FROM demo.web_events").split("\n")[2].strip()
    if int(rows) != summary["written"]:
        raise SluiceError(f"demo.web_events holds {rows} rows, but the job wrote {summary['written']:,}")
    _say(f"  ES→PG  read {summary['read']:,}, written {summary['written']:,} into demo.web_events "
         f"({summary['docs_per_s']:,.0f} docs/s), dead-lettered {summary['dead_lettered_total']:,} "
         "(latencies the server could not take as integers)")
    _say("\n$ psql -c \"SELECT service, count(*) ... FROM demo.web_events GROUP BY service\"")
    _say(servers.psql(pg, "SELECT service, count(*) AS events, round(avg(latency_ms)) AS avg_latency_ms, "
                          "min(ts)::date AS first_day, max(ts)::date AS last_day "
                          "FROM demo.web_events GROUP BY service ORDER BY events DESC").rstrip())


def main(out_dir: str = "out/demo", events: int = 50_000) -> int:
    """Run the whole demo; returns the exit code."""
    _check_plugins()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started: list[servers.Server] = []
    try:
        _say("Starting an OpenSearch-compatible server (osmem-server) and an S3 server (moto)...")
        es = servers.start_opensearch()
        started.append(es)
        s3 = servers.start_s3()
        started.append(s3)
        servers.create_bucket(s3.url, BUCKET)
        pg = servers.start_postgres() if _postgres_installed() else None
        if pg is not None:
            started.append(pg)
        t0 = time.monotonic()
        servers.create_index(es.url, INDEX, data.MAPPINGS)
        n = servers.bulk_index(es.url, INDEX, data.events(events))
        _say(f"Seeded {n:,} log events over a week into index {INDEX!r} at {es.url} "
             f"in {time.monotonic() - t0:.1f} s; bucket s3://{BUCKET} at {s3.url}")

        env = {**os.environ, "SLUICE_DEMO_ES": es.url, "SLUICE_DEMO_S3": s3.url, "SLUICE_DEMO_OUT": str(out),
               "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"}
        env.pop("AWS_PROFILE", None)
        if pg is not None:
            env["SLUICE_DEMO_PG"] = pg.url
        start, end = data.interval()
        jobs = resources.files("sluice.demo") / "jobs"
        with resources.as_file(jobs) as job_dir:
            to_s3 = _run_job(job_dir / "es_to_s3_daily.yaml", start, end, out, env)
            to_es = _run_job(job_dir / "s3_to_es.yaml", start, end, out, env)
            export = _run_job(job_dir / "s3_to_local.yaml", start, end, out, env)
            to_pg = _run_job(job_dir / "es_to_postgres.yaml", start, end, out, env) if pg is not None else None
        restored = servers.count(es.url, RESTORED)
        if restored != to_es["written"] or to_es["read"] != to_s3["written"]:
            raise SluiceError(f"round trip mismatch: {to_s3['written']:,} written to S3, {to_es['read']:,} read back, "
                              f"{restored:,} in {RESTORED!r}")
        _say("\nEverything reconciled:")
        _say(f"  ES→S3  read {to_s3['read']:,}, filtered {to_s3['filtered_total']:,}, "
             f"dead-lettered {to_s3['dead_lettered_total']:,}, written {to_s3['written']:,} "
             f"({to_s3['docs_per_s']:,.0f} docs/s)")
        _say(f"  S3→ES  read {to_es['read']:,}, written {to_es['written']:,} into {RESTORED!r} "
             f"({to_es['docs_per_s']:,.0f} docs/s); the index now holds {restored:,} documents")
        if pg is not None and to_pg is not None:
            _show_postgres(pg, to_pg)
        else:
            _say("  ES→PostgreSQL skipped: pip install sluice-postgres pgserver to see it")
        keys = servers.list_keys(s3.url, BUCKET, "logs/")
        _say(f"\nThe lake: {len(keys)} objects under s3://{BUCKET}/logs/, one folder per event day, e.g.")
        for key in [k for k in keys if "/part-" in k][:3] + [k for k in keys if k.endswith("_SUCCESS")][:1]:
            _say(f"  s3://{BUCKET}/{key}")
        _say("\nWhere to look (the servers run in memory and stop now; these copies stay):")
        _say(f"  {out}/lake/              the lake copied back as gzip JSON Lines ({export['written']:,} records)")
        _say(f"  {out}/dead_letters/      records the cast step rejected, each with its reason")
        _say(f"  {out}/*.summary.json     each run's summary")
        _say(f"  try: zcat {out}/lake/part-*.gz | head -3")
        _say(f"       cat {out}/dead_letters/demo_es_to_s3/part-* | head -1 | python -m json.tool")
        return 0
    except SluiceError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(started):
            server.stop()
