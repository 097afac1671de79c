"""Plugin discovery through real entry points: installed, broken, duplicate and disabled plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from sluice.errors import PluginError, UnknownTypeError
from sluice.registry import Registry

SLUICE = str(Path(sys.executable).parent / "sluice")


def make_dist(root: Path, dist: str, module: str, code: str, entry_name: str | None = None) -> None:
    """A real installed distribution on ``root`` (dist-info with an entry point), found by importlib.metadata."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sluice.plugins]\n{entry_name or dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(code))


GOOD = """
    from sluice import RecordTransform, hookimpl

    class Shout(RecordTransform):
        '''Upper-cases the message.'''
        type = "shout"

        def process(self, record):
            record["message"] = record["message"].upper()
            return record

    @hookimpl
    def sluice_transforms():
        return [Shout]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("SLUICE_DISABLE_PLUGINS", raising=False)
    return root


def test_installed_plugins_are_found_through_entry_points(site: Path) -> None:
    make_dist(site, "shout-plugin", "shout_plugin", GOOD)
    registry = Registry.from_entry_points()
    assert registry.get("transform", "shout").__name__ == "Shout"
    assert registry.get("transform", "redact").__name__ == "Redact"  # the example package, pip-installed
    assert registry.get("source", "jsonl") and registry.get("sink", "jsonl")
    assert registry.plugins["shout-plugin"].distribution == "shout-plugin"
    assert registry.plugins["shout-plugin"].types == {"transform": ["shout"]}


def test_a_broken_plugin_is_reported_and_does_not_hide_the_others(site: Path) -> None:
    make_dist(site, "broken-plugin", "broken_plugin", "raise ImportError('needs libfoo 2.0')\n")
    make_dist(site, "shout-plugin", "shout_plugin", GOOD)
    registry = Registry.from_entry_points()
    assert registry.get("transform", "shout")
    [failure] = [f for f in registry.failures if f.name == "broken-plugin"]
    assert "ImportError: needs libfoo 2.0" in failure.error and failure.distribution == "broken-plugin"
    with pytest.raises(UnknownTypeError, match=r"broken-plugin \(ImportError: needs libfoo 2.0\)"):
        registry.get("transform", "brokentype", "job 'x': transform.steps[0]")


MISSPELLED_HOOK = """
    from sluice import RecordTransform, hookimpl

    class Whisper(RecordTransform):
        '''Does nothing, quietly.'''
        type = "whisper"

        def process(self, record):
            return record

    @hookimpl
    def sluice_transform():
        return [Whisper]
"""

UNMARKED_HOOK = """
    from sluice import RecordTransform

    class Mumble(RecordTransform):
        '''Does nothing.'''
        type = "mumble"

        def process(self, record):
            return record

    def sluice_transforms():
        return [Mumble]
"""
TYPO = "hook 'sluice_transform' is not a Sluice hook; did you mean 'sluice_transforms'?"


def test_a_misspelled_hook_is_a_plugin_failure_and_the_others_still_load(site: Path) -> None:
    make_dist(site, "typo-plugin", "typo_plugin", MISSPELLED_HOOK)
    make_dist(site, "shout-plugin", "shout_plugin", GOOD)
    registry = Registry.from_entry_points()
    assert registry.get("transform", "shout") and "typo-plugin" not in registry.plugins
    [failure] = [f for f in registry.failures if f.name == "typo-plugin"]
    assert failure.error == TYPO
    with pytest.raises(UnknownTypeError) as info:
        registry.get("transform", "whisper", "job 'x': transform.steps[0]")
    assert f"Plugins that failed to load: typo-plugin ({TYPO})." in str(info.value)


def test_a_hook_function_without_hookimpl_is_a_plugin_failure(site: Path) -> None:
    make_dist(site, "unmarked-plugin", "unmarked_plugin", UNMARKED_HOOK)
    registry = Registry.from_entry_points()
    [failure] = [f for f in registry.failures if f.name == "unmarked-plugin"]
    assert failure.error == "sluice_transforms() is not marked @hookimpl, so Sluice never calls it"


def test_sluice_plugins_reports_a_misspelled_hook(site: Path) -> None:
    make_dist(site, "typo-plugin", "typo_plugin", MISSPELLED_HOOK)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200"}
    listed = subprocess.run([SLUICE, "plugins", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert listed.returncode == 1
    data = orjson.loads(listed.stdout)
    assert {"name": "typo-plugin", "distribution": "typo-plugin", "error": TYPO} in data["failures"]
    assert {p["name"] for p in data["plugins"]} >= {"sluice", "sluice-transforms"}
    table = subprocess.run([SLUICE, "plugins"], capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 1 and f"failed to load typo-plugin (typo-plugin): {TYPO}" in table.stdout


def test_two_plugins_claiming_one_type_fail_naming_both(site: Path) -> None:
    make_dist(site, "shout-a", "shout_a", GOOD)
    make_dist(site, "shout-b", "shout_b", GOOD)
    with pytest.raises(PluginError, match=r"'shout' is provided by two plugins: 'shout-a' and 'shout-b'"):
        Registry.from_entry_points()


def test_disabled_plugins_are_never_imported(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = site / "imported.txt"
    make_dist(site, "noisy-plugin", "noisy_plugin", f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.setenv("SLUICE_DISABLE_PLUGINS", "noisy-plugin, other")
    registry = Registry.from_entry_points()
    assert "noisy-plugin" not in registry.plugins and not marker.exists()
    monkeypatch.setenv("SLUICE_DISABLE_PLUGINS", "")
    Registry.from_entry_points()
    assert marker.exists()


def test_unknown_type_names_the_place_the_known_types_and_a_close_match() -> None:
    registry = Registry.from_plugins()
    with pytest.raises(UnknownTypeError) as info:
        registry.get("sink", "jsnl", "job 'daily': destination")
    message = str(info.value)
    assert message.startswith("job 'daily': destination: unknown sink type 'jsnl'.")
    assert "Did you mean 'jsonl'?" in message and "Known sink types: file, jsonl." in message


def test_importing_sluice_and_plugin_entry_points_loads_no_client_library() -> None:
    code = (
        "import sys, sluice, sluice.registry, sluice.config, sluice.engine, sluice.cli\n"
        "from sluice.registry import Registry\n"
        "Registry.from_entry_points()\n"  # imports every installed plugin's entry-point module
        "heavy = {'elasticsearch', 'opensearchpy', 'boto3', 'botocore', 'httpx', 'airflow'}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


LINES_FORMAT = """
    from sluice import hookimpl
    from sluice.formats import Format

    class Lines(Format):
        '''Plain text, a record per line.'''
        type = "lines"
        extension = ".txt"
        suffixes = (".txt",)

    @hookimpl
    def sluice_formats():
        return [Lines]
