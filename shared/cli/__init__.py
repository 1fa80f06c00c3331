"""The qianshao command: run the services, administer a deployment, and the local stack.

Running:
  qianshao serve SERVICE         one service (ingest, risk, alerting, gateway)
  qianshao up                    the whole local stack with a demo rainstorm (a checkout only)
  qianshao fake-providers        the local fake SMS, WeChat and webhook providers

Administering:
  qianshao migrate               bring every schema up to date (checksums kept and checked)
  qianshao check-config          validate the settings in the environment, naming each problem
  qianshao operator add|passwd|disable|enable|list
  qianshao client add|rotate|list
  qianshao divisions load|show    the division codes and names places are named by
  qianshao dlq replay            put dead letters back on their topic
  qianshao dashboards            write the Grafana dashboards and their provisioning

Settings come from the environment (QIANSHAO_<SERVICE>_...), as the services read them; an
--env-file is read first. `qianshao COMMAND --help` says more.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from shared.cli import admin, divisions, ops, run
from shared.version import version

COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    run.register,
    admin.register,
    divisions.register,
    ops.register,
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qianshao",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"qianshao {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    code = args.run(args)
    sys.exit(code or 0)
