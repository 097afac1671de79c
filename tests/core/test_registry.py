"""Plugin discovery through real entry points: installed, broken, duplicate and disabled plugins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sluice.errors import PluginError, UnknownTypeError
from sluice.registry import Registry


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
    assert "Did you mean 'jsonl'?" in message and "Known sink types: jsonl." in message


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
