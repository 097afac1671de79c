"""Checkpoints on S3: one small JSON object per partition, so every save is one atomic PUT.

Layout: ``{prefix}/{job}/{run_id}/{safe_key(partition)}.json`` holding ``{"partition", "state"}``.
Useful when runs move between machines (Airflow workers) and a local file would be lost.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field

from sluice import CheckpointStore
from sluice.records import safe_key
from sluice.retry import retry_call

from .client import S3Connection, S3Uri, call, is_transient, join_key, make_client, parse_uri


class S3CheckpointsConfig(S3Connection):
    """Where checkpoint objects live."""

    uri: S3Uri = Field(description="s3://bucket/prefix for checkpoint objects (one per job, run and partition).")



class S3CheckpointStore(CheckpointStore):
    """Keeps each partition's checkpoint as its own S3 object (atomic per save)."""

    type = "s3"
    Config = S3CheckpointsConfig
    config: S3CheckpointsConfig

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.bucket, self.prefix = parse_uri(self.config.uri)
        self.client = make_client(self.config, ctx.metrics)

    def describe(self) -> str:
        return self.config.uri

    def _folder(self, job: str, run_id: str) -> str:
        return join_key(self.prefix, safe_key(job), safe_key(run_id)) + "/"

    def _call(self, fn: Any, what: str, key: str) -> Any:
        return retry_call(lambda: call(fn, what, self.config, self.bucket, key), self.ctx.retry,
                          retry_on=is_transient, metrics=self.ctx.metrics)

    def _keys(self, folder: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": folder}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(lambda kw=kwargs: self.client.list_objects_v2(**kw), "listing checkpoints in", folder)
            keys.extend(o["Key"] for o in page.get("Contents") or () if o["Key"].endswith(".json"))
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    def load(self, job: str, run_id: str) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for key in self._keys(self._folder(job, run_id)):
            body = self._call(lambda k=key: self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read(),
                              "reading checkpoint", key)
            data = orjson.loads(body)
            states[data["partition"]] = data["state"]
        return states

    def save(self, job: str, run_id: str, partition: str, state: dict[str, Any]) -> None:
        key = self._folder(job, run_id) + f"{safe_key(partition)}.json"
        body = orjson.dumps({"partition": partition, "state": state})
        self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                                  ContentType="application/json"), "saving checkpoint", key)

    def clear(self, job: str, run_id: str) -> None:
        keys = self._keys(self._folder(job, run_id))
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            self._call(lambda c=chunk: self.client.delete_objects(Bucket=self.bucket,
                                                                  Delete={"Objects": c, "Quiet": True}),
                       "clearing checkpoints in", self.prefix)