"""

STATSD_EXPORTER = """
    from sluice import hookimpl
    from sluice.exporting import MetricsExporter

    class Statsd(MetricsExporter):
        '''Another StatsD.'''
        type = "statsd"

    @hookimpl
    def sluice_metrics_exporters():
        return [Statsd]
"""

BROKEN_EXPORTERS = """
    from sluice import hookimpl

    @hookimpl
    def sluice_metrics_exporters():
        raise RuntimeError("no client library here")

    @hookimpl
    def sluice_formats():
        raise RuntimeError("no pyarrow here")
"""


def test_formats_and_metrics_exporters_are_collected_per_plugin(site: Path) -> None:
    make_dist(site, "lines-plugin", "lines_plugin", LINES_FORMAT)
    registry = Registry.from_entry_points()
    assert sorted(registry.types["format"]) == ["csv", "jsonl", "lines", "parquet", "tsv"]
    assert sorted(registry.types["metrics_exporter"]) == ["prometheus", "statsd"]
    assert registry.plugins["lines-plugin"].types == {"format": ["lines"]}
    assert registry.plugins["sluice-formats"].types == {"format": ["parquet", "csv", "tsv"]}
    assert registry.plugins["sluice-metrics"].types == {"metrics_exporter": ["prometheus", "statsd"]}
    assert registry.plugins["sluice"].types["format"] == ["jsonl"]


@pytest.mark.parametrize(("code", "what"), [(LINES_FORMAT, "format 'lines'"),
                                            (STATSD_EXPORTER, "metrics exporter 'statsd'")])
def test_two_plugins_giving_one_format_or_exporter_name_fail_naming_both(site: Path, code: str, what: str) -> None:
    kind = "format" if "format" in what else "exporter"  # module names of their own: imports are cached
    make_dist(site, "twin-a", f"twin_a_{kind}", code)
    make_dist(site, "twin-b", f"twin_b_{kind}", code)
    first, second = ("sluice-metrics", "twin-a") if "statsd" in what else ("twin-a", "twin-b")
    with pytest.raises(PluginError, match=rf"^{what} is provided by two plugins: '{first}' and '{second}'; "
                                          rf"uninstall one or block it with SLUICE_DISABLE_PLUGINS={second}$"):
        Registry.from_entry_points()


def test_a_broken_format_or_exporter_hook_is_reported_once_and_hides_no_other(site: Path) -> None:
    from sluice.exporting import exporter_classes
    from sluice.formats import format_types

    make_dist(site, "broken-hooks", "broken_hooks", BROKEN_EXPORTERS)
    registry = Registry.from_entry_points()
    assert sorted(exporter_classes(registry)) == ["prometheus", "statsd"]
    assert sorted(format_types(registry)) == ["csv", "jsonl", "parquet", "tsv"]  # calls sluice_formats() again
    assert sorted(f.error for f in registry.failures if f.name == "broken-hooks") == [
        "sluice_formats() raised RuntimeError: no pyarrow here",
        "sluice_metrics_exporters() raised RuntimeError: no client library here",
    ]
