"""The `v6-positions` command: each subsystem registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from v6_positions.config import ConfigError

# Modules that own a group of subcommands: each exposes `register(subparsers)`
# and sets `handler=fn(args) -> int` on its parsers.
SUBCOMMAND_MODULES = (
    "v6_positions.commands.registry",
    "v6_positions.commands.simulate",
    "v6_positions.commands.stream",
    "v6_positions.commands.status",
    "v6_positions.commands.launch",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v6-positions", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=log_format)
    try:
        return int(args.handler(args) or 0)
    except (ConfigError, ValueError) as exc:
        print(f"v6-positions {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
