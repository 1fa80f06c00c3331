"""Signed CAP on intake: a message signed with an enveloped XML signature is accepted while it is
as signed and refused once altered; an unsigned message is accepted; with a trust store the
signer's certificate must chain to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.signer import XMLSigner

from services.ingest.domain.cap import CapRejected, parse_cap

SAMPLE = (Path(__file__).parent.parent / "data" / "cap_rainstorm_red.xml").read_bytes()


def self_signed(name: str) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def signed() -> tuple[bytes, bytes]:
    key, cert = self_signed("北京市气象台 signing")
    doc = etree.fromstring(SAMPLE)
    out = XMLSigner().sign(doc, key=key, cert=cert)
    return etree.tostring(out, encoding="UTF-8"), cert


def test_an_unsigned_message_is_accepted():
    assert parse_cap(SAMPLE).level == "red"


def test_a_signed_message_as_signed_is_accepted(signed):
    data, _ = signed
    assert b"Signature" in data
    assert parse_cap(data).identifier == "11000041600000_20260701093000_1"


def test_a_signed_message_altered_after_signing_is_refused(signed):
    data, _ = signed
    altered = data.replace("暴雨红色预警信号".encode(), "暴雨蓝色预警信号".encode())
    assert altered != data
    with pytest.raises(CapRejected, match="signature does not verify"):
        parse_cap(altered)


def issued_by_a_ca() -> tuple[bytes, bytes, bytes]:
    """(the CA's certificate, a signing key, its certificate issued by the CA)."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "省级预警信息发布 CA")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "气象台 signing")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), key_pem, leaf.public_bytes(pem)


def test_with_a_trust_store_the_signer_must_chain_to_it(tmp_path):
    ca, key, cert = issued_by_a_ca()
    data = etree.tostring(
        XMLSigner().sign(etree.fromstring(SAMPLE), key=key, cert=cert), encoding="UTF-8"
    )
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(ca)
    assert parse_cap(data, trusted_ca=str(trusted)).level == "red"
    other_ca, _, _ = issued_by_a_ca()
    other = tmp_path / "other.pem"
    other.write_bytes(other_ca)
    with pytest.raises(CapRejected, match="signature does not verify"):
        parse_cap(data, trusted_ca=str(other))
