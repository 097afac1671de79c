"""One run of a job and interval at a time: a lease object in staging, taken with a conditional write.

Every step of a staged run takes (or renews) the lease before it touches anything, keeps renewing
it while it works, and ``finalize`` releases it. A step of another run of the same interval (a
manual trigger next to the scheduled run, a cleared task of an older run) finds the lease held and
fails at once, naming the run that holds it and when the lease expires. A run that died stops
renewing, so its lease expires after ``ttl`` and a new run may take it over.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from .errors import JobFailed
from .staging import StagingStore


class LeaseHeld(JobFailed):
    """Another run of the same job and interval holds the lease."""


@dataclass
class Lease:
    """The lease of one job and interval, taken by ``owner`` (the orchestrator's run id)."""

    store: StagingStore
    key: str
    owner: str
    ttl: timedelta
    what: str  # "job 'x', interval ...", for messages

    def acquire(self) -> None:
        """Take the lease, or renew it when this owner holds it; raise ``LeaseHeld`` otherwise."""
        for _ in range(20):  # a lost race is retried: the next read sees the winner
            now = datetime.now(UTC)
            current = self.store.get_versioned(self.key)
            version = None
            if current is not None:
                data, version = current
                held = orjson.loads(data)
                expires = datetime.fromisoformat(held["expires_at"])
                if held["owner"] != self.owner and expires > now and not held.get("released"):
                    raise LeaseHeld(f"{self.what} is being run by {held['owner']!r} (lease taken "
                                    f"{held['acquired_at']}, expires {held['expires_at']} unless renewed); this run "
                                    f"({self.owner!r}) stops rather than write the same output at the same time")
                acquired = held["acquired_at"] if held["owner"] == self.owner and not held.get("released") else None
            else:
                acquired = None
            body = {"owner": self.owner, "acquired_at": acquired or now.isoformat(),
                    "expires_at": (now + self.ttl).isoformat(), "released": False}
            if self.store.put_if(self.key, orjson.dumps(body), version):
                return
        raise LeaseHeld(f"{self.what}: could not take the lease ({self.store.describe()}/{self.key}) after 20 "
                        "attempts: other runs keep writing it")

    def release(self) -> None:
        """Give the lease up (when this owner still holds it), so the next run need not wait."""
        current = self.store.get_versioned(self.key)
        if current is None:
            return
        data, version = current
        held = orjson.loads(data)
        if held["owner"] == self.owner:
            now = datetime.now(UTC).isoformat()
            self.store.put_if(self.key, orjson.dumps({**held, "expires_at": now, "released": True}), version)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Take the lease and keep renewing it (every third of ``ttl``) until the block ends."""
        self.acquire()
        stop = threading.Event()
        failure: list[BaseException] = []

        def renew() -> None:
            while not stop.wait(self.ttl.total_seconds() / 3):
                try:
                    self.acquire()
                except BaseException as exc:  # noted; the step reports it when it ends
                    failure.append(exc)
                    return

        thread = threading.Thread(target=renew, name="sluice-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failure:
            raise LeaseHeld(f"{self.what}: the lease was lost while the step ran ({failure[0]}); another run may "
                            "have written the same output meanwhile, run the interval again")
