"""The plugin's entry point stays light: no client library is imported until a component opens."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("elasticsearch", "elastic_transport", "opensearchpy", "boto3", "botocore", "httpx", "airflow")


def test_entry_point_and_package_import_no_client_library() -> None:
    code = (
        "import sys, sluice_es, sluice_es.plugin\n"
        "from sluice.registry import get_registry\n"
        "get_registry().get('source', 'elasticsearch', 'test'); get_registry().get('sink', 'opensearch', 'test')\n"
        "from sluice.connections import Connection\n"
        "assert get_registry().hook().sluice_connection_fields(component_type='opensearch', "
        "connection=Connection('c', host='es'))\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
