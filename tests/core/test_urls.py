"""Credentials inside URLs never show, whatever characters the password holds."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from sluice import secrets
from sluice.urls import redact_url, remember_credentials

PASSWORDS = ["hunter2@Tail-Of-Secret", "pa:ss:word", "sl/ash/ed", "per%cent", "nön-äscii-密码", "@@x@@"]


@pytest.fixture(autouse=True)
def _forget() -> None:
    secrets.forget_all()


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_in_a_host_url_never_shows_in_part(password: str) -> None:
    secrets.remember(password)  # as secret() does with the resolved value
    for url in (f"http://elastic:{password}@127.0.0.1:9200", f"https://elastic:{quote(password, safe='')}@es:9243/p"):
        remember_credentials(url)
        shown = redact_url(url)
        assert shown in ("http://127.0.0.1:9200", "https://es:9243/p"), shown
        for piece in {password, *password.split("@"), *password.split(":"), *password.split("/"), quote(password)}:
            if len(piece) >= 3:
                assert piece not in shown, (url, shown)
                assert piece not in secrets.mask(f"error: cannot connect to {url}"), url


def test_a_url_without_credentials_is_left_as_it_is() -> None:
    remember_credentials("http://127.0.0.1:9200/index")
    assert redact_url("http://127.0.0.1:9200/index") == "http://127.0.0.1:9200/index"
