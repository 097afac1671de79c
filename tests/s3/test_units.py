"""Pure logic: key globs, key ranges, key layouts and partition_by folders (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sluice import ConfigError
from sluice_s3.client import parse_uri
from sluice_s3.layout import Folders, KeyLayout, PartitionBy
from sluice_s3.listing import KeyFilter, glob_regex, group_keys


@pytest.mark.parametrize(("glob", "key", "match"), [
    ("*.jsonl.gz", "a.jsonl.gz", True),
    ("*.jsonl.gz", "x/a.jsonl.gz", False),
    ("**/*.jsonl.gz", "a.jsonl.gz", True),
    ("**/*.jsonl.gz", "x/y/a.jsonl.gz", True),
    ("**/*.jsonl.gz", "x/y/a.jsonl", False),
    ("x/**", "x/y/z", True),
    ("x/?.jsonl", "x/a.jsonl", True),
    ("x/?.jsonl", "x/ab.jsonl", False),
    ("part-[0-9]*.jsonl", "part-7.jsonl", True),
    ("part-[!0-9]*.jsonl", "part-7.jsonl", False),
    ("a+b(c).jsonl", "a+b(c).jsonl", True),
])
def test_glob_regex(glob: str, key: str, match: bool) -> None:
    assert bool(glob_regex(glob).match(key)) is match


def obj(key: str, size: int = 10, modified: datetime | None = None) -> dict[str, Any]:
    return {"Key": key, "Size": size, "LastModified": modified or datetime(2024, 1, 1, tzinfo=UTC)}


def test_key_filter_skips_hidden_names_and_folders_without_a_glob() -> None:
    accept = KeyFilter("in/", None, None, None)
    assert [k for k in ("in/a.jsonl", "in/_SUCCESS", "in/x/.tmp", "in/x/", "in/x/b.gz")
            if accept(obj(k))] == ["in/a.jsonl", "in/x/b.gz"]


def test_group_keys_by_count_and_bytes_starting_after_skipped_keys() -> None:
    objects = [obj("a/_SUCCESS"), obj("a/1"), obj("a/2"), obj("a/3", 500), obj("a/4"), obj("a/_x")]
    ranges = list(group_keys(iter(objects), KeyFilter("a/", None, None, None), 2, 100))
    assert [(r.start_after, r.last_key, r.keys) for r in ranges] == [("a/_SUCCESS", "a/2", 2), ("a/2", "a/3", 1),
                                                                     ("a/3", "a/4", 1)]


def test_key_layout_fills_fields_and_recognises_its_keys() -> None:
    layout = KeyLayout.parse("{prefix}/date=2024-01-01/run_id=r1/part-{partition}-{seq:05d}.jsonl.gz", "out", False)
    assert layout.root == "out/date=2024-01-01/run_id=r1"
    key = layout.key("keys-00001", 7)
    assert key == "out/date=2024-01-01/run_id=r1/part-keys-00001-00007.jsonl.gz"
    assert layout.parts(key) == ("keys-00001", 7)
    assert layout.parts("out/date=2024-01-01/run_id=r1/dead-letters-p-00001.jsonl.gz") is None
    assert layout.parts("out/date=2024-01-01/run_id=r2/part-p-00001.jsonl.gz") is None


def test_key_layout_puts_partition_by_before_the_file_name_unless_placed() -> None:
    layout = KeyLayout.parse("{prefix}/part-{partition}-{seq}.jsonl", "", True)
    assert layout.key("p", 1, "app=web") == "app=web/part-p-1.jsonl" and layout.root == ""
    placed = KeyLayout.parse("{prefix}/{partition_by}/run=1/part-{partition}-{seq}.jsonl", "o", True)
    assert placed.key("p", 1, "app=web") == "o/app=web/run=1/part-p-1.jsonl" and placed.root == "o"


@pytest.mark.parametrize("template", ["{prefix}/part-{seq}.jsonl", "{prefix}/{partition}-{seq}-{uuid}.jsonl"])
def test_key_layout_rejects_templates_without_deterministic_fields(template: str) -> None:
    with pytest.raises(ConfigError):
        KeyLayout.parse(template, "out", False)


@pytest.mark.parametrize(("spec", "record", "folder"), [
    ({"field": "@timestamp", "format": "date"}, {"@timestamp": "2024-01-31T23:30:00-02:00"}, "timestamp=2024-02-01"),
    ({"field": "ts", "format": "hour", "name": "h"}, {"ts": 1706745600000}, "h=2024-02-01T00"),
    ({"field": "ts", "format": "month"}, {"ts": 1706745600}, "ts=2024-02"),
    ({"field": "event.kind"}, {"event": {"kind": "a/b c"}}, "event.kind=a%2Fb%20c"),
    ({"field": "flag"}, {"flag": True}, "flag=true"),
    ({"field": "ts", "format": "date"}, {"ts": "yesterday"}, None),
    ({"field": "app"}, {"other": 1}, None),
])
def test_partition_by_folders(spec: dict[str, Any], record: dict[str, Any], folder: str | None) -> None:
    assert Folders(PartitionBy(**spec)).folder(record) == folder


def test_parse_uri() -> None:
    assert parse_uri("s3://b/a/b/") == ("b", "a/b")
    assert parse_uri("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        parse_uri("/local/path")


def test_client_options_reach_botocore() -> None:
    from sluice_s3.client import S3Connection, make_client

    client = make_client(S3Connection(endpoint_url="http://127.0.0.1:1", region="eu-west-1", checksums="when_required",
                                      max_pool_connections=7, retry_mode="adaptive", max_attempts=6))
    cfg = client.meta.config
    assert cfg.request_checksum_calculation == "when_required" and cfg.response_checksum_validation == "when_required"
    assert cfg.max_pool_connections == 7 and cfg.retries == {"mode": "adaptive", "total_max_attempts": 6}
    assert cfg.s3 == {"addressing_style": "path"} and client.meta.region_name == "eu-west-1"


def test_an_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from sluice_s3.client import S3Connection, make_client

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="AWS profile 'nope' is not configured"):
        make_client(S3Connection(profile="nope"))


def test_secrets_are_secret_and_empty_ones_mean_the_default_chain() -> None:
    from sluice_s3.client import S3Connection

    conn = S3Connection(access_key_id="AKIA", secret_access_key="very-secret", session_token="")
    assert "very-secret" not in repr(conn) and "very-secret" not in conn.model_dump_json()
    assert conn.session_token is None


def test_credentials_written_into_the_endpoint_url_never_show() -> None:
    from sluice import secrets
    from sluice_s3.client import S3Connection, endpoint_label

    conn = S3Connection(endpoint_url="http://minio:p@ss/w%rd@127.0.0.1:9000")
    label = endpoint_label(conn)
    assert label == "http://127.0.0.1:9000"
    assert "p@ss" not in secrets.mask("error at http://minio:p@ss/w%rd@127.0.0.1:9000")
