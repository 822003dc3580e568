"""The platform root CA and the per-sandbox intermediates it issues (``cryptography``).

- The root is generated once and kept in the database (``PlatformCA``), its key encrypted
  with ``LAP_ENCRYPTION_KEYS`` like every other secret: every platform process and replica
  (daphne, the q cluster, other hosts on Postgres) sees the same root, ``lap_reencrypt``
  rotates it with the rest, and a database backup restores it. It never enters a sandbox.
- Each sandbox gets an intermediate (EC P-256, ``BasicConstraints(ca, path_length=0)``,
  ``INTERMEDIATE_DAYS`` of validity) that only its sidecar holds; a leaked intermediate key
  compromises that sandbox alone and cannot sign further CAs.
- The agent trusts the root only, through ``trust_bundle`` (root + the system bundle).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.db import IntegrityError, transaction

from vault import crypto
from vault.models import PlatformCA

ROOT_DAYS = 3650
INTERMEDIATE_DAYS = 30
BACKDATE = datetime.timedelta(hours=1)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class Root:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Intermediate:
    """A sandbox's CA: ``ca_pem`` (key + certificate + root) is what its sidecar loads."""

    cert_pem: bytes
    ca_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LAP"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def root_generate() -> Root:
    """A new self-signed root (``root_get`` keeps the platform's one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("LAP platform root CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=ROOT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Root(cert, key)


def root_get() -> Root:
    """The platform root, generated on first use; concurrent first uses agree on one."""
    stored = PlatformCA.objects.filter(name="root").first()
    if stored is None:
        root = root_generate()
        try:
            with transaction.atomic():
                stored = PlatformCA.objects.create(
                    name="root",
                    cert_pem=root.cert_pem.decode(),
                    key=crypto.encrypt(_key_pem(root.key).decode()),
                )
        except IntegrityError:  # another process made it first: use theirs
            stored = PlatformCA.objects.get(name="root")
    key = serialization.load_pem_private_key(crypto.decrypt(stored.key).encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Root(x509.load_pem_x509_certificate(stored.cert_pem.encode()), key)


def intermediate_issue(root: Root, sandbox_id: str) -> Intermediate:
    """A fresh CA for one sandbox's sidecar, signed by ``root``, path length 0."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"LAP sandbox {sandbox_id}"))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=INTERMEDIATE_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()), False
        )
        .sign(root.key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return Intermediate(cert_pem=cert_pem, ca_pem=_key_pem(key) + cert_pem + root.cert_pem)


def trust_bundle(root_pem: bytes, system_bundle: Path = SYSTEM_BUNDLE) -> bytes:
    """What the agent trusts: the platform root, then the system's CAs (if there are any)."""
    try:
        system = system_bundle.read_bytes()
    except OSError:
        system = b""
    return root_pem.rstrip(b"\n") + b"\n" + system
