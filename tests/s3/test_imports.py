"""The entry-point module and the package import no client library (plugins load fast)."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_module_imports_no_heavy_client() -> None:
    code = ("import sys, sluice_s3, sluice_s3.plugin; "
            "heavy = [m for m in ('boto3', 'botocore', 'elasticsearch', 'opensearchpy', 'httpx', 'airflow') "
            "if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registering_the_plugin_imports_no_heavy_client() -> None:
    code = ("import sys; from sluice.registry import get_registry; r = get_registry(); "
            "assert r.get('sink', 's3', 'test') and r.get('source', 's3', 'test'); "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
