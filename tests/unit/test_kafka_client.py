"""How the Kafka clients connect: TLS, SASL and compression, checked when the settings are read
(what the local broker cannot exercise, a secured cluster, is checked here as configuration)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from shared.kafka import KafkaConfigError, KafkaConnection
from shared.settings import ServiceSettings


def test_a_plain_connection_has_no_security_and_no_compression():
    c = KafkaConnection("k1:9092,k2:9092")
    assert c.options() == {"bootstrap_servers": "k1:9092,k2:9092", "security_protocol": "PLAINTEXT"}
    assert "compression_type" not in c.producer_options()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compression_goes_to_the_producers_only(codec):
    c = KafkaConnection("k:9092", compression=codec)
    assert c.producer_options()["compression_type"] == codec
    assert "compression_type" not in c.options()


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs kafka_sasl_mechanism"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "_username and"),
        (
            {"sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u", "sasl_password": "p"},
            "not SASL",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": Path("/etc/hostname")}, "go together"),
        ({"ssl_cafile": Path("/etc/hostname")}, "has no TLS"),
        ({"security_protocol": "SSL", "ssl_cafile": Path("/nowhere/ca.pem")}, "not a readable"),
        ({"bootstrap": " "}, "empty"),
    ],
)
def test_a_setting_that_cannot_work_is_named(kwargs, says):
    kwargs = {"bootstrap": "k:9092", **kwargs}
    with pytest.raises(KafkaConfigError, match=says):
        KafkaConnection(**kwargs)


def test_the_service_settings_refuse_it_at_start(monkeypatch):
    monkeypatch.setenv("QIANSHAO_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        ServiceSettings()
    monkeypatch.setenv("QIANSHAO_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("QIANSHAO_KAFKA_SASL_USERNAME", "qianshao")
    monkeypatch.setenv("QIANSHAO_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("QIANSHAO_KAFKA_COMPRESSION", "zstd")
    options = ServiceSettings().kafka().producer_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == (
        "SCRAM-SHA-512",
        "qianshao",
    )
    assert options["compression_type"] == "zstd"
    assert isinstance(options["ssl_context"], ssl.SSLContext)  # the system's trusted CAs


def test_mutual_tls_loads_the_ca_and_the_client_certificate(tmp_path):
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=qianshao-test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    c = KafkaConnection(
        "k:9093",
        security_protocol="SSL",
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_check_hostname=False,
    )
    context = c.options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is False
    assert [x["subject"] for x in context.get_ca_certs()] == [((("commonName", "qianshao-test"),),)]
