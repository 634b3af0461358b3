"""`v6-positions registry ...`: add, deactivate and list strategy legs."""

from __future__ import annotations

import argparse
import sys

from v6_positions.config import Settings
from v6_positions.lake.registry import StrategyRegistry

_LIST_COLUMNS = (
    "conid",
    "symbol",
    "sec_type",
    "right",
    "strike",
    "expiry",
    "multiplier",
    "strategy_id",
    "active",
    "updated_at",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="the strategy registry (active legs get streaming lines)")
    lake_help = "root of the Delta tables (default: $V6_LAKE_URI)"
    parser.add_argument("--lake-uri", default=None, help=lake_help)
    # Also accepted after the action (`registry list --lake-uri X`); SUPPRESS keeps a value given before it.
    lake_flag = argparse.ArgumentParser(add_help=False)
    lake_flag.add_argument("--lake-uri", default=argparse.SUPPRESS, help=lake_help)
    actions = parser.add_subparsers(dest="registry_command", required=True)

    add = actions.add_parser("add", help="add or update a leg and mark it active", parents=[lake_flag])
    add.add_argument("--conid", type=int, required=True)
    add.add_argument("--symbol", required=True)
    add.add_argument("--right", required=True, help="C or P")
    add.add_argument("--strike", type=float, required=True)
    add.add_argument("--expiry", required=True, help="YYYYMMDD")
    add.add_argument("--strategy-id", type=int, required=True)
    add.add_argument("--sec-type", default="OPT")
    add.add_argument("--multiplier", type=int, default=100)
    add.set_defaults(handler=_add)

    deactivate = actions.add_parser("deactivate", help="mark a leg inactive", parents=[lake_flag])
    deactivate.add_argument("--conid", type=int, required=True)
    deactivate.set_defaults(handler=_deactivate)

    listing = actions.add_parser("list", help="print every leg", parents=[lake_flag])
    listing.add_argument("--active-only", action="store_true")
    listing.set_defaults(handler=_list)


def _registry(args: argparse.Namespace) -> StrategyRegistry:
    settings = Settings.from_env().with_overrides(lake_uri=args.lake_uri)
    return StrategyRegistry(settings.lake_uri, settings.lake_storage_options or None)


def _add(args: argparse.Namespace) -> int:
    registry = _registry(args)
    registry.add_active(
        args.conid,
        args.symbol,
        args.right,
        args.strike,
        args.expiry,
        args.strategy_id,
        sec_type=args.sec_type,
        multiplier=args.multiplier,
    )
    print(f"conid {args.conid} ({args.symbol}) active for strategy {args.strategy_id}")
    return 0


def _deactivate(args: argparse.Namespace) -> int:
    if _registry(args).deactivate(args.conid):
        print(f"conid {args.conid} deactivated")
        return 0
    print(f"conid {args.conid}: no active leg with this conid")
    return 1


def format_table(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """A plain aligned text table (no dependency on a terminal width)."""
    cells = [[_cell(row[col]) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    lines = [columns, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _list(args: argparse.Namespace) -> int:
    """Valid legs on stdout; rows that break the table's contract on stderr (skipped by every reader)."""
    registry = _registry(args)
    legs = registry.all_legs()
    invalid = registry.invalid_rows()
    if args.active_only:
        legs = legs.filter(legs["active"])
    if legs.is_empty():
        print("no strategy legs registered")
    else:
        print(format_table(legs.to_dicts(), _LIST_COLUMNS))
        active = int(legs["active"].sum())
        print(f"\n{legs.height} legs, {active} active")
    if invalid:
        print(f"{len(invalid)} invalid registry rows skipped (readers ignore them):", file=sys.stderr)
        for row in invalid:
            print(f"  {row}", file=sys.stderr)
    return 0
