"""The users' original example job validates as written, with every plugin installed."""

from __future__ import annotations

from pathlib import Path

from sluice.config import load_job
from sluice.templating import Interval

SEED = """
job_name: es_to_s3_daily
runtime:
  batch_size: 2000
  max_workers: 16
  max_in_flight_batches: 8
  api_rate_per_sec: 20
source:
  type: elasticsearch
  hosts: ["https://es.company:9243"]
  index: "logs-*"
  query: {"range": {"@timestamp": {"gte": "{{ ds }}", "lt": "{{ next_ds }}"}}}
  fields: ["@timestamp","message","app","host"]
transform:
  steps:
    - type: filter
      where: "record.get('app') == 'frontend'"
"""


def test_the_seed_job_validates_and_renders_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(SEED)
    job = load_job(path, interval=Interval.for_day("2024-05-01"))
    assert job.source.type == "elasticsearch" and job.steps[0].type == "filter"
    assert job.source.config.query == {"range": {"@timestamp": {"gte": "2024-05-01", "lt": "2024-05-02"}}}
    assert job.config.runtime.api_rate_per_sec == 20 and job.config.runtime.batch_size == 2000
    # no destination in the seed: records go to local gzip JSON Lines for the day
    assert job.destination.type == "jsonl" and job.destination.config.path == "out/es_to_s3_daily/date=2024-05-01"
