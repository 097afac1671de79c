"""The expression language: semantics, limits, injection attempts and validation-time errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluice import ConfigError
from sluice.testing import load_test_job
from sluice_transforms.expressions import ExpressionError, compile_expression

VENV_BIN = Path(sys.executable).parent


def ev(source: str, record: dict[str, Any] | None = None, **variables: Any) -> Any:
    return compile_expression(source)(record if record is not None else {}, variables)


def job_with(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"job_name": "expr", "source": {"type": "jsonl", "path": "in"},
            "destination": {"type": "jsonl", "path": "out"}, "transform": {"steps": list(steps)}}


@pytest.mark.parametrize(("source", "record", "expected"), [
    ("record.get('app') == 'frontend'", {"app": "frontend"}, True),
    ("record.get('app') == 'frontend'", {}, False),
    ("record.get('n', 3) + 1", {}, 4),
    ("record['a']['b'] * 2", {"a": {"b": 21}}, 42),
    ("record.a.b", {"a": {"b": "x"}}, "x"),
    ("record.a.b", {}, None),
    ("record.level in ('ERROR', 'WARN') and not record.muted", {"level": "WARN"}, True),
    ("record.n > 1 or record.m", {"n": 0, "m": "fallback"}, "fallback"),
    ("1 < record.n <= 5", {"n": 5}, True),
    ("1 < record.n <= 5", {"n": 6}, False),
    ("record.n % 3 == 1 and record.n // 3 == 2 and record.n / 2 == 3.5 and -record.n == -7", {"n": 7}, True),
    ("2 ** 10", {}, 1024),
    ("'fr' in record.app", {"app": "frontend"}, True),
    ("record.app not in {'a', 'b'}", {"app": "c"}, True),
    ("len(record.tags) if record.tags is not None else 0", {"tags": [1, 2]}, 2),
    ("lower(record.app) == 'web' and upper('x') == 'X'", {"app": "WEB"}, True),
    ("startswith(record.host, 'web-') and endswith(record.host, '07')", {"host": "web-07"}, True),
    ("startswith(record.host, 'web')", {}, False),
    ("record.app.lower().startswith('fr')", {"app": "FRONT"}, True),
    ("int('42') + float('0.5') + len(str(10))", {}, 44.5),
    ("coalesce(record.a, record.b, 'z')", {"b": "B"}, "B"),
    ("get(record, 'user.name', 'anon')", {"user": {"name": "ann"}}, "ann"),
    ("parse_date(record.ts) < parse_date('2024-01-02')", {"ts": "2024-01-01T23:59:59Z"}, True),
    ("parse_date(record.ts).year", {"ts": "2024-03-01"}, None),  # attributes of non-dicts are refused below
    ("record.missing == null and true and not false", {}, True),
    ("[record.a, {'k': record.b}][1]['k']", {"a": 1, "b": 2}, 2),
    ("record.s[1:3]", {"s": "abcd"}, "bc"),
    ("ds == '2024-01-01' and job_name == 'j'", {}, True),
])
def test_expression_semantics(source: str, record: dict[str, Any], expected: Any) -> None:
    if source.endswith(".year"):
        with pytest.raises(TypeError, match="cannot read field 'year' of a datetime"):
            ev(source, record)
        return
    assert ev(source, record, ds="2024-01-01", job_name="j") == expected


def test_a_missing_key_in_a_subscript_raises() -> None:
    with pytest.raises(KeyError):
        ev("record['a']['b']", {"a": {}})


def test_now_is_evaluated_per_call_not_folded() -> None:
    fn = compile_expression("now()")
    assert fn({}) <= fn({})


@pytest.mark.parametrize("source", [
    "__import__('os')",
    "__import__('os').system('true')",
    "record.__class__",
    "record.__class__.__mro__",
    "().__class__.__bases__",
    "record.get.__self__",
    "record._private",
    "record.app.__len__()",
    "open('/etc/passwd')",
    "eval('1')",
    "getattr(record, '__class__')",
    "lambda: 1",
    "[x for x in record]",
    "{k: 1 for k in record}",
    "(x for x in record)",
    "(y := 1)",
    "f'{record}'",
    "9**9**9",
    "2 ** 100000",
    "'a' * 10**9",
    "[1] * 10**9",
    "[[1] * 1000] * 10000",
    "str([[1] * 1000] * 1000 + [[1] * 1000] * 1000)",
    "[1] * 999999 + [2] * 999999",
    "'%999999999s' % 'x'",
    "record.app.format(1)",
    "b'bytes'",
    "os",
])
def test_injection_attempts_are_rejected_at_compile_time(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source)


def test_huge_values_built_from_record_fields_fail_for_that_record() -> None:
    with pytest.raises(ValueError, match="more than 1000000"):
        ev("record.s * record.n", {"s": "ab", "n": 10**8})
    with pytest.raises(ValueError, match="exponent"):
        ev("record.n ** record.n", {"n": 10**6})
    with pytest.raises(ValueError, match="longer than"):
        ev("record.s.replace('a', record.s)", {"s": "a" * 1001})
    with pytest.raises(ValueError, match="larger than"):
        ev("[record.l, record.l]", {"l": [[1] * 1000] * 600})


def test_methods_are_limited_to_a_whitelist_per_type() -> None:
    with pytest.raises(TypeError, match="no method 'get'"):
        ev("record.s.get('x')", {"s": "text"})


@pytest.mark.parametrize(("source", "column"), [
    ("record.get('app' == 'x'", 11),
    ("record.app === 'x'", 14),
    ("record.app == 'x' and", 22),
])
def test_syntax_errors_name_the_column(source: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.column == column
    assert f"(column {column})" in str(info.value)


def test_compiled_expressions_pickle_for_process_pools() -> None:
    expr = compile_expression("record.get('app') == 'frontend'")
    assert pickle.loads(pickle.dumps(expr))({"app": "frontend"}) is True


def test_a_bad_expression_fails_job_validation_with_step_index_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_test_job(job_with({"type": "filter", "where": "record.app == 'x'"},
                               {"type": "filter", "where": "record.get('app' == 'x'"}))
    message = str(info.value)
    assert "job 'expr': transform.steps[1] (type: filter): where:" in message
    assert "column 11" in message


def test_every_bad_expression_is_listed_with_its_step() -> None:
    with pytest.raises(ConfigError) as info:
        load_test_job(job_with({"type": "filter", "where": "record.__class__"},
                               {"type": "set", "fields": {"x": "__import__('os')"}}))
    assert len(info.value.problems) == 2
    assert "transform.steps[0] (type: filter): where:" in info.value.problems[0]
    assert "transform.steps[1] (type: set): fields:" in info.value.problems[1]
    assert "'__import__'" in info.value.problems[1]


def test_sluice_validate_exits_2_on_a_bad_expression(tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text(
        "job_name: bad_expr\n"
        "source: {type: jsonl, path: in}\n"
        "destination: {type: jsonl, path: out}\n"
        "transform:\n"
        "  steps:\n"
        "    - type: filter\n"
        "      where: \"record.get('app') = 'frontend'\"\n"
    )
    proc = subprocess.run([str(VENV_BIN / "sluice"), "validate", str(job)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "transform.steps[0] (type: filter)" in out
    assert "column" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("source", "expected"), [
    ("record.a or record.b or record.c", 2),
    ("record.a and record.b and record.c", 0),
    ("record.b and record.c and record.b", 2),
    ("record.x or record.a or record.a", 0),
])
def test_chains_of_three_or_more_short_circuit_like_python(source: str, expected: object) -> None:
    assert compile_expression(source)({"a": 0, "b": 2, "c": 3}) == expected
