"""Realistic demo data: a week of web log events, with a few bad ones to show dead letters."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

APPS = ["frontend", "checkout", "search", "auth", "billing"]
LEVELS = ["INFO"] * 14 + ["DEBUG"] * 3 + ["WARN"] * 2 + ["ERROR"]
PATHS = ["/", "/cart", "/search", "/login", "/api/items", "/api/orders", "/static/app.js"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def events(
    n: int = 50_000, days: int = 7, seed: int = 42, bad_every: int = 500
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, event)`` pairs spread over ``days`` from 2024-01-01; every ``bad_every``-th event has a
    latency that is not a number (the demo's cast step sends those to dead letters)."""
    rng = random.Random(seed)
    span = days * 86_400
    for i in range(n):
        ts = START + timedelta(seconds=rng.randrange(span), milliseconds=rng.randrange(1000))
        app = rng.choice(APPS)
        latency: Any = rng.randint(2, 1500)
        if bad_every and i % bad_every == bad_every - 1:
            latency = "n/a"
        path = rng.choice(PATHS)
        yield f"evt-{i:07d}", {
            "@timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "app": app,
            "host": f"{app}-{rng.randint(1, 6):02d}.prod.internal",
            "level": rng.choice(LEVELS),
            "message": f"GET {path} {rng.choice([200, 200, 200, 201, 304, 404, 500])} in {latency} ms",
            "latency_ms": str(latency) if rng.random() < 0.3 else latency,  # strings too: the cast fixes them
            "user_id": f"u{rng.randint(1, 5000):05d}",
        }


# latency_ms arrives as numbers, numeric strings and junk ("n/a"), as real logs do: keyword keeps all of them
MAPPINGS = {"mappings": {"properties": {
    "@timestamp": {"type": "date"}, "app": {"type": "keyword"}, "host": {"type": "keyword"},
    "level": {"type": "keyword"}, "message": {"type": "text"}, "latency_ms": {"type": "keyword"},
    "user_id": {"type": "keyword"},
}}}


def interval() -> tuple[str, str]:
    return START.isoformat(), (START + timedelta(days=7)).isoformat()
