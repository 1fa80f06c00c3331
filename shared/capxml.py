"""CAP 1.2 XML shared by the services: the official OASIS schema and a parser that never
resolves entities or reaches the network (XXE-safe)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lxml import etree

NS = "urn:oasis:names:tc:emergency:cap:1.2"
XSD = Path(__file__).parent / "schemas" / "CAP-v1.2.xsd"


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        dtd_validation=False,
    )


@cache
def cap_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD), safe_parser()))


def schema_errors(doc: etree._Element) -> list[str]:
    """Why ``doc`` is not valid CAP 1.2; empty when it is."""
    schema = cap_schema()
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]
