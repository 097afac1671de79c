"""``make bench``: start the servers in their own processes, seed them, and measure each Sluice job
beside its floor in the same run. Writes bench/results/latest.json, latest.md and latest.png."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from sluice.demo import servers

from . import data, report
from .harness import median, run_process, sluice_cmd

RESULTS = Path(__file__).parent / "results"
BUCKET = "bench"


def job_file(tmp: Path, name: str, source: dict[str, Any], destination: dict[str, Any],
             steps: list[dict[str, Any]] | None = None, runtime: dict[str, Any] | None = None) -> Path:
    path = tmp / f"{name}.yaml"
    job = {"job_name": name, "runtime": runtime or {}, "source": source, "destination": destination,
           "transform": {"steps": steps or []},
           "dead_letter": {"type": "jsonl", "path": str(tmp / "dead" / name)},
           "checkpoints": {"type": "local", "path": str(tmp / "checkpoints")}}
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


class Bench:
    def __init__(self, docs: int, reps: int, big: int) -> None:
        self.docs, self.reps, self.big = docs, reps, big
        self.tmp = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1"})  # moto's; never real credentials
        os.environ.pop("AWS_PROFILE", None)
        self.env = {**os.environ, "SLUICE_NO_PROGRESS": "1"}
        self.results: dict[str, Any] = {}

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def start(self) -> None:
        self.es = servers.start_opensearch()
        self.es_url = self.es.url
        self.s3 = servers.start_s3()
        servers.create_bucket(self.s3.url, BUCKET)
        t0 = time.monotonic()
        servers.create_index(self.es.url, "bench-src", data.MAPPINGS)
        servers.bulk_index(self.es.url, "bench-src", data.docs(self.docs))
        data.seed_s3(self.s3.url, BUCKET, "src", self.docs)
        self.log(f"seeded {self.docs:,} docs of ~1 KB into OpenSearch and S3 in {time.monotonic() - t0:.1f} s")

    def stop(self) -> None:
        for server in (getattr(self, "s3", None), getattr(self, "es", None)):
            if server:
                server.stop()

    # -- helpers --------------------------------------------------------------------------------
    def es_block(self, index: str, **extra: Any) -> dict[str, Any]:
        return {"type": "opensearch", "hosts": [self.es_url], "index": index, **extra}

    def s3_block(self, uri: str, **extra: Any) -> dict[str, Any]:
        return {"type": "s3", "uri": uri, "endpoint_url": self.s3.url, **extra}

    def sluice(self, name: str, job: Path, before: Any = None, extra: list[str] | None = None) -> dict[str, Any]:
        runs = []
        for rep in range(self.reps):
            if before:
                before(rep)
            report = self.tmp / f"{name}.json"
            runs.append(run_process(sluice_cmd(job, report, extra), self.env, report))
        return median(runs)

    def floor(self, name: str, args: list[str], before: Any = None) -> dict[str, Any]:
        runs = []
        for rep in range(self.reps):
            if before:
                before(rep)
            out = self.tmp / f"floor-{name}.json"
            cmd = [sys.executable, "-m", "bench.floors", name, "--es", self.es_url, "--s3", self.s3.url,
                   "--bucket", BUCKET, "--report", str(out), *args]
            runs.append(run_process(cmd, self.env, out))
        return median(runs)

    def drop_index(self, index: str) -> None:
        try:
            servers.http("DELETE", f"{self.es.url}/{index}")
        except Exception:
            pass

    def record(self, key: str, sluice: dict[str, Any], floor: dict[str, Any] | None, target: float | None,
               note: str) -> None:
        ratio = sluice["docs_per_s"] / floor["docs_per_s"] if floor else None
        self.results[key] = {"sluice": sluice, "floor": floor, "ratio": ratio, "target_ratio": target, "note": note}
        shown = f"{ratio:.2f}x floor" if ratio else "no floor"
        self.log(f"{key:28s} {sluice['docs_per_s']:>10,.0f} docs/s  {shown}  "
                 f"cpu {sluice['cpu_us_per_doc']:.0f} µs/doc  rss {sluice['max_rss_mb']:.0f} MB")

    # -- scenarios ------------------------------------------------------------------------------
    def es_to_s3(self) -> None:
        floor = self.floor("es_to_s3", ["--index", "bench-src", "--prefix", "floor-es2s3"])
        for slices in (1, 2, 4):
            job = job_file(self.tmp, f"es_to_s3_s{slices}",
                           self.es_block("bench-src", slices=slices, pagination="scroll"),
                           self.s3_block(f"s3://{BUCKET}/es2s3-s{slices}"))
            result = self.sluice(f"es_to_s3_s{slices}", job)
            self.record(f"ES→S3 slices={slices}", result, floor, 1.5,
                        "scroll → orjson → gzip → put_object, sequential")

    def es_to_s3_remote(self, delay_ms: float = 5.0) -> None:
        """The same job with the cluster behind a link that delays every request by ``delay_ms``,
        as a cluster in another rack or zone would: the floor waits out each page, Sluice's sliced,
        pipelined reads overlap the waits."""
        import subprocess

        port = self.es.url.rsplit(":", 1)[1]
        proxy = subprocess.Popen([sys.executable, "-m", "bench.latency_proxy", port, str(delay_ms)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{proxy.stdout.readline().strip()}"  # type: ignore[union-attr]
            es, self.es_url = self.es_url, url
            floor = self.floor("es_to_s3", ["--index", "bench-src", "--prefix", "floor-es2s3-remote"])
            for slices in (1, 2, 4):
                job = job_file(self.tmp, f"es_to_s3_remote_s{slices}",
                               self.es_block("bench-src", slices=slices, pagination="scroll"),
                               self.s3_block(f"s3://{BUCKET}/es2s3-remote-s{slices}"))
                self.record(f"ES→S3 +{delay_ms:g} ms link, slices={slices}", self.sluice(f"es_remote_s{slices}", job),
                            floor, 1.5, f"the same plain script over the same {delay_ms:g} ms link")
        finally:
            self.es_url = es
            proxy.terminate()

    def s3_to_es(self) -> None:
        floor = self.floor("s3_to_es", ["--index", "bench-floor", "--prefix", "src"],
                           before=lambda rep: self.drop_index("bench-floor"))
        job = job_file(self.tmp, "s3_to_es", self.s3_block(f"s3://{BUCKET}/src"),
                       self.es_block("bench-dst", batch_size=2000))
        result = self.sluice("s3_to_es", job, before=lambda rep: self.drop_index("bench-dst"))
        self.record("S3→ES", result, floor, 0.9, "helpers.bulk of the same docs already in memory, chunk 2,000")

    def es_to_es(self) -> None:
        floor = self.floor("es_to_es", ["--index", "bench-src", "--dest", "bench-floor-reindex"],
                           before=lambda rep: self.drop_index("bench-floor-reindex"))
        steps = [{"type": "filter", "where": "record.get('level') != 'DEBUG'"},
                 {"type": "rename", "fields": {"app": "service"}},
                 {"type": "cast", "fields": {"latency_ms": "int"}}]
        job = job_file(self.tmp, "es_to_es", self.es_block("bench-src", slices=2, pagination="scroll"),
                       self.es_block("bench-reindex"), steps)
        result = self.sluice("es_to_es", job, before=lambda rep: self.drop_index("bench-reindex"))
        self.record("ES→ES reindex + 3 transforms", result, floor, None,
                    "scroll → same transforms in Python → helpers.bulk, sequential")

    def s3_to_s3(self) -> None:
        floor = self.floor("s3_to_s3", ["--prefix", "src", "--dest", "floor-zstd"])
        job = job_file(self.tmp, "s3_to_s3", self.s3_block(f"s3://{BUCKET}/src"),
                       self.s3_block(f"s3://{BUCKET}/recompressed", compression="zstd"))
        self.record("S3→S3 gzip→zstd", self.sluice("s3_to_s3", job), floor, None,
                    "list → get → gunzip → zstd → put, object by object")

    def staged(self) -> None:
        """ES→S3 with three transform steps, as one process (plain) and as an orchestrator's steps
        (``sluice run --staged``, local staging): fused, staged with the steps inside extract, and
        staged with a separate transform step. What each staged copy of the records costs."""
        floor = self.floor("es_to_s3", ["--index", "bench-src", "--prefix", "floor-es2s3-staged"])
        steps = [{"type": "filter", "where": "record.get('level') != 'DEBUG'"},
                 {"type": "rename", "fields": {"app": "service"}},
                 {"type": "cast", "fields": {"latency_ms": "int"}, "on_error": "dead_letter"}]
        modes = [("plain", None), ("fused", {"mode": "fused"}), ("staged, with_extract", {"transform": "with_extract"}),
                 ("staged, separate", {"transform": "separate"})]
        for label, staging in modes:
            name = "es_to_s3_" + label.replace(", ", "_")
            job = job_file(self.tmp, name, self.es_block("bench-src", slices=2, pagination="scroll"),
                           self.s3_block(f"s3://{BUCKET}/{name}"), steps, {"error_rate_threshold": 0.05})
            extra = None
            if staging is not None:
                spec = yaml.safe_load(job.read_text())
                spec["staging"] = {"uri": str(self.tmp / "staging"), "retention": 0, **staging}
                job.write_text(yaml.safe_dump(spec, sort_keys=False))
                extra = ["--staged"]
            self.record(f"ES→S3 + 3 steps, {label}", self.sluice(name, job, extra=extra), floor, None,
                        "the plain script (no transforms); slices=2; staged runs' time is wall time")

    def http(self, latency_ms: float = 5.0, per_page: int = 100) -> None:
        """The HTTP source and sink against a local API (its own process) that answers each request
        after ``latency_ms``, four partitions (accounts, files), rate limit off. Floors: one httpx
        client GETting page after page into a JSON Lines file, and POSTing the same files in JSON
        arrays of the same size, one request after another."""
        import subprocess

        from .http_api import record

        accounts = ["acme", "globex", "initech", "umbrella"]
        records = self.docs // len(accounts)
        api = subprocess.Popen([sys.executable, "-m", "bench.http_api", str(records), str(per_page), str(latency_ms)],
                               stdout=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{api.stdout.readline().strip()}"  # type: ignore[union-attr]
            floor = self.http_floor("http_source", ["--api", url, "--accounts", ",".join(accounts), "--per-page",
                                                    str(per_page), "--out", str(self.tmp / "http-floor.jsonl")])
            source = {"type": "http", "url": url + "/accounts/{{ partition.value }}/events", "records": "data",
                      "partitions": {"values": accounts},
                      "pagination": {"type": "page", "size_param": "per_page", "size": per_page}}
            job = job_file(self.tmp, "http_source", source, {"type": "jsonl", "path": str(self.tmp / "http-out")},
                           runtime={"max_workers": len(accounts)})
            self.record(f"HTTP source, {latency_ms:g} ms/page, 4 partitions", self.sluice("http_source", job), floor,
                        3.0, f"one httpx client, GET page after page ({per_page} records) → orjson → JSON Lines")
            data = self.tmp / "http-in"
            data.mkdir(exist_ok=True)
            for account in accounts:
                lines = b"".join(orjson.dumps(record(account, n)) + b"\n" for n in range(records))
                (data / f"{account}.jsonl").write_bytes(lines)
            floor = self.http_floor("http_sink", ["--api", url, "--per-page", str(per_page), "--data", str(data)])
            job = job_file(self.tmp, "http_sink", {"type": "jsonl", "path": str(data)},
                           {"type": "http", "url": url + "/ingest", "max_batch_records": per_page},
                           runtime={"max_workers": len(accounts)})
            self.record(f"HTTP sink, {latency_ms:g} ms/request, 4 partitions", self.sluice("http_sink", job), floor,
                        None, f"one httpx client, POST the files' lines as JSON arrays of {per_page}, one by one")
        finally:
            api.terminate()
            api.wait()

    def http_floor(self, name: str, args: list[str]) -> dict[str, Any]:
        runs = []
        for _ in range(self.reps):
            out = self.tmp / f"floor-{name}.json"
            runs.append(run_process([sys.executable, "-m", "bench.floors", name, "--report", str(out), *args],
                                    self.env, out))
        return median(runs)

    def postgres(self) -> None:
        """S3 → PostgreSQL (append by COPY, exactly once) and PostgreSQL → S3 (two key ranges), each
        beside a plain psycopg script; a real PostgreSQL 16 from pgserver, in its own processes."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        import psycopg

        server = pgserver.get_server(tempfile.mkdtemp(prefix="sluice-bench-pg-"), cleanup_mode="delete")
        uri = server.get_uri()
        columns = ('"_id" text, "@timestamp" timestamptz, app text, host text, level text, message text, '
                   'latency_ms integer, user_id text, tags jsonb, detail text')

        def fresh(table: str) -> None:
            with psycopg.connect(uri, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS sluice_checkpoints; "
                             f"CREATE TABLE {table} ({columns})")

        try:
            args = ["--prefix", "src", "--pg", uri, "--table", "bench_floor"]
            in_memory = self.floor("s3_to_pg", args, before=lambda rep: fresh("bench_floor"))
            same_job = self.floor("s3_to_pg_read", args, before=lambda rep: fresh("bench_floor"))
            job = job_file(self.tmp, "s3_to_pg", self.s3_block(f"s3://{BUCKET}/src"),
                           {"type": "postgres", "dsn": uri, "table": "bench_load"},
                           runtime={"batch_size": 10_000})  # one transaction (and WAL flush) per batch
            load = self.sluice("s3_to_pg", job, before=lambda rep: fresh("bench_load"))
            self.record("S3→Postgres", load, in_memory, 0.8,
                        "COPY FROM STDIN of the same rows, already in memory, one transaction")
            self.record("S3→Postgres, vs the same job", load, same_job, None,
                        "list → get → gunzip → orjson → COPY FROM STDIN, sequential, one transaction")
            with psycopg.connect(uri, autocommit=True) as conn:
                conn.execute("ALTER TABLE bench_load ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
                conn.execute("VACUUM ANALYZE bench_load")
            floor = self.floor("pg_to_s3", ["--pg", uri, "--table", "bench_load", "--prefix", "floor-pg2s3"])
            job = job_file(self.tmp, "pg_to_s3", {"type": "postgres", "dsn": uri, "table": "bench_load",
                                                  "partition_by": "seq", "partitions": 2},
                           self.s3_block(f"s3://{BUCKET}/pg2s3"))
            self.record("Postgres→S3 partitions=2", self.sluice("pg_to_s3", job), floor, 1.0,
                        "COPY (SELECT to_json(row)) TO STDOUT → gzip → put_object, sequential")
        finally:
            server.cleanup()

    def formats(self) -> None:
        """sluice-formats: ES → S3 Parquet (two slices) and S3 Parquet → ES, each beside a pyarrow
        floor, and what the same documents take as Parquet (zstd) and as gzip JSON Lines."""
        floor = self.floor("es_to_s3_parquet", ["--index", "bench-src", "--prefix", "floor-pq"])
        job = job_file(self.tmp, "es_to_s3_parquet", self.es_block("bench-src", slices=2, pagination="scroll"),
                       self.s3_block(f"s3://{BUCKET}/pq", format="parquet"))
        self.record("ES→S3 Parquet slices=2", self.sluice("es_to_s3_parquet", job), floor, 1.0,
                    "scroll → records in memory → pq.write_table (zstd) → put_object")
        jsonl = job_file(self.tmp, "es_to_s3_jsonl", self.es_block("bench-src", slices=2, pagination="scroll"),
                         self.s3_block(f"s3://{BUCKET}/pq-jsonl"))
        self.record("ES→S3 JSON Lines slices=2", self.sluice("es_to_s3_jsonl", jsonl), floor, None,
                    "the same job writing gzip JSON Lines, beside the Parquet floor")
        floor = self.floor("s3_parquet_to_es", ["--index", "bench-floor-pq", "--prefix", "pq"],
                           before=lambda rep: self.drop_index("bench-floor-pq"))
        job = job_file(self.tmp, "s3_parquet_to_es", self.s3_block(f"s3://{BUCKET}/pq", format="parquet"),
                       self.es_block("bench-pq", batch_size=2000))
        result = self.sluice("s3_parquet_to_es", job, before=lambda rep: self.drop_index("bench-pq"))
        self.record("S3 Parquet→ES", result, floor, 1.0,
                    "helpers.bulk of the same docs read from the Parquet objects, chunk 2,000")
        self.sizes = {name: self.prefix_bytes(prefix) for name, prefix in
                      (("Parquet (zstd)", "pq/"), ("gzip JSON Lines", "pq-jsonl/"))}
        self.log("output size: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in self.sizes.items()))

    def prefix_bytes(self, prefix: str) -> int:
        """Bytes of the part files under ``prefix``."""
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.s3.url, region_name="us-east-1")
        total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            total += sum(o["Size"] for o in page.get("Contents") or () if "/part-" in o["Key"])
        return total

    def memory(self) -> None:
        small = self.results["ES→S3 slices=1"]["sluice"]
        t0 = time.monotonic()
        self.drop_index("bench-big")
        servers.bulk_index(self.es.url, "bench-big", data.docs(self.big, seed=2))
        self.log(f"seeded {self.big:,} more docs in {time.monotonic() - t0:.1f} s")
        job = job_file(self.tmp, "es_to_s3_big", self.es_block("bench-big", pagination="scroll"),
                       self.s3_block(f"s3://{BUCKET}/es2s3-big"))
        reps, self.reps = self.reps, 1
        big = self.sluice("es_to_s3_big", job)
        self.reps = reps
        self.drop_index("bench-big")
        self.results["memory"] = {"docs": [small["docs"], big["docs"]],
                                  "max_rss_mb": [small["max_rss_mb"], big["max_rss_mb"]], "target_mb": 300}
        self.log(f"peak RSS: {small['max_rss_mb']:.0f} MB at {small['docs']:,} docs, "
                 f"{big['max_rss_mb']:.0f} MB at {big['docs']:,} docs")


def sizes_table(sizes: dict[str, int]) -> str:
    """The output of the same documents in each format, against gzip JSON Lines."""
    base = sizes.get("gzip JSON Lines")
    rows = [f"| {name} | {size / 1e6:.1f} | {size / base:.2f}x |" for name, size in sizes.items() if base]
    return "\n".join(["", "| output (same documents) | MB | vs gzip JSON Lines |", "|---|---:|---:|", *rows, ""]) \
        if rows else ""


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--big", type=int, default=500_000, help="docs for the memory run (0 to skip)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", nargs="*",
                   help="es_to_s3 es_to_s3_remote s3_to_es es_to_es s3_to_s3 staged http postgres formats")
    a = p.parse_args()
    bench = Bench(a.docs, a.reps, a.big)
    started = time.monotonic()
    names = a.only or ["es_to_s3", "es_to_s3_remote", "s3_to_es", "es_to_es", "s3_to_s3", "staged", "http",
                      "postgres", "formats"]
    try:
        if names != ["http"]:  # the HTTP scenario starts its own API and needs neither server
            bench.start()
        for name in names:
            getattr(bench, name)()
        if a.big and "ES→S3 slices=1" in bench.results:
            bench.memory()
    finally:
        bench.stop()
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "docs": a.docs, "reps": a.reps, "duration_s": round(time.monotonic() - started, 1),
        "results": bench.results,
    }
    if getattr(bench, "sizes", None):
        out["sizes"] = bench.sizes
    RESULTS.mkdir(exist_ok=True)
    # `--only http` and `--only postgres` keep the full run's record
    stem = names[0] if names in (["http"], ["postgres"], ["formats"]) else "latest"
    (RESULTS / f"{stem}.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    table = report.table(out)
    if stem == "http":
        table = table.replace("docs of ~1 KB", "API records of ~200 bytes").split("\nSeed targets")[0] + "\n"
    if stem == "postgres":
        table = table.split("\nSeed targets")[0] + "\n"
    if stem == "formats":
        table = table.split("\nSeed targets")[0] + "\n" + sizes_table(out.get("sizes") or {})
    (RESULTS / f"{stem}.md").write_text(table)
    report.chart(out, RESULTS / f"{stem}.png")
    print(table)


if __name__ == "__main__":
    main()
