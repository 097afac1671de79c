"""Jobs, expected counts and readers shared by the metrics and history tests."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

STEPS = [{"type": "drop_every", "every": 10}, {"type": "reject_every", "every": 7}]
# what the steps do to records 0..99 of a partition: 10 filtered, 13 dead (multiples of 7 but not of 10)
FILTERED, DEAD = "steps[0]:drop_every", "steps[1]:reject_every"


def expected(ns: range) -> dict[str, int]:
    """The counts the steps give for records numbered ``ns``: an oracle independent of the engine."""
    filtered = sum(1 for n in ns if n % 10 == 0)
    dead = sum(1 for n in ns if n % 10 != 0 and n % 7 == 0)
    return {"read": len(ns), "filtered": filtered, "dead": dead, "written": len(ns) - filtered - dead}


def job(name: str = "metrics_job", **overrides: Any) -> dict[str, Any]:
    """Two partitions of 100 numbered records, one at a time, through a filter and a reject step."""
    base: dict[str, Any] = {
        "job_name": name,
        "runtime": {"batch_size": 10, "max_workers": 1, "error_rate_threshold": 0.5},
        "source": {"type": "numbers"},
        "transform": {"steps": STEPS},
        "destination": {"type": "jsonl", "path": "out"},
        "dead_letter": {"type": "jsonl", "path": "dead"},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET url`` parsed with prometheus-client's parser: the sluice_* samples by name and labels
    (without the ``instance`` label the Pushgateway adds)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("sluice_"):
                labels = frozenset((k, v) for k, v in s.labels.items() if k != "instance")
                out[(s.name, labels)] = s.value
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def datagrams(sock: socket.socket, quiet_s: float = 0.3) -> list[str]:
    """Every StatsD line received on ``sock`` until it stays quiet for ``quiet_s``."""
    lines: list[str] = []
    sock.settimeout(quiet_s)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        lines.extend(data.decode().splitlines())
    return lines
