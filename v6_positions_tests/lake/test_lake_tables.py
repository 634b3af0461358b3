"""Tables are created on first use with their declared schema; anything else at their location is refused."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from v6_positions.lake.errors import LakeError, LakeSchemaError
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.schemas import TABLES
from v6_positions.lake.tables import ensure_table, read_table, table_version


def test_every_table_is_created_with_its_declared_schema(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    for name, spec in TABLES.items():
        assert table_version(root, name) == -1
        assert read_table(root, name).schema == spec.polars_schema
        ensure_table(root, name)
        assert table_version(root, name) == 0
        table = DeltaTable(f"{root}/{name}")
        assert [f.name for f in table.schema().fields] == list(spec.columns)
        assert table.metadata().partition_columns == list(spec.partition_by)
    assert DeltaTable(f"{root}/streamed_positions").metadata().partition_columns == ["event_date"]


def test_existing_directory_that_is_not_delta_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    (root / "strategy_registry").mkdir(parents=True)
    (root / "strategy_registry" / "notes.txt").write_text("not a table")
    with pytest.raises(LakeSchemaError) as info:
        StrategyRegistry(str(root)).add_active(1, "SPY", "C", 500.0, "20261218", 1)
    message = str(info.value)
    assert "strategy_registry" in message and str(root / "strategy_registry") in message
    assert "not a Delta table" in message
    assert isinstance(info.value, LakeError) and isinstance(info.value, ValueError)


def test_table_with_another_schema_is_refused(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    pl.DataFrame({"conid": [1], "colour": ["red"]}).write_delta(f"{root}/position_queue")
    with pytest.raises(LakeSchemaError) as info:
        read_table(root, "position_queue")
    message = str(info.value)
    assert "position_queue" in message and f"{root}/position_queue" in message
    assert "colour" in message and "missing columns" in message


def test_wrong_column_type_is_named(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    spec = TABLES["positions"]
    frame = spec.empty_frame().with_columns(pl.col("conid").cast(pl.String))
    frame.write_delta(f"{root}/positions")
    with pytest.raises(LakeSchemaError, match="conid is string not long"):
        table_version(root, "positions")


def test_lake_root_that_is_a_file_is_refused_for_reads_and_writes(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    root.write_text("not a directory")
    with pytest.raises(LakeSchemaError, match=r"'position_queue' at .*lake/position_queue: the lake root"):
        read_table(str(root), "position_queue")  # not silently "no table yet"
    with pytest.raises(LakeSchemaError, match=r"'strategy_registry' at .*is a file, not a directory"):
        StrategyRegistry(str(root)).add_active(1, "SPY", "C", 500.0, "20261218", 1)
    assert root.read_text() == "not a directory"


def test_corrupt_delta_log_names_table_and_uri(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    log_dir = root / "position_queue" / "_delta_log"
    log_dir.mkdir(parents=True)
    (log_dir / f"{0:020d}.json").write_text("garbage{")
    with pytest.raises(LakeSchemaError) as info:
        read_table(str(root), "position_queue")
    message = str(info.value)
    assert message.startswith(f"table 'position_queue' at {root}/position_queue: cannot be opened")


def test_empty_delta_log_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    (root / "streamed_positions" / "_delta_log").mkdir(parents=True)
    with pytest.raises(LakeSchemaError, match="not a Delta table \\(no commit in _delta_log\\)"):
        table_version(str(root), "streamed_positions")
