"""The job file: top-level model, loading, templating of component blocks, and clear errors.

Loading goes in three steps: parse YAML/JSON, validate the top level, then render each component
block with the run's template variables and validate it with its plugin's ``Config``. Every
problem found is collected, so ``sluice validate`` lists them all at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from . import secrets
from .connections import expand_connection
from .errors import ConfigError, format_validation_error
from .registry import Kind, Registry, get_registry
from .settings import RuntimeConfig, Strict
from .templating import Interval, Renderer, late_fields, template_vars


class TransformSection(Strict):
    """The transform chain, and whether it runs in a process pool (stateless steps only)."""

    steps: list[dict[str, Any]] = Field(default_factory=list)
    processes: int = Field(0, ge=0, description="Run the chain in this many processes (0: in threads).")


class ScheduleConfig(Strict):
    """When Airflow runs the job (read by sluice-airflow; ``sluice run`` ignores it).

    Each run covers the data interval ``[data_interval_start, data_interval_end)`` of its cron
    period, so ``{{ ds }}``/``{{ next_ds }}`` in the job are that run's interval.
    """

    cron: str = Field("@daily", description="Cron expression or preset (@hourly, @daily, @weekly, @monthly).")
    start_date: date = Field(description="First data interval starts here.")
    end_date: date | None = Field(None, description="No runs for intervals after this date.")
    timezone: str = Field("UTC", description="Timezone of the cron expression.")
    catchup: bool = Field(False, description="Create runs for every interval since start_date.")
    retries: int = Field(2, ge=0, description="Task retries.")
    retry_delay: timedelta = Field(timedelta(minutes=5), description="Delay between retries (s or ISO 8601).")
    max_active_runs: int = Field(1, ge=1, description="Runs of this DAG at once.")
    tags: list[str] = Field(default_factory=list, description="DAG tags (sluice is always added).")
    owner: str = Field("sluice", description="DAG owner.")


class StagingConfig(Strict):
    """How a staged run (Airflow, ``sluice run --staged``) splits the job, and where it stages.

    A plain string is short for ``{uri: <string>}``.
    """

    uri: str = Field(description="s3://bucket/prefix, or a local directory every worker shares (templated).")
    mode: Literal["staged", "fused"] = Field(
        "staged", description="staged: extract, transform and load are separate steps handing records over "
                              "through staging; fused: one step per partition runs source → steps → destination "
                              "(no staged copy of the records; staging holds only manifests)."
    )
    transform: Literal["separate", "with_extract"] = Field(
        "separate", description="staged mode: the transform steps run in their own step (separate) or inside "
                                "each extract (with_extract, one staged copy less). A step that keeps state "
                                "over the whole run always runs in one separate step."
    )
    retention: timedelta = Field(
        timedelta(days=3), description="Keep a finished run's staging this long (s or ISO 8601), so a task "
                                       "cleared in the meantime finds what it needs; 0: delete at finalize."
    )
    lease_ttl: timedelta = Field(
        timedelta(minutes=10), description="One run of a job and interval at a time: a run's steps hold a lease "
                                           "in staging, renewed while they work; a run that died loses it after "
                                           "this long (s or ISO 8601)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Store options (templated): for s3://, the S3 connection fields "
                                          "(endpoint_url, region, connection: ...); default: those of the job's "
                                          "first S3 component, else the AWS default chain."
    )

    @model_validator(mode="before")
    @classmethod
    def _uri_alone(cls, value: Any) -> Any:
        return {"uri": value} if isinstance(value, str) else value


class JobConfig(Strict):
    """A job file's top level. Component blocks stay raw until their plugin validates them."""

    job_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: str | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    source: dict[str, Any]
    transform: TransformSection = Field(default_factory=TransformSection)
    destination: dict[str, Any] | None = Field(
        None, description="Where records go. Default: gzip JSON Lines under out/{job_name}/date={ds}."
    )
    dead_letter: dict[str, Any] | None = None
    checkpoints: dict[str, Any] | None = None
    schedule: ScheduleConfig | None = Field(None, description="Airflow schedule (ignored by `sluice run`).")
    staging: StagingConfig | None = Field(
        None, description="Where a staged run (Airflow, `sluice run --staged`) hands data between its steps: "
                          "s3://bucket/prefix or a local directory, or a block with uri, mode and options."
    )
    metrics: dict[str, dict[str, Any] | None] | None = Field(
        None, description="Metrics exporters for this job's runs, keyed by exporter type (prometheus, statsd: "
                          "sluice-metrics), each block checked by its exporter; merged over $SLUICE_METRICS "
                          "field by field, null turning one off. Not templated."
    )

    @field_validator("metrics")
    @classmethod
    def _known_exporters(cls, value: dict[str, dict[str, Any] | None] | None) -> Any:
        from pydantic_core import PydanticCustomError

        from .exporting import validate_blocks

        problems = validate_blocks(value)
        if problems:
            raise PydanticCustomError("metrics", "{problems}", {"problems": "; ".join(problems)})
        return value

    @field_validator("source", "destination", "dead_letter", "checkpoints")
    @classmethod
    def _has_type(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("type"), str):
            raise ValueError("needs a 'type:' naming the plugin component")
        return value


