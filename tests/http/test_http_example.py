"""The example API → S3 job runs as shipped: a local API (OAuth2, cursor pages) and moto for S3."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from sluice.testing import run_job

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "api_to_s3_daily.yaml"
ACCOUNTS = ["acme", "globex", "initech", "umbrella"]


def events(seen: Any) -> tuple[int, dict[str, str], bytes]:
    if seen.headers.get("authorization") != "Bearer token-1":
        return 401, {}, b""
    assert seen.query["since"] == "2024-01-31T00:00:00+00:00" and seen.query["limit"] == "500"
    account = seen.path.split("/")[3]
    start, count = int(seen.query.get("cursor", 0)), 1200 + ACCOUNTS.index(account)
    data = [{"account": account, "n": n} for n in range(start, min(start + 500, count))]
    nxt = str(start + 500) if start + 500 < count else None
    return 200, {"content-type": "application/json"}, json.dumps({"data": data, "meta": {"next_cursor": nxt}}).encode()


def test_the_api_to_s3_example(api: Any, s3: Any, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    api.route("/oauth/token", lambda seen: (200, {"content-type": "application/json"},
                                            b'{"access_token": "token-1", "expires_in": 3600}'))
    api.route("/v1/accounts/", events)
    s3.create_bucket(Bucket="lake")
    for name, value in {"EVENTS_API": api.url, "EVENTS_IDP": api.url, "SLUICE_BUCKET": "lake",
                        "S3_ENDPOINT_URL": moto_url, "EVENTS_API_CLIENT_SECRET": "cs-1"}.items():
        monkeypatch.setenv(name, value)
    summary = run_job(EXAMPLE, ds="2024-01-31")
    assert summary.status == "succeeded", summary.error
    assert summary.written == sum(1200 + i for i in range(4)) and summary.reconciled
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lake", Prefix="raw/events/")["Contents"]]
    parts = sorted(k for k in keys if "/part-" in k)
    assert [k.split("/part-")[1].split("-")[0] for k in parts] == ACCOUNTS
    for key in parts:
        lines = gzip.decompress(s3.get_object(Bucket="lake", Key=key)["Body"].read()).splitlines()
        account = key.split("/part-")[1].split("-")[0]
        assert [json.loads(line)["n"] for line in lines] == list(range(1200 + ACCOUNTS.index(account)))
    assert "raw/events/date=2024-01-31/_SUCCESS" in keys
    assert len(api.hits("/oauth/token")) == 1, "one token for the four partitions"
