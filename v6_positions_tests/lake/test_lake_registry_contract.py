"""strategy_registry is the bots' interface: extra columns are fine, bad rows are skipped and reported, a
missing or incompatible required column is refused naming it — with bots writing through deltalake and polars
exactly as the README invites them to."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from lake_helpers import Lake

from v6_positions.commands import registry as cli
from v6_positions.lake.errors import LakeSchemaError
from v6_positions.lake.registry import InvalidRegistryRow, StrategyRegistry
from v6_positions.lake.tables import read_table

BOT_SCHEMA = {
    "conid": pl.Int64,
    "symbol": pl.String,
    "sec_type": pl.String,
    "right": pl.String,
    "strike": pl.Float64,
    "expiry": pl.String,
    "multiplier": pl.Int64,
    "strategy_id": pl.Int64,
    "active": pl.Boolean,
    "updated_at": pl.Datetime("us", "UTC"),
}


def bot_rows(*rows: dict) -> pl.DataFrame:
    """Rows as a bot builds them: every declared column, plus whatever extra it likes."""
    base = {
        "symbol": "SPY",
        "sec_type": "OPT",
        "right": "C",
        "strike": 600.0,
        "expiry": "20261218",
        "multiplier": 100,
        "strategy_id": 5,
        "active": True,
        "updated_at": datetime.now(UTC),
    }
    full = [{**base, **row} for row in rows]
    extra = {k: pl.String for row in full for k in row if k not in BOT_SCHEMA}
    return pl.DataFrame(full, schema={**BOT_SCHEMA, **extra})


def registry_with_bot_rows(lake: Lake, frame: pl.DataFrame, **write_options: str) -> StrategyRegistry:
    """A registry holding our leg 1, then `frame` appended by a bot through deltalake."""
    registry = StrategyRegistry(lake.root, lake.options, poll_interval_s=0.0)
    registry.add_active(1, "SPY", "C", 600.0, "20261218", 1)
    write_deltalake(
        lake.uri("strategy_registry"), frame, mode="append", storage_options=lake.options, **write_options
    )
    return registry


def run_list(lake_root: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`v6-positions registry list` on a local lake (the CLI takes storage options from the environment)."""
    parser = argparse.ArgumentParser(prog="v6-positions")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["registry", "--lake-uri", lake_root, "list"])
    code = args.handler(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_bot_column_written_with_deltalake_schema_merge_is_ignored_by_every_reader(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    noted = bot_rows({"conid": 2, "note": "opened by bot A"})
    registry = registry_with_bot_rows(lake, noted, schema_mode="merge")
    assert "note" in [
        f.name
        for f in DeltaTable(lake.uri("strategy_registry"), storage_options=lake.options).schema().fields
    ]
    assert registry.active_conids() == {1, 2}
    assert registry.invalid_rows() == []
    assert read_table(lake.root, "strategy_registry", lake.options).height == 2
    # our own upserts and deactivations work on the wider table and leave the bot's column alone
    registry.add_active(2, "SPY", "C", 605.0, "20261218", 5)
    assert registry.deactivate(1)
    assert StrategyRegistry(lake.root, lake.options).active_conids() == {2}
    notes = dict(
        pl.read_delta(lake.uri("strategy_registry"), storage_options=lake.options)
        .select("conid", "note")
        .iter_rows()
    )
    assert notes == {1: None, 2: "opened by bot A"}
    if lake.storage == "local":
        code, out, err = run_list(lake.root, capsys)
        assert code == 0 and "2 legs, 1 active" in out and err == ""


def test_a_bot_column_written_with_polars_schema_merge_is_ignored(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    StrategyRegistry(root).add_active(1, "SPY", "C", 600.0, "20261218", 1)
    bot_rows({"conid": 3, "bot": "theta-harvester", "note": "roll on Friday"}).write_delta(
        f"{root}/strategy_registry", mode="append", delta_write_options={"schema_mode": "merge"}
    )
    registry = StrategyRegistry(root)
    assert registry.active_conids() == {1, 3}
    assert set(registry.all_legs().columns) == set(BOT_SCHEMA)  # readers see the declared columns only


def test_bad_rows_are_skipped_and_reported_never_stopping_readers(
    lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = bot_rows(
        {"conid": 10, "right": "X"},
        {"conid": 11, "strike": 0.0},
        {"conid": 12, "expiry": None},
        {"conid": 13, "active": None},
        {"conid": 14, "right": "put", "multiplier": None, "sec_type": None},  # normalised, not bad
    )
    registry = registry_with_bot_rows(lake, bad)
    assert registry.active_conids() == {1, 14}
    leg = next(leg for leg in registry.active_legs() if leg.conid == 14)
    assert (leg.right, leg.sec_type, leg.multiplier) == ("P", "OPT", 100)
    invalid = registry.invalid_rows()
    assert [(r.conid, r.field, r.value) for r in invalid] == [
        (10, "right", "X"),
        (11, "strike", 0.0),
        (12, "expiry", None),
        (13, "active", None),
    ]
    assert all(isinstance(r, InvalidRegistryRow) and r.reason for r in invalid)
    assert str(invalid[0]) == "conid 10: right='X': must be C or P (CALL/PUT accepted)"
    if lake.storage == "local":
        code, out, err = run_list(lake.root, capsys)
        assert code == 0 and "2 legs, 2 active" in out
        assert "4 invalid registry rows skipped" in err and "conid 11: strike=0.0" in err
        assert "conid 10" not in out


def test_a_second_row_for_a_conid_newest_wins_and_the_other_is_reported(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    registry = StrategyRegistry(root)
    registry.add_active(7, "SPY", "C", 600.0, "20261218", 1)
    later = datetime(2099, 1, 1, tzinfo=UTC)
    bot_rows({"conid": 7, "strike": 610.0, "strategy_id": 9, "updated_at": later}).write_delta(
        f"{root}/strategy_registry", mode="append"
    )
    legs = registry.active_legs()
    assert [(leg.conid, leg.strike, leg.strategy_id) for leg in legs] == [(7, 610.0, 9)]
    (dup,) = registry.invalid_rows()
    assert dup.conid == 7 and dup.field == "conid" and "2099-01-01" in dup.reason


def test_a_missing_required_column_or_an_incompatible_type_is_refused_naming_it(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    uri = f"{root}/strategy_registry"
    bot_rows({"conid": 1}).drop("strike").write_delta(uri)
    with pytest.raises(LakeSchemaError) as missing:
        StrategyRegistry(root).active_conids()
    message = str(missing.value)
    assert "strategy_registry" in message and "missing required columns ['strike']" in message
    root2 = str(tmp_path / "lake2")
    bot_rows({"conid": 1}).with_columns(pl.col("strike").cast(pl.String)).write_delta(
        f"{root2}/strategy_registry"
    )
    with pytest.raises(LakeSchemaError, match=r"strike is string \(not compatible with double\)"):
        read_table(root2, "strategy_registry")


def test_narrower_types_a_bot_created_the_table_with_are_read_and_written(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    frame = bot_rows({"conid": 1}, {"conid": 2}).with_columns(
        pl.col("conid").cast(pl.Int32),
        pl.col("strategy_id").cast(pl.Int32),
        pl.col("strike").cast(pl.Float32),
        pl.col("updated_at").dt.replace_time_zone(None),
    )
    frame.write_delta(f"{root}/strategy_registry")
    registry = StrategyRegistry(root)
    assert registry.active_conids() == {1, 2} and registry.invalid_rows() == []
    assert registry.active_legs()[0].updated_at.tzinfo is not None
    registry.add_active(3, "QQQ", "P", 450.5, "20261218", 2)
    assert registry.deactivate(1)
    assert StrategyRegistry(root).active_conids() == {2, 3}
