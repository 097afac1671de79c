"""Record-level transforms on normal and bad input: filter, rename, select, drop, cast, set,
flatten, unflatten and python."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import Batch, ConfigError
from sluice.testing import build, make_context


def run(block: dict[str, Any], records: list[dict[str, Any]], ctx: Any = None) -> Batch:
    step = build("transform", block, ctx)
    try:
        return step.apply(Batch([dict(r) for r in records], "p", 0))
    finally:
        step.close()


EVENTS = [
    {"app": "frontend", "host": "web-1", "level": "INFO", "latency_ms": 120},
    {"app": "checkout", "host": "web-2", "level": "ERROR", "latency_ms": 900},
    {"app": "frontend", "host": "web-3", "level": "DEBUG", "latency_ms": 15},
]


# -- filter -------------------------------------------------------------------------------------
def test_filter_keeps_matching_records() -> None:
    out = run({"type": "filter", "where": "record.get('app') == 'frontend'"}, EVENTS)
    assert [r["host"] for r in out.records] == ["web-1", "web-3"]
    assert out.dead_letters == []


def test_filter_dead_letters_records_the_expression_fails_on() -> None:
    records = [{"n": {"v": 1}}, {"n": {}}, {"n": {"v": 5}}]
    out = run({"type": "filter", "where": "record['n']['v'] > 2"}, records)
    assert out.records == [{"n": {"v": 5}}]
    assert len(out.dead_letters) == 1
    dead = out.dead_letters[0]
    assert dead.record == {"n": {}} and dead.error_type == "KeyError"
    assert "record['n']['v'] > 2" in dead.reason


@pytest.mark.parametrize(("policy", "kept"), [("drop", [5]), ("keep", [{}, 5])])
def test_filter_on_error_policies(policy: str, kept: list[Any]) -> None:
    out = run({"type": "filter", "where": "record['v'] > 2", "on_error": policy}, [{}, {"v": 5}, {"v": 1}])
    assert [r.get("v", {}) for r in out.records] == kept
    assert out.dead_letters == []


def test_filter_sees_job_variables() -> None:
    out = run({"type": "filter", "where": "record.day == ds"}, [{"day": "2024-01-01"}, {"day": "2023-12-31"}])
    assert out.records == [{"day": "2024-01-01"}]


# -- rename -------------------------------------------------------------------------------------
def test_rename_top_level_and_nested_paths() -> None:
    out = run({"type": "rename", "fields": {"host": "source.host", "user.name": "user_name", "absent": "x"}},
              [{"host": "h", "user": {"name": "ann", "id": 1}}])
    assert out.records == [{"source": {"host": "h"}, "user": {"id": 1}, "user_name": "ann"}]


def test_rename_dead_letters_when_the_target_path_is_blocked() -> None:
    out = run({"type": "rename", "fields": {"a": "b.c"}}, [{"a": 1, "b": "text"}, {"a": 2}])
    assert out.records == [{"b": {"c": 2}}]
    assert "'b' holds a str" in out.dead_letters[0].reason


def test_rename_rejects_empty_path_segments_at_validation() -> None:
    with pytest.raises(ConfigError, match="empty segment"):
        build("transform", {"type": "rename", "fields": {"a..b": "c"}})


# -- select / drop ------------------------------------------------------------------------------
def test_select_plain_wildcard_and_nested_fields() -> None:
    record = {"app": "a", "host": "h", "meta_x": 1, "meta_y": 2, "user": {"name": "n", "pw": "s"}, "other": 0}
    out = run({"type": "select", "fields": ["app", "meta_*", "user.name", "missing"]}, [record])
    assert out.records == [{"app": "a", "meta_x": 1, "meta_y": 2, "user": {"name": "n"}}]
    plain = run({"type": "select", "fields": ["host", "app"]}, [record, {"zzz": 1}])
    assert plain.records == [{"host": "h", "app": "a"}, {}]


def test_drop_plain_wildcard_and_nested_fields() -> None:
    record = {"app": "a", "tmp_1": 1, "tmp_2": 2, "user": {"name": "n", "pw": "s"}, "keep": True}
    out = run({"type": "drop", "fields": ["tmp_*", "user.pw", "not_there", "user.x.y"]}, [record])
    assert out.records == [{"app": "a", "user": {"name": "n"}, "keep": True}]


def test_select_needs_fields() -> None:
    with pytest.raises(ConfigError, match="fields"):
        build("transform", {"type": "select", "fields": []})


# -- cast ---------------------------------------------------------------------------------------
def test_cast_converts_each_type() -> None:
    record = {"n": "42", "f": "1.5", "s": 7, "obj": {"a": 1}, "b": "Yes", "b2": 0, "ts": 1704067200,
              "ts2": "2024-01-01T10:00:00+02:00", "d": "2024-01-01T23:30:00Z", "nested": {"n": "3.0"}, "nul": None}
    out = run({"type": "cast", "fields": {"n": "int", "f": "float", "s": "str", "obj": "str", "b": "bool",
                                          "b2": "bool", "ts": "datetime", "ts2": "datetime", "d": "date",
                                          "nested.n": "int", "nul": "int", "missing": "int"}}, [record])
    assert out.records == [{"n": 42, "f": 1.5, "s": "7", "obj": '{"a":1}', "b": True, "b2": False,
                            "ts": "2024-01-01T00:00:00Z", "ts2": "2024-01-01T08:00:00Z", "d": "2024-01-01",
                            "nested": {"n": 3}, "nul": None}]


@pytest.mark.parametrize(("policy", "expected"), [("null", None), ("keep", "12abc")])
def test_cast_failure_policies(policy: str, expected: Any) -> None:
    out = run({"type": "cast", "fields": {"n": "int"}, "on_error": policy}, [{"n": "12abc"}])
    assert out.records == [{"n": expected}]
    assert out.dead_letters == []


@pytest.mark.parametrize(("kind", "value"), [("int", "12abc"), ("int", 1.5), ("bool", "maybe"),
                                             ("datetime", "yesterday"), ("float", [1]), ("date", True)])
def test_cast_dead_letters_values_that_do_not_convert(kind: str, value: Any) -> None:
    out = run({"type": "cast", "fields": {"v": kind}}, [{"v": value}, {"ok": 1}])
    assert out.records == [{"ok": 1}]
    dead = out.dead_letters[0]
    assert dead.error_type == "CastError" and f"to {kind}" in dead.reason and "'v'" in dead.reason


@pytest.mark.parametrize(("kind", "value", "why"), [
    ("int", "n/a", ""), ("float", "n/a", ""), ("int", [1], ""), ("datetime", "yesterday", ""),
    ("int", "1.5", " (it has a fractional part)"),
    ("bool", "maybe", " (expected true/false, yes/no, on/off, t/f, y/n or 1/0)"),
])
def test_cast_dead_letters_say_what_did_not_convert_without_pythons_inner_error(kind: str, value: Any,
                                                                                why: str) -> None:
    record = {"id": 7, "nested": {"v": value}}
    out = run({"type": "cast", "fields": {"nested.v": kind}}, [record])
    [dead] = out.dead_letters
    assert dead.reason == f"cast: field 'nested.v': cannot convert {value!r} to {kind}{why}"
    assert dead.record == record and dead.error_type == "CastError"


def test_cast_rejects_unknown_types_at_validation() -> None:
    with pytest.raises(ConfigError, match=r"fields\.n"):
        build("transform", {"type": "cast", "fields": {"n": "decimal"}})


# -- set ----------------------------------------------------------------------------------------
def test_set_expressions_templates_and_constants_in_order() -> None:
    out = run({"type": "set", "fields": {
        "latency_s": "record.latency_ms / 1000",
        "id": "{{ record.host }}-{{ record.latency_ms }}",
        "day": "{{ ds }}",
        "env": "'prod'",
        "tags": ["a"],
        "meta.slow": "record.latency_s > 0.5",
        "at": "parse_date('2024-01-01T00:00:00Z')",
    }}, EVENTS[:2])
    first, second = out.records
    assert first["latency_s"] == 0.12 and second["latency_s"] == 0.9
    assert first["id"] == "web-1-120" and first["day"] == "2024-01-01" and first["env"] == "prod"
    assert second["meta"] == {"slow": True} and first["at"] == "2024-01-01T00:00:00Z"
    first["tags"].append("b")
    assert second["tags"] == ["a"], "constants are copied per record"


def test_set_keeps_records_json_like() -> None:
    out = run({"type": "set", "fields": {"s": "{'b', 'a'}", "k": "record.o.keys()", "i": "record.o.items()"}},
              [{"o": {"x": 1}}])
    assert out.records[0] == {"o": {"x": 1}, "s": ["a", "b"], "k": ["x"], "i": [["x", 1]]}


def test_set_without_overwrite_only_fills_missing_fields() -> None:
    out = run({"type": "set", "fields": {"level": "'INFO'"}, "overwrite": False}, [{"level": "ERROR"}, {}])
    assert [r["level"] for r in out.records] == ["ERROR", "INFO"]


def test_set_dead_letters_records_a_field_fails_on() -> None:
    out = run({"type": "set", "fields": {"x": "record.n + 1"}}, [{"n": 1}, {"n": "a"}])
    assert out.records == [{"n": 1, "x": 2}]
    assert out.dead_letters[0].error_type == "TypeError"


def test_set_template_naming_a_missing_field_dead_letters_the_record() -> None:
    out = run({"type": "set", "fields": {"id": "{{ record.host }}-{{ record.n }}"}}, [{"host": "h", "n": 1}, {"n": 2}])
    assert out.records == [{"host": "h", "n": 1, "id": "h-1"}]
    assert out.dead_letters[0].record == {"n": 2} and "host" in out.dead_letters[0].reason


def test_set_template_can_use_secrets_and_job_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.templating import Renderer

    ctx = make_context()
    ctx.renderer = Renderer(ctx.variables, lambda name: {"SALT": "pepper"}[name])
    out = run({"type": "set", "fields": {"k": "{{ secret('SALT') }}:{{ record.id }}:{{ run_id }}"}}, [{"id": 1}], ctx)
    assert out.records[0]["k"] == f"pepper:1:{ctx.run_id}"


# -- flatten / unflatten ------------------------------------------------------------------------
def test_flatten_and_unflatten_round_trip() -> None:
    record = {"a": {"b": {"c": 1}, "d": [1, {"x": 2}]}, "e": 3, "f": {}}
    flat = run({"type": "flatten"}, [record]).records[0]
    assert flat == {"a.b.c": 1, "a.d": [1, {"x": 2}], "e": 3, "f": {}}
    assert run({"type": "unflatten"}, [flat]).records[0] == record


def test_flatten_separator_and_depth() -> None:
    out = run({"type": "flatten", "separator": "_", "max_depth": 1}, [{"a": {"b": {"c": 1}}}])
    assert out.records == [{"a_b": {"c": 1}}]


def test_unflatten_dead_letters_conflicting_keys() -> None:
    out = run({"type": "unflatten", "separator": "/"}, [{"a": 1, "a/b": 2}, {"x/y": 1}])
    assert out.records == [{"x": {"y": 1}}]
    assert out.dead_letters[0].error_type == "UnflattenConflict"


# -- python -------------------------------------------------------------------------------------
def test_python_record_mode_filters_rejects_and_transforms() -> None:
    records = [{"app": "a", "level": "INFO"}, {"app": "b", "level": "DEBUG"}, {"level": "INFO"}]
    out = run({"type": "python", "callable": "transforms.userfuncs:tag", "options": {"label": "x"}}, records)
    assert out.records == [{"app": "a", "level": "INFO", "label": "x"}]
    assert [d.reason for d in out.dead_letters] == ["no app"]


def test_python_batch_mode_may_create_records() -> None:
    out = run({"type": "python", "callable": "transforms.userfuncs:explode", "mode": "batch"}, [{"a": 1}])
    assert out.records == [{"a": 1, "copy": 0}, {"a": 1, "copy": 1}]


def test_python_batch_mode_failure_dead_letters_the_batch() -> None:
    out = run({"type": "python", "callable": "transforms.userfuncs:broken", "mode": "batch"}, [{"a": 1}, {"a": 2}])
    assert out.records == []
    assert [d.record for d in out.dead_letters] == [{"a": 1}, {"a": 2}]
    assert "RuntimeError: boom" in out.dead_letters[0].reason


@pytest.mark.parametrize(("spec", "message"), [
    ("transforms.nope:tag", "cannot import 'transforms.nope:tag': ModuleNotFoundError"),
    ("transforms.userfuncs:nope", "AttributeError"),
    ("transforms.userfuncs:NOT_CALLABLE", "not a function"),
])
def test_python_import_failures_are_clear_config_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build("transform", {"type": "python", "callable": spec})


def test_python_callable_must_be_module_colon_function() -> None:
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        build("transform", {"type": "python", "callable": "os.system"})
