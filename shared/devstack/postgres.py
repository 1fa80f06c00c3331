"""A throw-away PostgreSQL cluster from Debian's package, started with initdb on a free port, with
TimescaleDB preloaded when it is installed (``scripts/timescaledb.sh`` builds it from
``vendor/timescaledb``).

As root, the cluster runs as the ``postgres`` system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.devstack.procs import apt_install, free_port, is_root, terminate, wait_for_port


def find_pg_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def timescaledb_installed(bin_dir: Path) -> bool:
    """Whether TimescaleDB's loader library is in this PostgreSQL's library directory."""
    return (bin_dir.parent / "lib" / "timescaledb.so").exists()


def ensure_postgres_installed() -> Path:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        apt_install("postgresql")
        bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found after installing the postgresql package")
    return bin_dir


@dataclass
class PostgresServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "qianshao"
    database: str = "qianshao"
    proc: subprocess.Popen[bytes] | None = None
    # None: preload TimescaleDB when it is installed; False: start without it (what a server
    # looks like when the package is installed but not yet in shared_preload_libraries)
    timescaledb: bool | None = None
    settings: dict[str, str] = field(default_factory=dict)  # more -c name=value

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if is_root():
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def start(self) -> PostgresServer:
        bin_dir = ensure_postgres_installed()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if is_root():
            shutil.chown(self.data_dir, "postgres", "postgres")
            os.chmod(self.data_dir, 0o700)
            # the parent must be traversable by the postgres user
            for parent in self.data_dir.parents:
                if str(parent) in ("/", "/tmp"):
                    break
                mode = parent.stat().st_mode
                os.chmod(parent, mode | 0o711)
        if fresh:
            subprocess.run(
                self._as_owner(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.user,
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log_file = open(self.data_dir.parent / f"postgres-{self.port}.log", "ab")  # noqa: SIM115
        if is_root():
            shutil.chown(log_file.name, "postgres", "postgres")
        self.proc = subprocess.Popen(
            self._as_owner(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={self.data_dir}",
                    "-c",
                    "fsync=off" if os.environ.get("QIANSHAO_PG_FAST") else "fsync=on",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=256MB",
                    *self._server_settings(bin_dir),
                ]
            ),
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout_s=60)
        self._wait_ready(bin_dir)
        if fresh:
            subprocess.run(
                [
                    str(bin_dir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    self.database,
                ],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def _server_settings(self, bin_dir: Path) -> list[str]:
        settings = dict(self.settings)
        preload = self.timescaledb
        if preload is None:
            preload = timescaledb_installed(bin_dir)
        if preload:
            settings.setdefault("shared_preload_libraries", "timescaledb")
            settings.setdefault("timescaledb.telemetry_level", "off")
            # the policies' jobs, and the launcher's, next to the parallel workers
            settings.setdefault("timescaledb.max_background_workers", "8")
            settings.setdefault("max_worker_processes", "16")
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    def _wait_ready(self, bin_dir: Path) -> None:
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = subprocess.run(
                [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                check=False,
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not become ready")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout_s=30)
            self.proc = None

    def kill(self) -> None:
        """Stop the server abruptly (fault injection)."""
        if self.proc is not None:
            subprocess.run(["pkill", "-9", "-P", str(self.proc.pid)], check=False)
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
