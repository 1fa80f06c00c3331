"""An enveloped XML signature on a CAP message (CAP 1.2 section 3.3.2.1: a ``ds:Signature``
child of ``alert``), verified when present; an unsigned message is accepted as before.

With a trust store (the PEM certificates of the authorities the bureau trusts), the signer's
certificate must chain to one of them; without one, the message must verify against the
certificate it carries, so that a message altered after signing is refused either way. The
verification is signxml's, with XML Signature's own rules (canonicalisation, digests).

Pure: bytes in (and the trust store), nothing out or a ``CapRejected``."""

from __future__ import annotations

from lxml import etree
from signxml.exceptions import SignXMLException
from signxml.verifier import XMLVerifier

from services.ingest.domain.model import CapRejected
from shared.capxml import NS, safe_parser

DSIG = "http://www.w3.org/2000/09/xmldsig#"


def signature_of(doc: etree._Element) -> etree._Element | None:
    return doc.find(f"{{{DSIG}}}Signature") if doc.tag == f"{{{NS}}}alert" else None


def verify(data: bytes, doc: etree._Element, *, trusted_ca: str | None = None) -> None:
    """Refuse a signed message whose signature does not verify; do nothing for an unsigned one.
    ``trusted_ca``: the path of a PEM file of trusted certificates."""
    signature = signature_of(doc)
    if signature is None:
        return
    try:
        if trusted_ca is not None:
            XMLVerifier().verify(data, ca_pem_file=trusted_ca, parser=safe_parser())
            return
        cert = signature.findtext(f".//{{{DSIG}}}X509Certificate")
        if not cert or not cert.strip():
            raise CapRejected(
                "the message is signed, but carries no certificate to verify it with "
                "(<ds:X509Certificate>) and no trust store is configured"
            )
        pem = "-----BEGIN CERTIFICATE-----\n" + cert.strip() + "\n-----END CERTIFICATE-----\n"
        XMLVerifier().verify(data, x509_cert=pem, parser=safe_parser())
    except SignXMLException as exc:
        raise CapRejected(f"the message's XML signature does not verify: {exc}") from exc
