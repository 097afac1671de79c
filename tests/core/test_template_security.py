"""Job templates as an attacker would write them: they cannot read the environment as a whole or
its credentials, they fail fast and small whatever they compute, and whatever they raise is a
config error naming the field and the template."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import fakes
import pytest

from sluice.config import load_job
from sluice.errors import ConfigError
from sluice.templating import Environ, Interval, Renderer, template_vars
from support.probe import probe

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def registry(sluice_registry: Any) -> Any:
    fakes.STORES.clear()
    return sluice_registry(fakes)


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2-supersecret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("TEAM", "search")
    monkeypatch.delenv("SLUICE_ENV_ALLOW", raising=False)


def job(name: str, **steps: Any) -> dict[str, Any]:
    return {"job_name": "sec", "source": {"type": "counting"}, "destination": {"type": "memory", "name": name},
            **steps}


def problem(name: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_job(job(name))
    [found] = info.value.problems
    return found


def renderer() -> Renderer:
    return Renderer(template_vars("sec", Interval.for_day("2024-01-01"), "r"), lambda name: "S")


# -- 1. the environment ---------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["{{ env }}", "{{ env|list }}", "{{ env|join(',') }}",
                                      "{% for k in env %}{{ k }}{% endfor %}", "{{ '{}'.format(env) }}",
                                      "{{ env|string }}"])
def test_the_environment_cannot_be_rendered_or_listed_as_a_whole(template: str) -> None:
    found = problem(template)
    assert "env cannot be rendered or listed as a whole" in found, found
    assert "hunter2" not in found and "aws-secret" not in found


@pytest.mark.parametrize("template", ["{{ env.MY_DB_PASSWORD }}", "{{ env['AWS_SECRET_ACCESS_KEY'] }}",
                                      "{{ env.get('MY_DB_PASSWORD', 'x') }}", "{{ 'MY_DB_PASSWORD' in env }}",
                                      "/proc/{{ env.MY_DB_PASSWORD }}/x"])
def test_credential_variables_are_refused_through_env_with_a_pointer_to_secret(template: str) -> None:
    found = problem(template)
    assert "looks like a credential" in found and "secret(" in found, found
    assert "hunter2" not in found and "aws-secret" not in found


def test_a_credential_is_read_through_secret_and_masked() -> None:
    from sluice import secrets

    spec = load_job(job("{{ secret('MY_DB_PASSWORD') }}")).destination
    assert spec.config.name == "hunter2-supersecret"
    assert secrets.mask("/proc/hunter2-supersecret/x") == "/proc/***/x"


def test_plain_variables_and_defaults_still_read() -> None:
    name = "{{ env.TEAM }}-{{ env.get('NOPE_X', 'd') }}-{{ env.NOPE_X | default('e') }}-{{ 'TEAM' in env }}"
    assert load_job(job(name)).destination.config.name == "search-d-e-True"


def test_sluice_env_allow_narrows_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_ENV_ALLOW", "TE*, REGION")
    monkeypatch.setenv("HOME_DIR_X", "/home/x")
    assert load_job(job("{{ env.TEAM }}")).destination.config.name == "search"
    found = problem("{{ env.HOME_DIR_X }}")
    assert "HOME_DIR_X is not readable by templates: SLUICE_ENV_ALLOW allows only TE*, REGION" in found
    monkeypatch.setenv("SLUICE_ENV_ALLOW", "MY_DB_PASSWORD")  # narrows: never widens to credentials
    assert "looks like a credential" in problem("{{ env.MY_DB_PASSWORD }}")


def test_the_environment_sent_to_worker_processes_holds_no_credentials() -> None:
    env = template_vars("sec", Interval.for_day("2024-01-01"), "r")["env"]
    data = pickle.dumps(env)
    assert b"hunter2" not in data and b"aws-secret" not in data
    assert pickle.loads(data)["TEAM"] == "search" and isinstance(pickle.loads(data), Environ)


def test_per_record_templates_cannot_read_credentials_either() -> None:
    render = renderer().compile("{{ record.n }}-{{ env.MY_DB_PASSWORD }}", "set.fields.x")
    with pytest.raises(ConfigError, match="looks like a credential"):
        render(record={"n": 1})


# -- 3. bounds: a clear error within a second, in bounded memory ------------------------------------
TEMPLATE_ATTACKS = {
    "huge power": "{{ 10**(10**10) }}",
    "power of powers": "{{ ((10**1000)**1000)**1000 }}",
    "nested ranges": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "repetition": "{{ 'a' * 10**9 }}",
    "list repetition": "{{ [1] * 10**9 }}",
    "printf width": "{{ '%999999999s' % 1 }}",
    "format filter width": "{{ '%999999999s'|format(1) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "replace": "{{ ('a' * 1000).replace('a', 'a' * 1000000) }}",
    "padding method": "{{ 'a'.center(10**9) }}",
    "indent filter": "{{ 'x'|indent(10**9) }}",
    "doubling": "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "values kept in a list": "{{ range(100000)|map('string')|map('center', 999999)|list|length }}",
    "output of a loop": "{% for i in range(99999) %}" + "x" * 500 + "{% endfor %}",
    "exponential macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) ~ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "round": "{{ 1|round(-10**9) }}",
    "lipsum": "{{ lipsum(10**9) }}",
}


@pytest.fixture(scope="module")
def template_attacks() -> dict[str, Any]:
    setup = f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import fakes
        from sluice.config import load_job
        from sluice.registry import Registry
        registry = Registry.from_plugins(fakes)
        def run(text):
            load_job({{"job_name": "b", "source": {{"type": "counting"}},
                      "destination": {{"type": "memory", "name": text}}}}, registry=registry)
    """
    return probe(setup, TEMPLATE_ATTACKS)


