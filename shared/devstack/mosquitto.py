"""Debian's Mosquitto MQTT broker on a free port, for the local stack and the tests: a password
file (no anonymous clients), persistence on disk (a restart keeps the sessions and their queued
QoS 1 messages), and optionally a TLS listener beside the plain one.

The broker's limits that matter to ingest are raised from Mosquitto's defaults: a persistent
session may queue 100,000 messages while ingest is away (default 1,000, beyond which QoS 1
messages are dropped), and 1,000 may be in flight unacknowledged (default 20), since ingest
acknowledges a batch only once it is on Kafka. ``deploy/`` sets the same.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.devstack.procs import apt_install, free_port, is_root, terminate, wait_for_port

USER = "qianshao"


def mosquitto_binary() -> Path:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        apt_install("mosquitto")
    return Path(found)


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class MosquittoBroker:
    data_dir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    port: int = field(default_factory=free_port)
    tls: Tls | None = None
    tls_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def username(self) -> str:
        return USER

    def start(self) -> MosquittoBroker:
        binary = mosquitto_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passwd = self.data_dir / "passwd"
        passwd.unlink(missing_ok=True)
        subprocess.run(
            [
                shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                *("-c", "-b", str(passwd), USER, self.password),
            ],
            check=True,
            capture_output=True,
        )
        lines = [
            # as root, Mosquitto would switch to its own user, which cannot read our files
            f"user {'root' if is_root() else ''}".strip(),
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 1000",
            f"log_dest file {self.data_dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls is not None:
            self.tls_port = self.tls_port or free_port()
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text("\n".join(line for line in lines if line != "user") + "\n")
        log_file = open(self.data_dir / "mosquitto.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(binary), "-c", str(conf)],
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout_s=30)
        if self.tls_port is not None:
            wait_for_port(self.tls_port, timeout_s=30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
