"""``filter``: keep the records for which an expression is true."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sluice import Batch, ComponentConfig, Record, RecordTransform, Reject, RunContext

from .expressions import ExpressionText, compile_expression


class FilterConfig(ComponentConfig):
    """Which records to keep."""

    where: ExpressionText = Field(description="Expression; records for which it is true are kept, "
                                              "e.g. record.get('app') == 'frontend'.")
    on_error: Literal["dead_letter", "drop", "keep"] = Field(
        "dead_letter", description="When the expression raises for a record (a missing key, a type error): "
                                   "dead-letter it with the reason, drop it (counted as filtered) or keep it.")


class Filter(RecordTransform):
    """Keeps records matching ``where``; the others are counted as filtered by this step."""

    type = "filter"
    Config = FilterConfig
    config: FilterConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._fn = compile_expression(self.config.where).fn
        self._vars = dict(ctx.variables)

    def process(self, record: Record) -> Record | None:
        try:
            keep = self._fn(record, self._vars)
        except Exception as exc:
            if self.config.on_error == "dead_letter":
                raise Reject(f"filter: where {self.config.where!r} failed: {type(exc).__name__}: {exc}",
                             type(exc).__name__) from None
            return record if self.config.on_error == "keep" else None
        return record if keep else None

    def apply(self, batch: Batch) -> Batch:
        fn, variables = self._fn, self._vars
        try:
            # one comprehension for the whole batch; only a batch with a failing record takes the slow path
            batch.records = [r for r in batch.records if fn(r, variables)]
            return batch
        except Exception:
            return super().apply(batch)
