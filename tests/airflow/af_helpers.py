"""Helpers for the Airflow tests: run an interval through dag.test(), read task states and XComs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson


def run_interval(dag: Any, start: datetime, period: timedelta = timedelta(days=1)) -> Any:
    """Run the DAG for the data interval ``[start, start + period)``; returns the DagRun.

    A data-interval timetable's run for an interval is due (and dated) at the interval's end.
    """
    end = start + period
    dr = dag.test(logical_date=end, run_after=end)
    assert (dr.data_interval_start, dr.data_interval_end) == (start, end)
    return dr


def day(ds: str) -> datetime:
    return datetime.fromisoformat(ds).replace(tzinfo=UTC)


def states(dr: Any) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` of a DagRun."""
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in dr.get_task_instances()}


def xcoms(dr: Any) -> list[tuple[str, int, Any]]:
    """Every XCom of the run: ``(task_id, map_index, value)``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id).all()
        return [(r.task_id, r.map_index, r.value) for r in rows]


def xcom(dr: Any, task_id: str) -> Any:
    """The return value of an unmapped task."""
    return dr.get_task_instance(task_id).xcom_pull(task_ids=task_id)


def write_lines(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name → content)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
