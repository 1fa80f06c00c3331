"""How every Kafka client of ours connects: the bootstrap servers, TLS and SASL for a secured
cluster, and the producers' compression — one set of options for producers, consumers and the
admin client, checked when a service starts."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


class KafkaConfigError(ValueError):
    """A Kafka client setting that cannot work, named."""


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = None  # the cluster's CA; None: the system's trusted CAs
    ssl_certfile: Path | None = None  # a client certificate (mutual TLS), with its key
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    compression: Compression = "none"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise KafkaConfigError("; ".join(problems))

    def problems(self) -> list[str]:
        out: list[str] = []
        if not self.bootstrap.strip():
            out.append("kafka_bootstrap is empty")
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            out.append(f"{self.security_protocol} needs kafka_sasl_mechanism")
        if sasl and not (self.sasl_username and self.sasl_password):
            out.append(f"{self.security_protocol} needs kafka_sasl_username and _password")
        if not sasl and self.sasl_mechanism is not None:
            out.append("kafka_sasl_mechanism is set but kafka_security_protocol is not SASL_*")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            out.append("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path: Path | None = getattr(self, name)
            if path is not None and not tls:
                out.append(f"kafka_{name} is set but kafka_security_protocol has no TLS")
            elif path is not None and not path.is_file():
                out.append(f"kafka_{name} {path} is not a readable file")
        if self.compression in ("snappy", "lz4", "zstd"):
            from aiokafka import codec

            if not getattr(codec, f"has_{self.compression}")():
                out.append(f"kafka_compression={self.compression} needs the cramjam package")
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
        )
        context.check_hostname = self.ssl_check_hostname
        return context

    def options(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client takes for these settings."""
        out: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        context = self.ssl_context()
        if context is not None:
            out["ssl_context"] = context
        if self.sasl_mechanism is not None:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        return out

    def producer_options(self) -> dict[str, Any]:
        out = self.options()
        if self.compression != "none":
            out["compression_type"] = self.compression
        return out


def connection(target: str | KafkaConnection) -> KafkaConnection:
    """A bare bootstrap string is a plaintext connection without compression."""
    return target if isinstance(target, KafkaConnection) else KafkaConnection(target)
