"""The ``sluice`` command: exit codes, clean errors, validate, plugins, schema, dry runs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).parent / "sluice")


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120)


def write_job(path: Path, source: str, dest: str = "out", extra: str = "") -> Path:
    path.write_text(f"""
job_name: cli_job
runtime: {{batch_size: 100}}
source: {{type: jsonl, path: "{source}"}}
destination: {{type: jsonl, path: "{dest}/date={{{{ ds }}}}"}}
dead_letter: {{type: jsonl, path: dead}}
{extra}
""")
    return path


def test_run_succeeds_with_exit_0_and_prints_a_reconciled_summary(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"))
    result = sluice("run", str(job), "--ds", "2024-02-03")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["reconciled"] is True
    assert (summary["read"], summary["written"], summary["dead_lettered"]) == (2002, 2000, {"source": 2})
    assert (tmp_path / "out/date=2024-02-03/_SUCCESS").exists()


def test_logs_are_json_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"), extra="checkpoints: {type: local}")
    sluice("run", str(job), "--ds", "2024-02-03")
    result = sluice("run", str(job), "--ds", "2024-02-03", "--resume", "--log-json")
    assert result.returncode == 0
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "resuming" and e["done"] == 2 for e in events)
    assert orjson.loads(result.stdout.splitlines()[-1])["read"] == 0  # both partitions were already done


def test_a_failed_job_exits_1_with_one_clear_line_and_no_secret(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "/nonexistent/{{ secret('CLI_TOKEN') }}")
    result = sluice("run", str(job), env={"CLI_TOKEN": "tok-9f8e7d6c"})
    assert result.returncode == 1
    assert "error: job 'cli_job' failed: file source: no such file or directory: /nonexistent/***" in result.stderr
    assert "tok-9f8e7d6c" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "x", extra="runtime2: {}\ntransform: {steps: [{type: nope}]}")
    result = sluice("run", str(job))
    assert result.returncode == 2
    assert "error: job 'cli_job': unknown option 'runtime2'; did you mean 'runtime'?" in result.stderr
    assert "error: job 'cli_job': transform.steps[0]: unknown transform type 'nope'." in result.stderr


def test_bad_yaml_exits_2_without_a_traceback(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("job_name: [unclosed\n")
    result = sluice("run", str(job))
    assert result.returncode == 2 and f"error: {job}: line" in result.stderr and "Traceback" not in result.stderr


def test_validate_lists_every_error_of_every_file_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    good = write_job(tmp_path / "jobs/good.yaml", "in")
    bad = tmp_path / "jobs/bad.yaml"
    bad.write_text("job_name: bad\nsource: {type: jsnl}\ndestination: {type: jsonl, path: o, compresion: gzip}\n")
    result = sluice("validate", str(tmp_path / "jobs"))
    assert result.returncode == 2
    assert f"ok  {good}" in result.stdout
    assert f"{bad}: job 'bad': source: unknown source type 'jsnl'. Did you mean 'jsonl'?" in result.stderr
    assert f"{bad}: job 'bad': destination (type: jsonl): unknown option 'compresion'; did you mean 'compression'?" \
        in result.stderr
    assert "1 of 2 job file(s) invalid" in result.stderr
    assert sluice("validate", str(good)).returncode == 0


def test_validate_lists_top_level_and_component_errors_together(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "in", extra="runtime: {max_workers: two}")
    job.write_text(job.read_text().replace("runtime: {batch_size: 100}\n", "").replace(
        'path: "out/', 'max_records_per_file: many, path: "out/'))
    result = sluice("validate", str(job))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{job}: job 'cli_job': runtime.max_workers: Input should be a valid integer, unable to parse string as an "
        "integer",
        f"{job}: job 'cli_job': destination (type: jsonl): max_records_per_file: Input should be a valid integer, "
        "unable to parse string as an integer",
        "1 of 1 job file(s) invalid",
    ]


def test_validate_names_the_file_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("job_name: x\nsource:\n  type: jsonl\n   path: 3\n")
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("source: {type: jsonl, path: in}\n")
    result = sluice("validate", str(broken), str(nameless))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{broken}: line 4, column 8: mapping values are not allowed in this context",
        f"{nameless}: job_name: Field required",
        "2 of 2 job file(s) invalid",
    ]


def test_validate_does_not_need_secrets(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "{{ secret('UNSET_IN_CI') }}")
    assert sluice("validate", str(job)).returncode == 0


def test_plugins_lists_installed_plugins_with_versions_and_types() -> None:
    result = sluice("plugins", "--json")
    assert result.returncode == 0, result.stdout
    plugins = {p["name"]: p for p in orjson.loads(result.stdout)["plugins"]}
    assert plugins["sluice"]["types"]["source"] == ["file"] and plugins["sluice"]["version"] == "0.1.0"
    assert plugins["sluice-example"]["types"] == {"transform": ["redact"]}


def test_plugins_lists_aliases_in_the_table_and_the_json() -> None:
    listed = orjson.loads(sluice("plugins", "--json").stdout)
    es = next(p for p in listed["plugins"] if p["name"] == "sluice-es")
    assert es["types"] == {"source": ["elasticsearch"], "sink": ["elasticsearch"]}
    assert es["aliases"] == {"source": {"elasticsearch": ["opensearch"]}, "sink": {"elasticsearch": ["opensearch"]}}
    table = sluice("plugins", env={"COLUMNS": "250"}).stdout
    assert "source: elasticsearch (alias: opensearch); sink: elasticsearch (alias: opensearch)" in table


def test_plugins_lists_formats_and_metrics_exporters_in_the_table_and_the_json() -> None:
    listed = {p["name"]: p for p in orjson.loads(sluice("plugins", "--json").stdout)["plugins"]}
    assert listed["sluice"]["types"]["format"] == ["jsonl"]
    assert listed["sluice-formats"]["types"] == {"format": ["parquet", "csv", "tsv"]}
    assert listed["sluice-metrics"]["types"] == {"metrics_exporter": ["prometheus", "statsd"]}
    table = sluice("plugins", env={"COLUMNS": "250"}).stdout
    assert "format: parquet, csv, tsv" in table and "metrics_exporter: prometheus, statsd" in table
    assert "checkpoint_store: local; format: jsonl" in table


def test_schema_describes_the_options_of_every_format_and_metrics_exporter(tmp_path: Path) -> None:
    import jsonschema

    schema = orjson.loads(sluice("schema").stdout)
    defs = schema["$defs"]
    assert {"format.jsonl", "format.parquet", "format.csv", "format.tsv"} <= set(defs)
    assert defs["format.parquet"]["properties"]["compression"]["description"]
    assert {"metrics_exporter.prometheus", "metrics_exporter.statsd"} <= set(defs)
    assert defs["metrics_exporter.statsd"]["properties"]["port"]["description"]

    def check(job: dict[str, object]) -> None:
        jsonschema.validate({"job_name": "x", "source": {"type": "file", "path": "in"}, **job}, schema)

    check({"destination": {"type": "s3", "uri": "s3://b/p", "format": {"type": "parquet", "compression": "snappy"}},
           "metrics": {"prometheus": {"pushgateway": "http://pg:9091"}, "statsd": None}})
    check({"destination": {"type": "file", "path": "out", "format": "csv"}})
    for bad in ({"type": "parquet", "compression": "lzo"}, {"type": "csv", "delimitr": ";"}, "xml"):
        with pytest.raises(jsonschema.ValidationError):
            check({"destination": {"type": "file", "path": "out", "format": bad}})
    for metrics in ({"promethus": {"pushgateway": "http://pg:9091"}}, {"statsd": {"prot": 8125}}):
        with pytest.raises(jsonschema.ValidationError):
            check({"destination": {"type": "file", "path": "out"}, "metrics": metrics})


@pytest.mark.parametrize("command", [["schema"], ["plugins", "--json"], ["plugins"], ["validate", "JOB"]])
def test_output_into_a_closed_pipe_ends_quietly_like_a_unix_tool(command: list[str], tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "in")
    args = [str(job) if a == "JOB" else a for a in command]
    proc = subprocess.Popen([SLUICE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before sluice writes (`sluice schema | head -0`)
    _, stderr = proc.communicate(timeout=120)
    assert stderr == ""
    assert proc.returncode == 141  # 128 + SIGPIPE, as the shell reports for `seq 1000000 | head`


def test_a_failed_run_reports_its_error_once(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "/nonexistent")
    result = sluice("run", str(job))
    assert result.returncode == 1
    assert result.stderr.count("no such file or directory: /nonexistent") == 1
    assert result.stderr.splitlines()[-1] == "error: job 'cli_job' failed: file source: no such file or directory: " \
                                             "/nonexistent"
    assert orjson.loads(result.stdout)["error"] == "file source: no such file or directory: /nonexistent"


def test_a_failed_partition_is_reported_once_and_listed_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the output directory should be")
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"), dest="blocker")
    result = sluice("run", str(job), "--ds", "2024-02-03")
    assert result.returncode == 1
    logs, other = [], []
    for line in result.stderr.splitlines():
        (logs if line.startswith("{") else other).append(line)
    assert [line.split(":")[0] for line in other] == ["error"]
    assert not [e for e in map(orjson.loads, logs) if e["level"] == "error"]
    summary = orjson.loads(result.stdout)
    assert summary["failures"] and all(f["error"] and "checkpoint" in f for f in summary["failures"])


def test_a_successful_run_logs_json_lines_on_stderr_and_the_summary_on_stdout(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"))
    result = sluice("run", str(job), "--ds", "2024-02-03")
    assert result.returncode == 0
    events = [orjson.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [e["event"] for e in events].count("partition done") == 2 and {e["level"] for e in events} == {"info"}
    assert orjson.loads(result.stdout)["status"] == "succeeded"


def test_every_argument_of_every_command_is_documented() -> None:
    from sluice.cli import _parser

    parser = _parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    undocumented = [
        f"{name} {action.dest}"
        for name, sub in [("sluice", parser), *commands.choices.items()]
        for action in sub._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert undocumented == []
    help_text = sluice("run", "--help").stdout
    assert "JOB                  the job file (YAML or JSON)" in help_text
    assert "--summary-json PATH  also write the run summary to this file" in help_text


def test_schema_describes_every_component_and_validates_real_job_files(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    result = sluice("schema", "-o", str(tmp_path / "schema.json"))
    assert result.returncode == 0
    schema = orjson.loads((tmp_path / "schema.json").read_bytes())
    assert "source.file" in schema["$defs"] and "transform.redact" in schema["$defs"]
    jsonschema.validate(yaml.safe_load((ROOT / "examples/jobs/local_jsonl.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"job_name": "x", "source": {"type": "jsonl", "path": "a", "nope": 1},
                             "destination": {"type": "jsonl", "path": "b"}}, schema)


def test_dry_run_reads_one_batch_and_writes_nothing(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"),
                    extra="transform: {steps: [{type: redact, fields: [host]}]}")
    result = sluice("run", str(job), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert out["partitions"] == 2 and out["read"] == 100 and out["sample"][0]["host"] == "***"
    assert not (tmp_path / "out").exists()


def test_interval_flags() -> None:
    result = sluice("run", "nofile.yaml", "--start", "2024-01-01T00:00:00Z")
    assert result.returncode == 2 and "--start and --end go together" in result.stderr
    result = sluice("run", "nofile.yaml", "--ds", "yesterday")
    assert result.returncode == 2 and "--ds 'yesterday' is not a date" in result.stderr


def test_validate_reports_every_file_of_a_directory_and_exits_2(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    write_job(jobs / "a_divides.yaml", "in/{{ 1/0 }}")
    write_job(jobs / "b_range.yaml", "in/{{ range(10**9) }}")
    write_job(jobs / "c_ok.yaml", "in/{{ ds }}")
    write_job(jobs / "d_python.yaml", "in", extra="transform: {steps: [{type: python, callable: 'nosuchmod:f'}]}")
    result = sluice("validate", str(jobs))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"{jobs / 'a_divides.yaml'}: job 'cli_job': source.path: template 'in/{{{{ 1/0 }}}}': ZeroDivisionError: "
        "division by zero",
        f"{jobs / 'b_range.yaml'}: job 'cli_job': source.path: template 'in/{{{{ range(10**9) }}}}': OverflowError: "
        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
        f"{jobs / 'd_python.yaml'}: job 'cli_job': transform.steps[0] (type: python): callable: Value error, cannot "
        "import 'nosuchmod:f': ModuleNotFoundError: No module named 'nosuchmod'",
        "3 of 4 job file(s) invalid",
    ]
    assert result.stdout == f"ok  {jobs / 'c_ok.yaml'}  (cli_job: jsonl → jsonl)\n"


def test_validate_goes_on_past_a_plugins_bug(tmp_path: Path, sluice_registry: object) -> None:
    from pydantic import model_validator

    from sluice import ComponentConfig, RecordTransform, cli, hookimpl

    class BuggyConfig(ComponentConfig):
        @model_validator(mode="after")
        def _bug(self) -> BuggyConfig:
            raise RuntimeError("the plugin's own bug")

    class Buggy(RecordTransform):
        """A transform whose config validation has a bug."""

        type = "buggy"
        Config = BuggyConfig

    class Plugin:
        @hookimpl
        def sluice_transforms(self) -> list[type]:
            return [Buggy]

    sluice_registry(Plugin())  # type: ignore[operator]
    write_job(tmp_path / "a.yaml", "in", extra="transform: {steps: [{type: buggy}]}")
    write_job(tmp_path / "b.yaml", "in")
    errors: list[str] = []
    out: list[str] = []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cli, "_err", errors.append)
        m.setattr(cli, "_out", out.append)
        assert cli.main(["validate", str(tmp_path)]) == 2
    assert errors == [f"{tmp_path / 'a.yaml'}: internal error while validating: RuntimeError: the plugin's own bug "
                      "(run with --debug for the traceback)", "1 of 2 job file(s) invalid"]
    assert out == [f"ok  {tmp_path / 'b.yaml'}  (cli_job: jsonl → jsonl)"]
