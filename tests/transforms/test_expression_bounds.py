"""The expression language against hostile input: a clear error at validation within a second and
in bounded memory, and ``%`` formatting refused where the README says it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice import ConfigError
from sluice.testing import load_test_job
from support.probe import probe

EXPRESSION_ATTACKS = {
    "power of powers": "((10**1000)**1000)**1000",
    "round far left": "round(1, -10**9)",
    "replace multiplies": "('a'*1000).replace('a','a'*1000000)",
    "product of big integers": "(10**1000)**16 * (10**1000)**16",
    "join separator": "join(['x'] * 100000, 'y' * 100000)",
}


@pytest.fixture(scope="module")
def expression_attacks() -> dict[str, Any]:
    setup = """
        from sluice_transforms.expressions import compile_expression
        def run(text):
            return compile_expression(text)
    """
    return probe(setup, EXPRESSION_ATTACKS)


@pytest.mark.parametrize("case", sorted(EXPRESSION_ATTACKS))
def test_expressions_fail_at_validation_fast_and_small(case: str, expression_attacks: dict[str, Any]) -> None:
    result = expression_attacks[case]
    assert result.outcome == "error" and result.message.startswith("ExpressionError: "), result
    assert result.seconds < 1.0 and result.peak_mb < 64, result


def test_per_record_operands_are_bounded_before_anything_is_built() -> None:
    setup = """
        from sluice_transforms.expressions import compile_expression
        expressions = {"replace": "record.s.replace('a', record.t)", "round": "round(record.n, record.d)",
                       "power": "record.b ** record.e", "join": "join(record.l, record.t)"}
        record = {"s": "a" * 1000, "t": "b" * 1_000_000, "n": 1, "d": -10**9, "b": 10**1000, "e": 1000,
                  "l": ["x"] * 1000}
        def run(name):
            return compile_expression(expressions[name])(record)
    """
    results = probe(setup, {"replace": "replace", "round": "round", "power": "power", "join": "join"})
    for name, result in results.items():
        assert result.outcome == "error" and "LimitExceeded" in result.message, (name, result)
        assert result.seconds < 1.0 and result.peak_mb < 64, (name, result)


def test_sum_adds_numbers_only() -> None:
    from sluice_transforms.expressions import compile_expression

    assert compile_expression("sum(record.l)")({"l": [1, 2.5]}) == 3.5
    with pytest.raises(TypeError, match="sum adds numbers"):  # adding lists one by one takes quadratic time
        compile_expression("sum(record.l, [])")({"l": [[1]] * 1000})


def job(tmp_path: Path, where: str) -> dict[str, Any]:
    return {"job_name": "pct", "source": {"type": "jsonl", "path": str(tmp_path)},
            "transform": {"steps": [{"type": "filter", "where": where}]}}


@pytest.mark.parametrize("where", ["'%s' % record.app == 'x'", "('%' + 's') % record.app", "'%d' % 1 == '1'"])
def test_percent_formatting_of_text_is_refused_at_validation(tmp_path: Path, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_test_job(job(tmp_path, where))
    assert "transform.steps[0] (type: filter): where: Value error, '%' string formatting is not allowed in " \
           "expressions" in info.value.problems[0], info.value.problems


def test_percent_stays_the_modulo_of_numbers(tmp_path: Path) -> None:
    from sluice_transforms.expressions import compile_expression

    assert compile_expression("record.n % 3 == 1")({"n": 7}) is True
    load_test_job(job(tmp_path, "record.n % 2 == 0"))
    with pytest.raises(TypeError, match="string formatting is not supported"):
        compile_expression("record.fmt % 1")({"fmt": "%s"})  # text from a field: that record is dead-lettered
