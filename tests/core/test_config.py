"""Job files: validation errors that point at the problem, templating, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakes
import pytest

from sluice import secrets
from sluice.config import load_job
from sluice.errors import ConfigError
from sluice.templating import Interval
from sluice.testing import run_job


@pytest.fixture(autouse=True)
def registry(sluice_registry: Any) -> Any:
    fakes.STORES.clear()
    return sluice_registry(fakes)


def base(**extra: Any) -> dict[str, Any]:
    return {"job_name": "cfg", "source": {"type": "counting"}, "destination": {"type": "memory"}, **extra}


def problems(config: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_job(config, **kwargs)
    return info.value.problems


def test_defaults() -> None:
    job = load_job(base())
    assert job.config.runtime.batch_size == 2000
    assert job.config.runtime.error_rate_threshold == 0.01
    assert job.dead_letter.type == "jsonl" and job.checkpoints.type == "local"


def test_unknown_top_level_and_runtime_keys_are_errors() -> None:
    found = problems(base(runtim={}, runtime={"batch_sise": 5}))
    assert "job 'cfg': runtime: unknown option 'batch_sise'; did you mean 'batch_size'?" in found
    assert "job 'cfg': unknown option 'runtim'; did you mean 'runtime'?" in found


def test_a_misspelled_key_suggests_the_option_at_every_level() -> None:
    found = problems(base(runtime={"retry": {"attemps": 3}}, schedul={},
                          source={"type": "counting", "recrods": 3, "zzz": 1}))
    assert found == [
        "job 'cfg': runtime.retry: unknown option 'attemps'; did you mean 'attempts'?",
        "job 'cfg': unknown option 'schedul'; did you mean 'schedule'?",
        "job 'cfg': source (type: counting): unknown option 'recrods'; did you mean 'records'?",
        "job 'cfg': source (type: counting): unknown option 'zzz'; known options: fail_after_batches, partitions, "
        "payload, records",
    ]


def test_top_level_errors_do_not_hide_the_component_errors() -> None:
    found = problems(base(runtime={"max_workers": "two"}, transform={"steps": [{"type": "drop_every", "every": "x"}]},
                          destination={"type": "memory", "delay_s": "slow"}))
    assert found == [
        "job 'cfg': runtime.max_workers: Input should be a valid integer, unable to parse string as an integer",
        "job 'cfg': transform.steps[0] (type: drop_every): every: Input should be a valid integer, unable to parse "
        "string as an integer",
        "job 'cfg': destination (type: memory): delay_s: Input should be a valid number, unable to parse string as a "
        "number",
    ]


def test_a_job_without_a_name_still_has_its_components_checked() -> None:
    assert problems({"source": {"type": "counting", "records": "many"}}) == [
        "job: job_name: Field required",
        "job: source (type: counting): records: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_every_component_error_is_listed_with_job_step_type_and_field_path() -> None:
    found = problems(base(
        source={"type": "counting", "records": "many"},
        transform={"steps": [{"type": "drop_every"}, {"type": "drop_every", "every": "ten", "evry": 1},
                             {"type": "dropevery"}]},
        destination={"type": "memroy"},
    ))
    assert "job 'cfg': source (type: counting): records: Input should be a valid integer, unable to parse string " \
           "as an integer" in found
    assert "job 'cfg': transform.steps[1] (type: drop_every): every: Input should be a valid integer, unable to " \
           "parse string as an integer" in found
    assert "job 'cfg': transform.steps[1] (type: drop_every): unknown option 'evry'; did you mean 'every'?" in found
    assert any(p.startswith("job 'cfg': transform.steps[2]: unknown transform type 'dropevery'. Did you mean "
                            "'drop_every'?") for p in found)
    assert any(p.startswith("job 'cfg': destination: unknown sink type 'memroy'. Did you mean 'memory'?")
               for p in found)
    assert len(found) == 5


def test_a_block_without_type_is_an_error() -> None:
    assert problems(base(source={"records": 1})) == [
        "job 'cfg': source: Value error, needs a 'type:' naming the plugin component"]


def test_bad_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job_name: x\nsource:\n  type: counting\n   records: 3\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}: line 4, column 11: mapping values are not allowed in this context")


def test_json_job_files_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{"job_name": "j", "source": {"type": "counting"}, "destination": {"type": "memory"}}')
    assert load_job(path).name == "j"


def test_templates_see_the_interval_run_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM", "search")
    job = load_job(base(destination={
        "type": "memory",
        "name": "{{ job_name }}|{{ ds }}|{{ next_ds }}|{{ ts }}|{{ data_interval_start }}|{{ data_interval_end }}"
                "|{{ run_id }}|{{ env.TEAM }}|{{ ds_nodash }}",
    }), interval=Interval.between("2024-03-01T06:00:00Z", "2024-03-01T07:00:00Z"))
    assert job.destination.config.name == (
        "cfg|2024-03-01|2024-03-01|2024-03-01T06:00:00+00:00|2024-03-01T06:00:00+00:00|2024-03-01T07:00:00+00:00"
        "|cfg-20240301T060000-20240301T070000|search|20240301")


def test_run_id_is_deterministic_for_job_and_interval_and_can_be_overridden() -> None:
    day = Interval.for_day("2024-01-05")
    assert load_job(base(), interval=day).run_id == load_job(base(), interval=day).run_id == \
        "cfg-20240105T000000-20240106T000000"
    assert load_job(base(), interval=day, run_id="manual-1").run_id == "manual-1"


def test_per_record_templates_are_left_for_the_component() -> None:
    summary = run_job(base(source={"type": "counting", "partitions": 1, "records": 3},
                           transform={"steps": [{"type": "stamp", "value": "{{ ds }}/{{ record.p }}-{{ record.n }}"}]}))
    assert summary.status == "succeeded", summary.error
    stamps = sorted(r["stamp"] for r in fakes.STORES["default"]["records"].values())
    assert stamps == ["2024-01-01/p0-0", "2024-01-01/p0-1", "2024-01-01/p0-2"]


def test_secrets_come_from_the_environment_and_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAMP_TOKEN", "s3cr3t-value")
    job = load_job(base(transform={"steps": [{"type": "stamp", "value": "x", "token": "{{ secret('STAMP_TOKEN') }}"}]}))
    token = job.steps[0].config.token
    assert token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(job.steps[0].config) and "s3cr3t-value" not in str(token)
    assert secrets.mask("auth failed with s3cr3t-value") == "auth failed with ***"


def test_a_missing_secret_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    [problem] = problems(base(transform={"steps": [{"type": "stamp", "value": "x",
                                                    "token": "{{ secret('NOPE_TOKEN') }}"}]}))
    assert problem.startswith("job 'cfg': transform.steps[0].token: secret 'NOPE_TOKEN' is not set")


def test_validation_errors_never_echo_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REC_SECRET", "hunter2-hunter2")
    found = problems(base(source={"type": "counting", "records": "{{ secret('REC_SECRET') }}"}))
    assert all("hunter2" not in p for p in found)


def test_the_template_sandbox_blocks_python_internals() -> None:
    found = problems(base(destination={"type": "memory", "name": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}))
    assert "destination.name: template" in found[0] and "unsafe" in found[0]


def test_undefined_template_variables_are_errors() -> None:
    [problem] = problems(base(destination={"type": "memory", "name": "{{ nope }}"}))
    assert problem == "job 'cfg': destination.name: template '{{ nope }}': 'nope' is undefined"


def test_an_undefined_name_suggests_the_close_ones() -> None:
    [problem] = problems(base(destination={"type": "memory", "name": "out/{{ dss }}"}))
    assert problem == "job 'cfg': destination.name: template 'out/{{ dss }}': 'dss' is undefined; did you mean 'ds'?"


def test_a_missing_environment_variable_is_named_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    found = problems(base(destination={"type": "memory", "name": "{{ env.NOPE }}"},
                          source={"type": "counting", "partitions": "{{ env['NOPE'] }}"}))
    assert found == [
        "job 'cfg': source.partitions: template \"{{ env['NOPE'] }}\": environment variable NOPE is not set",
        "job 'cfg': destination.name: template '{{ env.NOPE }}': environment variable NOPE is not set",
    ]


def test_environment_variables_can_have_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    monkeypatch.setenv("TEAM", "search")
    name = "{{ env.get('NOPE', 'dflt') }}-{{ env.NOPE | default('d2') }}-{{ env.TEAM }}"
    job = load_job(base(destination={"type": "memory", "name": name}))
    assert job.destination.config.name == "dflt-d2-search"


def test_the_seed_example_shape_validates_with_placeholder_secrets(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("""
job_name: es_to_s3_daily
runtime: {batch_size: 2000, max_workers: 16, max_in_flight_batches: 8, api_rate_per_sec: 20}
source:
  type: counting
  records: 10
