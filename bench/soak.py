"""``make soak``: ES → S3 → ES, over and over for ``--minutes``, through proxies that drop
connections and answer 429 and 503 at realistic rates. Every round must end exactly once (the
lake and the restored index hold each document once, nothing lost); the process's resident memory
is sampled after every round and must stay flat. Writes bench/results/soak.json and soak.md.

Runs in one process (the jobs through ``sluice.testing.run_job``), so a leak across runs shows.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from sluice.demo import servers

from . import data

RESULTS = Path(__file__).parent / "results"
BUCKET = "soak"
RETRY = {"attempts": 8, "initial_backoff_s": 0.05, "max_backoff_s": 1.0, "max_time_s": 120}


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def faults(proxy: Any, every: int) -> None:
    """Drops, 429s and 503s at about one request in ``every`` each, on reads and writes alike."""
    proxy.add(method="POST", path=r"_search", drop=True, every=every)
    proxy.add(method="POST", path=r"/_bulk", status=429, every=every + 1,
              body=b'{"error":{"type":"es_rejected_execution_exception","reason":"queue full"},"status":429}')
    proxy.add(method="POST", path=r"/_bulk", drop=True, every=3 * every + 1)
    proxy.add(method="PUT", path=r".", status=503, every=every + 2,
              body=b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
    proxy.add(method="GET", path=r".", drop=True, every=2 * every + 3)


def lake_ids(s3: Any, prefix: str) -> list[str]:
    ids: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents") or ():
            if "/part-" in o["Key"]:
                body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
                ids += [orjson.loads(line)["_id"] for line in gzip.decompress(body).splitlines()]
    return ids


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--every", type=int, default=20, help="about one request in this many is faulted per kind")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import boto3
    from opensearchpy import OpenSearch

    from sluice.testing import run_job
    from support.faultproxy import FaultProxy

    os.environ.update({"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak", "AWS_DEFAULT_REGION": "us-east-1"})
    es, s3srv = servers.start_opensearch(), servers.start_s3()
    es_proxy, s3_proxy = FaultProxy(es.url, record=False), FaultProxy(s3srv.url, record=False)
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        servers.create_bucket(s3srv.url, BUCKET)
        servers.create_index(es.url, "soak-src", data.MAPPINGS)
        servers.bulk_index(es.url, "soak-src", data.docs(a.docs))
        faults(es_proxy, a.every)
        faults(s3_proxy, a.every)
        s3 = boto3.client("s3", endpoint_url=s3srv.url, region_name="us-east-1")
        client = OpenSearch(hosts=[es.url])
        workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sluice-soak-{os.getpid()}"
        workdir.mkdir(parents=True, exist_ok=True)
        os.chdir(workdir)
        n = 0
        while time.monotonic() - started < a.minutes * 60:
            n += 1
            t0 = time.monotonic()
            to_s3 = run_job({
                "job_name": "soak_es_to_s3", "runtime": {"retry": RETRY, "batch_size": 1000},
                "source": {"type": "opensearch", "hosts": [es_proxy.url], "index": "soak-src", "slices": 2,
                           "pagination": "scroll" if n % 2 else "pit", "page_size": 500},
                "destination": {"type": "s3", "uri": f"s3://{BUCKET}/lake", "endpoint_url": s3_proxy.url,
                                "max_records_per_file": 5000, "retry_mode": "standard", "max_attempts": 2},
            }, run_id=f"soak-{n}")
            back = run_job({
                "job_name": "soak_s3_to_es", "runtime": {"retry": RETRY, "batch_size": 1000},
                "source": {"type": "s3", "uri": f"s3://{BUCKET}/lake/date=2024-01-01/run_id=soak-{n}",
                           "endpoint_url": s3_proxy.url, "keys_per_partition": 2, "max_attempts": 2},
                "destination": {"type": "opensearch", "hosts": [es_proxy.url], "index": f"soak-dst-{n}"},
            }, run_id=f"soak-back-{n}")
            ids = lake_ids(s3, f"lake/date=2024-01-01/run_id=soak-{n}/")
            client.indices.refresh(index=f"soak-dst-{n}")
            restored = client.count(index=f"soak-dst-{n}")["count"]
            client.indices.delete(index=f"soak-dst-{n}")
            row = {"round": n, "seconds": round(time.monotonic() - t0, 1), "es_to_s3": to_s3.status,
                   "s3_to_es": back.status, "lake": len(ids), "lake_distinct": len(set(ids)), "restored": restored,
                   "retries": to_s3.retries + back.retries, "rss_mb": round(rss_mb(), 1),
                   "errors": [e for e in (to_s3.error, back.error) if e]}
            rounds.append(row)
            print(orjson.dumps(row).decode(), file=sys.stderr, flush=True)
            if not (row["lake"] == row["lake_distinct"] == row["restored"] == a.docs):
                break
    finally:
        es_proxy.close()
        s3_proxy.close()
        s3srv.stop()
        es.stop()
    report(rounds, a, time.monotonic() - started)


def report(rounds: list[dict[str, Any]], a: argparse.Namespace, seconds: float) -> None:
    exact = bool(rounds) and all(r["lake"] == r["lake_distinct"] == r["restored"] == a.docs for r in rounds)
    rss = [r["rss_mb"] for r in rounds]
    settled = rss[len(rss) // 2:] or rss  # the allocator settles in the first rounds
    growth = (settled[-1] - settled[0]) if settled else 0.0
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "minutes": round(seconds / 60, 1),
              "docs_per_round": a.docs, "rounds": len(rounds), "exactly_once": exact,
              "retries": sum(r["retries"] for r in rounds), "rss_mb_first": rss[0] if rss else None,
              "rss_mb_last": rss[-1] if rss else None, "rss_mb_growth_last_half": round(growth, 1),
              "fault_rate": f"about 1 request in {a.every} per kind: dropped scroll/search, 429 and dropped bulk, "
                            "503 on S3 PUT, dropped S3 GET", "rounds_detail": rounds}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    md = (f"Soak of {result['when']}: {result['rounds']} rounds of ES → S3 → ES ({a.docs:,} documents each) in "
          f"{result['minutes']} min, {result['fault_rate']}; {result['retries']:,} retries; exactly once in every "
          f"round: {'yes' if exact else 'NO'}; RSS {result['rss_mb_first']} → {result['rss_mb_last']} MB "
          f"({result['rss_mb_growth_last_half']:+} MB over the last half of the rounds).\n")
    (RESULTS / "soak.md").write_text(md)
    print(md)
    if not exact:
        sys.exit(1)


if __name__ == "__main__":
    main()
