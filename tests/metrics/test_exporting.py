"""Core's side of metrics: the common names and labels, the `metrics:` block, $SLUICE_METRICS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice import ConfigError
from sluice.exporting import count_samples, exporter_classes, merged_blocks, outcome_samples, plugin_metric
from sluice.metrics import RECENT, Timings
from sluice.registry import get_registry
from sluice.testing import load_test_job, run_job

from .helpers import job, scrape, value

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_samples_carry_the_common_names_and_labels() -> None:
    counts = {"read": 10, "written": 7, "created": 1, "retries": 3, "retries_by": {"destination": 2},
              "filtered": {"steps[0]:filter": 3}, "dead_lettered": {"sink": 1},
              "counters": {"es_bulk_items_retried": 4, "http_client.requests": 5}}
    outcome = outcome_samples("j", "succeeded", finished_at=99.0, partitions=(3, 2, 1))
    samples = {(s.name, s.labels): (s.value, s.kind) for s in count_samples("j", counts, 1.5) + outcome}
    retries = {("sluice_retries_total", (("job", "j"), ("component", c))): (n, "counter")
               for c, n in [("source", 0), ("transform", 0), ("destination", 2), ("dead_letter", 0),
                            ("checkpoints", 0), ("other", 1)]}  # every component, and what none claimed
    assert samples == {**retries,
        ("sluice_records_total", (("job", "j"), ("stage", "source"), ("outcome", "read"))): (10, "counter"),
        ("sluice_records_total", (("job", "j"), ("stage", "sink"), ("outcome", "written"))): (7, "counter"),
        ("sluice_records_total", (("job", "j"), ("stage", "transform"), ("outcome", "created"))): (1, "counter"),
        ("sluice_records_total", (("job", "j"), ("stage", "steps[0]:filter"), ("outcome", "filtered"))): (3, "counter"),
        ("sluice_records_total", (("job", "j"), ("stage", "sink"), ("outcome", "dead"))): (1, "counter"),
        ("sluice_es_bulk_items_retried_total", (("job", "j"),)): (4, "counter"),
        ("sluice_http_client_requests_total", (("job", "j"),)): (5, "counter"),
        ("sluice_run_duration_seconds", (("job", "j"),)): (1.5, "gauge"),
        ("sluice_run_status", (("job", "j"),)): (1, "gauge"),
        ("sluice_run_last_success_timestamp_seconds", (("job", "j"),)): (99.0, "gauge"),
        ("sluice_partitions", (("job", "j"), ("state", "total"))): (3, "gauge"),
        ("sluice_partitions", (("job", "j"), ("state", "done"))): (2, "gauge"),
        ("sluice_partitions", (("job", "j"), ("state", "failed"))): (1, "gauge"),
    }
    failed = outcome_samples("j", "failed", finished_at=99.0)
    assert [(s.name, s.value) for s in failed] == [("sluice_run_status", 0)]  # the last success stays as it was
    assert plugin_metric("records") == "sluice_plugin_records_total"  # never a common name


def test_a_metrics_block_is_checked_by_its_exporter() -> None:
    with pytest.raises(ConfigError) as bad:
        load_test_job(job("checked", metrics={"prometheus": {"pushgateway": "http://x:9091", "push_every_s": -1},
                                              "statsd": {"prot": 8125}}))
    assert "job 'checked': metrics: prometheus: push_every_s: Input should be greater than or equal to 0" \
        in str(bad.value)
    assert "statsd: unknown option 'prot'; did you mean 'port'?" in str(bad.value)

    with pytest.raises(ConfigError, match=r"unknown metrics exporter 'promethus'\. Did you mean 'prometheus'\? "
                                          r"Known exporters: prometheus, statsd"):
        load_test_job(job("checked", metrics={"promethus": {"pushgateway": "http://x:9091"}}))
    with pytest.raises(ConfigError, match="set pushgateway, port or textfile_dir"):
        load_test_job(job("checked", metrics={"prometheus": {}}))


def test_without_sluice_metrics_a_metrics_block_says_what_to_install(sluice_registry: object) -> None:
    from . import fakes

    sluice_registry(fakes)  # type: ignore[operator]
    assert exporter_classes(get_registry()) == {}
    with pytest.raises(ConfigError, match=re.escape("Known exporters: (none); install sluice-metrics")):
        load_test_job(job("bare", metrics={"statsd": {}}))


def test_the_environment_turns_exporters_on_for_every_job_and_the_job_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert merged_blocks({"prometheus": {"pushgateway": "a", "push_every_s": 5}}, {"prometheus": {"push_every_s": 1}},
                         {"statsd": None}) == {"prometheus": {"pushgateway": "a", "push_every_s": 1}}
    monkeypatch.setenv("SLUICE_METRICS", f'{{"prometheus": {{"textfile_dir": "{tmp_path / "everywhere"}"}}}}')
    run_job(job("from_env"))
    assert value(scrape((tmp_path / "everywhere/sluice_from_env.prom").as_uri()), "sluice_records_total",
                 job="from_env", stage="source", outcome="read") == 200

    run_job(job("own_dir", metrics={"prometheus": {"textfile_dir": str(tmp_path / "own")}}))
    assert (tmp_path / "own/sluice_own_dir.prom").exists()
    assert not (tmp_path / "everywhere/sluice_own_dir.prom").exists()

    run_job(job("opted_out", metrics={"prometheus": None}))
    assert not (tmp_path / "everywhere/sluice_opted_out.prom").exists()


def test_a_bad_environment_setting_is_logged_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    monkeypatch.setenv("SLUICE_METRICS", "[not, a, mapping]")
    with capture_logs() as logs:
        assert run_job(job("env_typo")).status == "succeeded"
    assert any(e["event"] == "metrics: ignoring $SLUICE_METRICS" for e in logs), logs


def test_every_exporter_option_is_in_the_readme_and_described() -> None:
    for name, klass in exporter_classes(get_registry()).items():
        assert f"`{name}`" in README
        for field_name, field in klass.Config.model_fields.items():
            assert f"`{field_name}`" in README, f"exporter {name}: option {field_name!r} is not in README.md"
            assert field.description, f"exporter {name}: option {field_name!r} has no description"


def test_the_readme_names_every_common_metric() -> None:
    from sluice import exporting

    for name in (exporting.RECORDS, exporting.RETRIES, exporting.BATCH_SECONDS, exporting.DURATION,
                 exporting.LAST_SUCCESS, exporting.STATUS, exporting.PARTITIONS):
        assert f"`{name}" in README, name


def test_batch_times_are_a_histogram_sample_with_buckets_and_the_latest_observations() -> None:
    timings = Timings()
    for seconds in (0.0004, 0.003, 0.003, 0.2, 75.0):
        timings.observe(seconds)
    samples = count_samples("j", {"batch_seconds": {"sink": timings.snapshot()}}, 1.0)
    [sample] = [s for s in samples if s.name == "sluice_batch_seconds"]
    assert (sample.name, sample.labels, sample.kind) == ("sluice_batch_seconds", (("job", "j"), ("stage", "sink")),
                                                         "histogram")
    assert sample.value == pytest.approx(75.2064) and sample.count == 5
    buckets = dict(sample.buckets)
    assert (buckets[0.001], buckets[0.0025], buckets[0.005], buckets[0.1], buckets[0.25], buckets[60.0]) == \
        (1, 1, 3, 3, 4, 4)
    assert list(buckets)[-1] == float("inf") and buckets[float("inf")] == 5
    assert sample.observations == (0.0004, 0.003, 0.003, 0.2, 75.0)


def test_a_histogram_keeps_only_the_latest_observations_and_counts_them_all() -> None:
    timings = Timings()
    for i in range(RECENT + 10):
        timings.observe(i / 1e6)
    snapshot = timings.snapshot()
    assert snapshot.count == RECENT + 10 and len(snapshot.recent) == RECENT
    assert snapshot.recent[0] == 10 / 1e6 and snapshot.recent[-1] == (RECENT + 9) / 1e6  # oldest first
    merged = snapshot.merged(Timings().snapshot())
    assert merged == snapshot and merged.to_dict()["buckets"]["+Inf"] == RECENT + 10