transform:
  steps:
    - type: stamp
      value: "{{ record.get('app') }}"
      token: "{{ secret('NOT_SET_ANYWHERE') }}"
destination: {type: memory}
""")
    job = load_job(path, secret_mode="placeholder")
    assert job.config.runtime.api_rate_per_sec == 20 and job.config.runtime.max_workers == 16


# -- YAML: duplicate keys, bounds, the safe C loader ------------------------------------------------
def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job_name: dup\nsource: {type: counting}\ntransform:\n  steps: [{type: drop_every}]\n"
                    "destination: {type: memory}\ntransform:\n  steps: []\n")
    assert problems(path) == [f"{path}: line 6, column 1: duplicate key 'transform' (first on line 3); "
                              "the second would silently replace the first"]


def test_duplicate_keys_are_found_in_nested_blocks_and_json(tmp_path: Path) -> None:
    nested = tmp_path / "nested.yaml"
    nested.write_text("job_name: dup\nsource:\n  type: counting\n  records: 3\n  records: 4\n")
    assert problems(nested) == [f"{nested}: line 5, column 3: duplicate key 'records' (first on line 4); "
                                "the second would silently replace the first"]
    as_json = tmp_path / "job.json"
    as_json.write_text('{"job_name": "a",\n "job_name": "b", "source": {"type": "counting"}}')
    [found] = problems(as_json)
    assert "duplicate key 'job_name' (first on line 1)" in found


def test_keys_merged_from_an_alias_may_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job_name: merged\nsource: &src {type: counting, records: 3}\n"
                    "destination:\n  <<: {type: memory, name: a}\n  name: b\n")
    assert load_job(path).destination.config.name == "b"


def test_job_files_load_with_the_safe_c_loader_when_available() -> None:
    import yaml

    from sluice.config import JobLoader

    assert issubclass(JobLoader, yaml.SafeLoader if not yaml.__with_libyaml__ else yaml.CSafeLoader)
    assert issubclass(JobLoader, yaml.constructor.SafeConstructor)


YAML_ATTACKS = {
    "alias bomb": "\n".join(["job_name: bomb", "source:", "  type: counting",
                             "  x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
                             *(f"  x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10))]),
    "5 MB file": "job_name: big\nsource: {type: counting}\ndescription: |\n" + ("  " + "x" * 98 + "\n") * 50_000,
    "200,000 values": "job_name: many\nsource: {type: counting}\ndescription: [" + ",".join(["1"] * 200_000) + "]\n",
    "a recursive alias": "job_name: r\nsource: &a {type: counting, x: *a}\n",
}


@pytest.mark.parametrize(("case", "message"), [
    ("alias bomb", "line 8, column 7: this block holds more than 100000 values (each use of a YAML alias counted "
                   "in full)"),
    ("5 MB file", "the job file is larger than 1024 KiB"),
    ("200,000 values", "line 3, column 14: this block holds more than 100000 values"),
    ("a recursive alias", "line 2, column 9: an alias refers to itself"),
])
def test_yaml_that_would_expand_or_weigh_too_much_fails_fast_and_small(
        tmp_path_factory: pytest.TempPathFactory, case: str, message: str) -> None:
    from support.probe import probe

    folder = tmp_path_factory.mktemp("yaml")
    for name, text in YAML_ATTACKS.items():
        (folder / f"{name}.yaml").write_text(text)
    setup = """
        from sluice.config import read_job_file
        def run(path):
            return read_job_file(path)
    """
    result = probe(setup, {case: str(folder / f"{case}.yaml")})[case]
    assert result.outcome == "error" and result.message.startswith("ConfigError: "), result
    assert message in result.message, result.message
    assert result.seconds < 1.0 and result.peak_mb < 64, result
