"""TLS options against a real TLS endpoint: the test's proxy in front of the server, serving HTTPS
with a certificate made for the test."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import pytest

from sluice.testing import run_job

from .helpers import write_input


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def https_url(os_url: str, fault_proxy: Any, tmp_path: Path) -> tuple[str, Path]:
    """An HTTPS endpoint in front of the server, and the CA file that verifies it."""
    cert, key = make_cert(tmp_path)
    proxy = fault_proxy(os_url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy._server.socket = context.wrap_socket(proxy._server.socket, server_side=True)
    return proxy.url.replace("http://", "https://"), cert


def job(url: str, **tls: Any) -> dict[str, Any]:
    return {"job_name": "tls", "runtime": {"retry": {"attempts": 1}},
            "source": {"type": "jsonl", "path": write_input([{"_id": "a", "n": 1}])},
            "destination": {"type": "elasticsearch", "hosts": [url], "index": "target", **tls}}


@pytest.mark.parametrize("flavor", ["opensearch", "elasticsearch"])
def test_a_ca_bundle_verifies_the_server(https_url: tuple[str, Path], flavor: str) -> None:
    url, ca = https_url
    summary = run_job(job(url, ca_certs=str(ca), flavor=flavor, compat_headers=False))
    assert summary.status == "succeeded", summary.error


def test_an_unknown_certificate_is_a_clear_tls_error(https_url: tuple[str, Path]) -> None:
    url, _ = https_url
    summary = run_job(job(url))
    assert summary.status == "failed"
    assert summary.error.startswith(f"TLS connection to Elasticsearch/OpenSearch at {url} failed")
    assert "ca_certs" in summary.error


def test_verification_can_be_turned_off(https_url: tuple[str, Path]) -> None:
    url, _ = https_url
    summary = run_job(job(url, verify_certs=False))
    assert summary.status == "succeeded", summary.error
