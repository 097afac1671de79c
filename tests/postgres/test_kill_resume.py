"""kill -9 of a real ``sluice run`` in the middle of a load, then ``--resume``: the table ends with
exactly the rows of one run (none lost, none twice) and every bad row is a dead letter exactly
once, in each mode. A CHECK constraint that sleeps a little per row keeps the load going long
enough to be killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.testing import read_jsonl

from .helpers import Db, job, write_jsonl

SLUICE = str(Path(sys.executable).with_name("sluice"))
N = 2000


def records() -> list[dict[str, Any]]:
    # every 250th record has no name (NOT NULL): a dead letter
    return [{"id": i, "at": f"2024-01-01T{i % 24:02d}:{i % 60:02d}:00Z", "name": None if i % 250 == 7 else f"e{i}"}
            for i in range(N)]


def prepare(pg: Db, tmp_path: Path, mode: str) -> dict[str, Any]:
    pg.sql("CREATE FUNCTION slowly(integer) RETURNS boolean LANGUAGE sql AS "
           "$$ SELECT pg_sleep(0.0005) IS NOT NULL $$")
    pg.sql("CREATE TABLE events (id integer PRIMARY KEY, at timestamptz NOT NULL, name text NOT NULL, "
           "CHECK (slowly(id)))")
    pg.sql("INSERT INTO events VALUES (-1, '2023-12-31 10:00Z', 'before'), (5, '2024-01-01 03:00Z', 'old five')")
    data = records()
    for f in range(2):
        write_jsonl(tmp_path / "in" / f"part-{f}.jsonl", data[f::2])
    extra = {"key": ["id"]} if mode == "upsert" else {"time_column": "at"} if mode == "replace_interval" else {}
    if mode == "append":
        pg.sql("DELETE FROM events WHERE id = 5")
    spec = job(f"kill_{mode}", {"type": "jsonl", "path": str(tmp_path / "in")}, pg.sink(mode=mode, **extra),
               runtime={"batch_size": 50, "max_workers": 2, "error_rate_threshold": 0.05},
               dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")})
    (tmp_path / "job.json").write_bytes(orjson.dumps(spec))
    return spec


def sluice(tmp_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([SLUICE, "run", str(tmp_path / "job.json"), "--ds", "2024-01-01", *extra], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_mid_load(pg: Db, proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL once a few batches committed (and before the last); returns how many had."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        loaded = pg.sql("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                        "AND tablename = 'sluice_checkpoints'")[0][0] and pg.sql(
            "SELECT count(*) FROM sluice_checkpoints")[0][0]
        if loaded >= 6:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return int(loaded)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        time.sleep(0.01)
    raise AssertionError("no batch committed within 60 s")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["append", "upsert", "replace_interval"])
def test_killed_mid_load_then_resumed_loads_exactly_one_runs_rows(pg: Db, tmp_path: Path, mode: str) -> None:
    prepare(pg, tmp_path, mode)
    loaded = kill_mid_load(pg, sluice(tmp_path))
    assert loaded < N // 50, "killed before the end"
    if mode == "replace_interval":  # nothing of a killed run is visible
        assert sorted(pg.sql("SELECT id FROM events")) == [(-1,), (5,)]
    resumed = sluice(tmp_path, "--resume")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-3000:]
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    assert summary["reconciled"] and summary["read"] < N, summary  # it continued, it did not start over

    bad = {r["id"] for r in records() if r["name"] is None}
    good = [r["id"] for r in records() if r["id"] not in bad]
    ids = [r[0] for r in pg.sql("SELECT id FROM events")]
    assert Counter(ids) == Counter([-1, *good] + ([5] if mode == "upsert" and 5 in bad else [])), \
        "every good row exactly once, the rows outside the run kept"
    dead = [d["record"]["id"] for d in read_jsonl(tmp_path / "dead")]
    assert sorted(dead) == sorted(bad), "every bad row a dead letter, exactly once"
    if mode == "upsert":
        assert pg.sql("SELECT name FROM events WHERE id = 5") == [("e5",)]
