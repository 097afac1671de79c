"""A Parquet object far larger than ``max_in_flight_batches * batch_size`` records is read with flat
memory: one row group at a time through ranged reads, never the whole object."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson

from .helpers import BUCKET, conn, encode

ROWS, ROW_GROUP = 200_000, 10_000

SCRIPT = """
import sys, orjson
import pyarrow as pa
from sluice.testing import run_job

def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1])

warm, job = orjson.loads(sys.argv[1]), orjson.loads(sys.argv[2])
run_job(warm)  # the same job over a small object: imports, clients and thread pools are set up
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident set (VmHWM) to the current one
before = status("VmRSS")
summary = run_job(job)
print(orjson.dumps({"status": summary.status, "error": summary.error, "read": summary.read,
                    "arrow_peak": pa.default_memory_pool().max_memory(),
                    "rss_growth_kb": status("VmHWM") - before}).decode())
"""


def test_a_large_parquet_object_is_read_with_flat_memory(s3: Any, bucket: str, moto_url: str, tmp_path: Any) -> None:
    records = [{"n": i, "app": ("web", "api", "db")[i % 3], "text": f"{i:08x}" * 24} for i in range(ROWS)]
    body = encode({"type": "parquet", "row_group_size": ROW_GROUP}, records)
    s3.put_object(Bucket=BUCKET, Key="big/big.parquet", Body=body)
    s3.put_object(Bucket=BUCKET, Key="small/small.parquet", Body=encode({"type": "parquet",
                                                                         "row_group_size": ROW_GROUP},
                                                                        records[: 2 * ROW_GROUP]))
    decoded = 200 * ROWS  # bytes the whole object takes decoded in Arrow: ~40 MB

    def job(name: str) -> dict[str, Any]:
        return {"job_name": name, "runtime": {"batch_size": 1000, "max_in_flight_batches": 2, "max_workers": 1},
                "source": {"type": "s3", "uri": f"s3://{BUCKET}/{name}", "format": "parquet",
                           "prefetch_max_bytes": 0, **conn(moto_url)},
                "destination": {"type": "file", "path": str(tmp_path / name), "compression": "gzip"},
                "checkpoints": {"type": "local", "path": str(tmp_path / "cp")}}

    assert ROWS > 10 * 1000 * 2  # far more than batch_size x max_in_flight_batches
    proc = subprocess.run([sys.executable, "-c", SCRIPT, orjson.dumps(job("small")).decode(),
                           orjson.dumps(job("big")).decode()], capture_output=True, text=True, cwd=tmp_path,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["read"] == ROWS, result["error"]
    # Arrow holds about one row group (10,000 of 200,000 rows) at a time
    assert result["arrow_peak"] < decoded / 5, result
    # the Python side holds the batches in flight, not the file: 200,000 records as dicts take ~150 MB
    assert result["rss_growth_kb"] < 30 * 1024, result
