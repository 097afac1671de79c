"""Run hostile inputs in a child process and measure each: how it ended, how long it took, and the
most memory it allocated on top of what was there before.

For tests that a job file or a record cannot stall a worker or exhaust its memory. A child
process because the code under test, before a fix, may loop in C (a huge ``**``) where no signal
reaches it, or allocate gigabytes: the child has an address-space ceiling and a time limit, and a
case that never reports back is "hung". Each case runs twice: timed, then under ``tracemalloc``,
which sees every allocation Python makes (strings, integers, lists) whatever earlier cases did.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

CEILING_BYTES = 3 << 30  # enough for the unfixed code to fail visibly rather than take the machine down

_CHILD = """
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, ({ceiling}, {ceiling}))
{setup}
cases = json.loads(sys.stdin.read())
for name, text in cases.items():
    started = time.monotonic()  # timed on its own: tracemalloc slows allocation-heavy code many times
    try:
        outcome, message = "ok", repr(run(text))[:500]
    except BaseException as exc:
        outcome, message = "error", f"{{type(exc).__name__}}: {{exc}}"[:3000]
    seconds = time.monotonic() - started
    tracemalloc.start()
    try:
        run(text)
    except BaseException:
        pass
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(json.dumps({{"case": name, "outcome": outcome, "message": message, "seconds": seconds,
                      "peak_mb": peak_mb}}), flush=True)
"""


@dataclass
class Outcome:
    """How one case ended: ``ok`` (with the result's repr), ``error`` (with the message) or ``hung``."""

    outcome: str
    message: str = ""
    seconds: float = float("inf")
    peak_mb: float = float("inf")


def probe(setup: str, cases: dict[str, str], timeout_s: float = 60.0) -> dict[str, Outcome]:
    """Run ``run(text)`` (defined by ``setup``) on each case in one child process, in order."""
    script = _CHILD.format(ceiling=CEILING_BYTES, setup=textwrap.dedent(setup))
    try:
        proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases), capture_output=True,
                              text=True, timeout=timeout_s)
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stderr = "timed out"
    results = {name: Outcome("hung", stderr[-2000:]) for name in cases}
    for line in stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            name = data.pop("case")
            results[name] = Outcome(**data)
    return results