@dataclass
class ComponentSpec:
    """A validated component block: its class, config, and where it sits in the job file."""

    kind: Kind
    klass: type
    config: BaseModel
    where: str
    raw: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.raw["type"])

    def build(self) -> Any:
        return self.klass(self.config)


@dataclass
class Job:
    """A job resolved for one run: top-level config, the run's interval and id, and components."""

    config: JobConfig
    interval: Interval
    run_id: str
    variables: dict[str, Any]
    source: ComponentSpec
    steps: list[ComponentSpec]
    destination: ComponentSpec
    dead_letter: ComponentSpec
    checkpoints: ComponentSpec
    path: Path | None = None
    renderer: Renderer | None = field(default=None, repr=False)
    registry: Registry | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.job_name


MAX_JOB_FILE_BYTES = 1 << 20
"""Largest job file read (1 MiB): job files are configuration; data belongs in a source."""

MAX_JOB_VALUES = 100_000
"""Most values (scalars, lists and mappings) a job file may hold once its YAML aliases are
expanded: ``&a [*b, *b, ...]`` chains (a "billion laughs") stop here, before they are built."""

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it


class _JobFileError(Exception):
    """A problem the loader found at a line of the file."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        super().__init__(problem)
        self.line, self.column, self.problem = line, column, problem


class JobLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """YAML's safe loader (the C one when PyYAML has it), refusing duplicate keys and documents that
    expand past ``MAX_JOB_VALUES`` values."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # keys from `<<: *defaults` may be overridden: that is what merging is for
                key = self.construct_object(key_node)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    mark = key_node.start_mark
                    raise _JobFileError(mark.line, mark.column,
                                        f"duplicate key {key!r} (first on line {first.start_mark.line + 1}); "
                                        "the second would silently replace the first")
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (stops counting past the limit)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if isinstance(node, yaml.ScalarNode):
        return 1
    if key in path:
        raise _JobFileError(node.start_mark.line, node.start_mark.column, "an alias refers to itself")
    path.add(key)
    children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, path)
        if total > MAX_JOB_VALUES:  # raised by the innermost block over the limit: the line to look at
            raise _JobFileError(node.start_mark.line, node.start_mark.column,
                                f"this block holds more than {MAX_JOB_VALUES} values (each use of a YAML "
                                "alias counted in full); a job file is configuration, not data")
    path.discard(key)
    sizes[key] = total
    return total


