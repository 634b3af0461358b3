"""`v6-positions status`: what the lake tells, no IB client needed (table versions, queue backlog, ages)."""

from __future__ import annotations

import argparse

from v6_positions.config import Settings
from v6_positions.lake.status import lake_status_lines


def register(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser("status", help="table versions, queue backlog, newest row ages")
    status.add_argument("--lake-uri", default=None)
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(lake_uri=args.lake_uri)
    for line in lake_status_lines(settings.lake_uri, settings.lake_storage_options or None):
        print(line)
    return 0
