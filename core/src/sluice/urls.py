"""URLs that may carry credentials (``http://user:password@host``), made fit for messages.

A password may hold ``@``, ``:``, ``/``, ``%`` or any other character: the userinfo ends at the
last ``@`` of the authority, and the resolved secret values are masked before any parsing, so a
cut in the wrong place can never leave part of a password behind.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from . import secrets

_USERINFO = re.compile(r"//[^/?#]*@")  # greedy: up to the authority's last "@"
# the userinfo runs to the last "@" that is followed by a host (no "@" or "/" before the path)
_AUTHORITY = re.compile(r"(?P<userinfo>.*)@(?P<host>[^@/?#]*)(?:[/?#].*)?\Z", re.DOTALL)


def remember_credentials(url: str) -> None:
    """Mask from now on the userinfo and password of ``url``, as written and percent-decoded."""
    match = _AUTHORITY.match(url.split("//", 1)[-1])
    if match is None:
        return
    userinfo = match["userinfo"]
    _, colon, password = userinfo.partition(":")
    for value in (userinfo, password, unquote(password)) if colon else (userinfo, unquote(userinfo)):
        secrets.remember(value)


def redact_url(url: str) -> str:
    """``url`` with every remembered secret masked, then without its ``user:password@``."""
    return _USERINFO.sub("//", secrets.mask(url))