def read_job_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON job file; a problem names the file, line and column.

    Duplicate keys are errors (naming both lines), and so are files over ``MAX_JOB_FILE_BYTES`` or
    expanding past ``MAX_JOB_VALUES`` values: validation stays fast and small whatever the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read job file: {exc.strerror or exc}") from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise ConfigError(f"{p}: the job file is larger than {MAX_JOB_FILE_BYTES // 1024} KiB; job files are "
                          "configuration (put data in a source)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    try:
        parsed = yaml.load(text, Loader=JobLoader)  # a safe loader; YAML is a superset of JSON
    except _JobFileError as exc:
        raise ConfigError(f"{p}: line {exc.line + 1}, column {exc.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: {at}{problem}") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML cannot convert (an integer of 10,000 digits)
        raise ConfigError(f"{p}: {type(exc).__name__}: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{p}: a job file must be a mapping with job_name, source, destination...")
    return parsed


def load_job(
    source: str | Path | dict[str, Any],
    *,
    interval: Interval | None = None,
    run_id: str | None = None,
    registry: Registry | None = None,
    secret_mode: Literal["resolve", "placeholder"] = "resolve",
) -> Job:
    """Load and fully validate a job for one run. Raises ConfigError listing every problem."""
    path = None if isinstance(source, dict) else Path(source)
    raw = dict(source) if isinstance(source, dict) else read_job_file(source)
    named = isinstance(raw.get("job_name"), str)
    label = f"job {raw.get('job_name')!r}" if named else f"job file {path}" if path else "job"
    problems: list[str] = []
    config: JobConfig | None
    try:
        config = JobConfig.model_validate(raw)
    except ValidationError as exc:
        # keep going: the component blocks are validated too, so every problem is listed at once
        problems.extend(format_validation_error(exc, label, JobConfig).problems)
        config = None
    else:
        label = f"job {config.job_name!r}"
    job_name = config.job_name if config else str(raw["job_name"]) if named else "job"
    registry = registry or get_registry()
    interval = interval or Interval.yesterday()
    run_id = run_id or interval.default_run_id(job_name)
    variables = template_vars(job_name, interval, run_id)
    renderer = Renderer(variables, secrets.resolver(registry, placeholder=secret_mode == "placeholder"))

    def resolve(kind: Kind, block: dict[str, Any], where: str) -> ComponentSpec | None:
        try:
            block = expand_connection(block, kind, f"{label}: {where}", registry, lookup=secret_mode == "resolve")
            klass = registry.get(kind, str(block.get("type")), f"{label}: {where}")
            late = late_fields(klass.Config)
            rendered = {k: (v if k in late else renderer.render(v, f"{where}.{k}")) for k, v in block.items()}
            klass, cfg = registry.validate(kind, rendered, f"{label}: {where}")
        except ConfigError as exc:
            problems.extend(p if p.startswith(label) else f"{label}: {p}" for p in exc.problems)
            return None
        return ComponentSpec(kind, klass, cfg, where, rendered)

    if config is None:
        for kind, block, where in _typed_blocks(raw):
            resolve(kind, block, where)
        raise ConfigError(problems[0], problems)

    src = resolve("source", config.source, "source")
    steps = [resolve("transform", step, f"transform.steps[{i}]") for i, step in enumerate(config.transform.steps)]
    dst_block = config.destination or {"type": "jsonl", "path": f"out/{config.job_name}/date={variables['ds']}",
                                       "compression": "gzip"}
    dst = resolve("sink", dst_block, "destination")
    dl_block = config.dead_letter or {"type": "jsonl", "path": f".sluice/dead_letters/{config.job_name}/{run_id}"}
    dl = resolve("sink", dl_block, "dead_letter")
    cp_block = config.checkpoints or {"type": "local"}
    cp = resolve("checkpoint_store", cp_block, "checkpoints")

    if config.transform.processes:
        for i, spec in enumerate(steps):
            if spec is not None and not getattr(spec.klass, "stateless", True):
                problems.append(f"{label}: transform.steps[{i}] (type: {spec.type}) keeps state across batches "
                                "and cannot run with transform.processes > 0")
    if problems:
        raise ConfigError(problems[0], problems)
    assert src and dst and dl and cp and all(steps)
    return Job(config, interval, run_id, variables, src, steps, dst, dl, cp, path, renderer, registry)  # type: ignore[arg-type]


def _typed_blocks(raw: dict[str, Any]) -> Iterator[tuple[Kind, dict[str, Any], str]]:
    """The component blocks of a job whose top level is invalid, so they are checked all the same:
    the blocks written with a ``type`` (the top-level errors name the others; defaults are left out)."""
    transform = raw.get("transform")
    steps = transform.get("steps") if isinstance(transform, dict) else None
    steps = steps if isinstance(steps, list) else []
    blocks: list[tuple[Kind, Any, str]] = [
        ("source", raw.get("source"), "source"),
        *(("transform", step, f"transform.steps[{i}]") for i, step in enumerate(steps)),
        ("sink", raw.get("destination"), "destination"),
        ("sink", raw.get("dead_letter"), "dead_letter"),
        ("checkpoint_store", raw.get("checkpoints"), "checkpoints"),
    ]
    for kind, block, where in blocks:
        if isinstance(block, dict) and (kind == "transform" or isinstance(block.get("type"), str)):
            yield kind, block, where
