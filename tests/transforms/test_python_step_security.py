"""The ``python`` step runs code the job file names: validation checks the callable imports, and
``SLUICE_PYTHON_ALLOW`` limits which modules it may come from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sluice import ConfigError
from sluice.testing import build, load_test_job

TESTS = Path(__file__).resolve().parents[1]
SLUICE = str(Path(sys.executable).parent / "sluice")


def job(tmp_path: Path, callable_: str) -> dict[str, Any]:
    return {"job_name": "py", "source": {"type": "jsonl", "path": str(tmp_path)},
            "transform": {"steps": [{"type": "python", "callable": callable_}]}}


def test_validate_reports_a_callable_that_does_not_import_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("job_name: py\nsource: {type: jsonl, path: in}\n"
                    "transform: {steps: [{type: python, callable: 'nosuchmod:f'}]}\n")
    result = subprocess.run([SLUICE, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: job 'py': transform.steps[0] (type: python): callable: Value error, cannot import " \
           "'nosuchmod:f': ModuleNotFoundError: No module named 'nosuchmod'" in result.stderr


@pytest.mark.parametrize(("spec", "message"), [
    ("transforms.userfuncs:nope", "cannot import 'transforms.userfuncs:nope': AttributeError"),
    ("transforms.userfuncs:NOT_CALLABLE", "'transforms.userfuncs:NOT_CALLABLE' is a int, not a function"),
])
def test_a_callable_that_does_not_resolve_fails_job_validation(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_test_job(job(tmp_path, spec))
    assert message in info.value.problems[0], info.value.problems


def test_without_an_allowlist_any_importable_callable_runs(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_PYTHON_ALLOW", raising=False)
    load_test_job(job(tmp_path, "subprocess:run"))  # job files are code: documented, not refused


@pytest.mark.parametrize(("spec", "message"), [
    ("subprocess:run", "module 'subprocess' is not allowed by SLUICE_PYTHON_ALLOW (transforms.userfuncs, json)"),
    ("os:system", "module 'os' is not allowed by SLUICE_PYTHON_ALLOW"),
    ("transforms.userfuncs:Reject", "is defined in module 'sluice.errors', which SLUICE_PYTHON_ALLOW does not allow"),
    ("json:decoder.JSONDecoder", "'decoder' is a module; with SLUICE_PYTHON_ALLOW set, name a function of the "
                                 "allowed module itself"),
])
def test_the_allowlist_refuses_other_modules_at_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           spec: str, message: str) -> None:
    monkeypatch.setenv("SLUICE_PYTHON_ALLOW", "transforms.userfuncs, json")
    with pytest.raises(ConfigError) as info:
        load_test_job(job(tmp_path, spec))
    assert message in info.value.problems[0], info.value.problems


def test_the_allowlist_lets_its_modules_and_their_submodules_through(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_PYTHON_ALLOW", "transforms,json")
    load_test_job(job(tmp_path, "transforms.userfuncs:tag"))
    load_test_job(job(tmp_path, "json:dumps"))


def test_the_allowlist_is_checked_again_when_the_step_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice_transforms.user_code import Python, PythonConfig

    build("transform", {"type": "python", "callable": "transforms.userfuncs:tag"}).close()  # validated here...
    monkeypatch.setenv("SLUICE_PYTHON_ALLOW", "mypkg")  # ...and run where the operator narrowed it
    config = PythonConfig.model_construct(callable="transforms.userfuncs:tag", mode="record", options={})
    with pytest.raises(ConfigError, match=r"module .transforms\.userfuncs. is not allowed by SLUICE_PYTHON_ALLOW"):
        Python(config).open(None)  # type: ignore[arg-type]


def test_a_disallowed_module_is_never_imported(tmp_path: Path) -> None:
    code = ("import os, sys; os.environ['SLUICE_PYTHON_ALLOW'] = 'json'\n"
            "from sluice_transforms.user_code import load_callable\n"
            "try:\n    load_callable('transforms.userfuncs:tag')\nexcept Exception as exc:\n    print(exc)\n"
            "print('transforms.userfuncs' in sys.modules)")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": path})
    assert result.stdout.splitlines()[-1] == "False", result.stdout + result.stderr
