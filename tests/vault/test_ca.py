"""The platform root and the per-sandbox intermediates it issues."""

from __future__ import annotations

import ssl
import subprocess

import pytest
import trustme
from cryptography import x509

from vault import ca
from vault.models import PlatformCA

pytestmark = pytest.mark.django_db


def test_root_is_made_once_and_its_key_is_encrypted_at_rest():
    first = ca.root_get()
    again = ca.root_get()
    assert first.cert == again.cert
    stored = PlatformCA.objects.get()
    assert "PRIVATE KEY" not in stored.key
    assert stored.cert_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_intermediate_has_path_length_zero_and_chains_to_the_root_alone(tmp_path):
    root = ca.root_get()
    issued = ca.intermediate_issue(root, "sandbox-1")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.issuer == root.cert.subject
    cert.verify_directly_issued_by(root.cert)
    assert issued.ca_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert issued.ca_pem.endswith(root.cert_pem)

    # A leaf the sidecar would mint, verified by OpenSSL trusting only the root.
    key_pem = issued.ca_pem[: issued.ca_pem.index(issued.cert_pem)]
    leaf_ca = trustme.CA.from_pem(issued.cert_pem, key_pem)
    leaf = leaf_ca.issue_cert("api.github.com")
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    (tmp_path / "chain.pem").write_bytes(issued.cert_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    # Path length 0: a CA issued under the intermediate is refused.
    sub = leaf_ca.create_child_ca()
    (tmp_path / "sub.pem").write_bytes(sub.cert_pem.bytes())
    (tmp_path / "subleaf.pem").write_bytes(sub.issue_cert("x.test").cert_chain_pems[0].bytes())
    refused = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "chain.pem",
            "-untrusted",
            "sub.pem",
            "subleaf.pem",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert refused.returncode != 0


def test_trust_bundle_is_the_root_then_the_system_cas(tmp_path):
    root = ca.root_generate()
    system = tmp_path / "system.pem"
    system.write_bytes(trustme.CA().cert_pem.bytes())
    bundle = ca.trust_bundle(root.cert_pem, system)
    assert bundle.startswith(root.cert_pem)
    assert bundle.endswith(system.read_bytes())
    context = ssl.create_default_context(cadata=bundle.decode())
    assert len(context.get_ca_certs()) == 2
    assert ca.trust_bundle(root.cert_pem, tmp_path / "missing") == root.cert_pem