@pytest.mark.parametrize("case", sorted(TEMPLATE_ATTACKS))
def test_templates_fail_fast_and_small(case: str, template_attacks: dict[str, Any]) -> None:
    result = template_attacks[case]
    assert result.outcome == "error", result
    assert result.message.startswith("ConfigError: job 'b': destination.name: template"), result.message
    assert result.seconds < 1.0, result
    assert result.peak_mb < 64, result


def test_a_per_record_template_is_bounded_and_fails_only_that_record() -> None:
    setup = """
        from sluice.templating import Interval, Renderer, template_vars
        render = Renderer(template_vars("j", Interval.for_day("2024-01-01"), "r"), str).compile(
            "{{ (record.s * record.n)|length }}", "set.fields.x")
        def run(n):
            return render(record={"s": "ab", "n": int(n)})
    """
    results = probe(setup, {"small": "3", "huge": str(10**9)})
    assert results["small"].outcome == "ok" and results["small"].message == "'6'"
    huge = results["huge"]
    assert huge.outcome == "error" and "repetition would build more than 1000000 items" in huge.message, huge
    assert huge.seconds < 1.0 and huge.peak_mb < 64, huge


def test_ordinary_templates_still_work() -> None:
    r = renderer()
    assert r.render("{{ '%s-%02d' % ('a', 3) }}|{{ '{:>4}'.format('x') }}|{{ [1, 2]|join('-') }}") == "a-03|   x|1-2"
    assert r.render("{% for x in 'abc' %}{{ loop.index }}{{ x|upper }}{% endfor %}") == "1A2B3C"
    assert r.render("{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m(ds) }}") == "<2024-01-01>"
    assert r.render("{{ data_interval_start.strftime('%Y/%m') }}/{{ 'a,b'.split(',')|length }}") == "2024/01/2"


# -- 4. whatever a template raises is a config error naming the field and the template ---------------
@pytest.mark.parametrize(("template", "message"), [
    ("in/{{ 1/0 }}", "template 'in/{{ 1/0 }}': ZeroDivisionError: division by zero"),
    ("{{ range(10**9) }}", "OverflowError: Range too big"),
    ("{% include 'other.yaml' %}", "{% include %} is not available in job templates"),
    ("{% import 'm' as m %}", "{% import %} is not available in job templates"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ("{{ '{a}'.format_map({}) }}", "template \"{{ '{a}'.format_map({}) }}\": KeyError: 'a'"),
    ("{% for x in [1] recursive %}{% endfor %}", "recursive loops are not available"),
    ("{{ 'a'.encode() }}", "str.encode is not available in job templates"),
])
def test_an_exception_inside_a_template_is_a_config_error(template: str, message: str) -> None:
    found = problem(template)
    assert found.startswith("job 'sec': destination.name: "), found
    assert message in found, found


def test_running_out_of_memory_inside_a_template_is_a_config_error_too() -> None:
    def exhausted(name: str) -> str:
        raise MemoryError

    r = Renderer(template_vars("sec", Interval.for_day("2024-01-01"), "r"), exhausted)
    with pytest.raises(ConfigError) as info:
        r.render({"path": "in/{{ secret('BIG') }}"}, "source")
    assert str(info.value) == "source.path: template \"in/{{ secret('BIG') }}\": ran out of memory"


def test_validate_reports_a_template_exception_with_the_file_and_goes_on(tmp_path: Path) -> None:
    from sluice import cli

    (tmp_path / "a.yaml").write_text('job_name: a\nsource: {type: jsonl, path: "in/{{ 1/0 }}"}\n')
    (tmp_path / "b.yaml").write_text('job_name: b\nsource: {type: jsonl, path: "in/{{ env }}"}\n')
    (tmp_path / "c.yaml").write_text('job_name: c\nsource: {type: jsonl, path: "in/{{ ds }}"}\n')
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cli, "_err", lambda text: errors.append(text))
        m.setattr(cli, "_out", lambda text: out.append(text))
        errors: list[str] = []
        out: list[str] = []
        code = cli.main(["validate", str(tmp_path)])
    assert code == 2
    assert errors[0] == (f"{tmp_path / 'a.yaml'}: job 'a': source.path: template 'in/{{{{ 1/0 }}}}': "
                         "ZeroDivisionError: division by zero")
    assert errors[1].startswith(f"{tmp_path / 'b.yaml'}: job 'b': source.path: env cannot be rendered")
    assert errors[2] == "2 of 3 job file(s) invalid"
    assert out == [f"ok  {tmp_path / 'c.yaml'}  (c: jsonl → jsonl)"]
