"""StrategyRegistry: upserts by conid, deactivation, and a cached is_active that follows table versions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from lake_helpers import Lake

from v6_positions.lake.registry import RegistryLeg, StrategyRegistry
from v6_positions.lake.tables import read_table


def _leg(registry: StrategyRegistry, conid: int, strike: float = 500.0, strategy_id: int = 1) -> None:
    registry.add_active(conid, "SPY", "C", strike, "20261218", strategy_id)


def test_add_active_upserts_by_conid(lake: Lake) -> None:
    registry = StrategyRegistry(lake.root, lake.options)
    assert registry.version() == -1 and registry.active_conids() == set()
    _leg(registry, 1)
    _leg(registry, 2)
    _leg(registry, 1, strike=510.0, strategy_id=9)
    rows = read_table(lake.root, "strategy_registry", lake.options).sort("conid")
    assert rows["conid"].to_list() == [1, 2]
    assert rows.row(0, named=True)["strike"] == 510.0 and rows.row(0, named=True)["strategy_id"] == 9
    legs = registry.active_legs()
    assert [leg.conid for leg in legs] == [1, 2] and isinstance(legs[0], RegistryLeg)
    assert legs[0].multiplier == 100 and legs[0].expiry == "20261218" and legs[0].active


def test_deactivate_and_reactivate(lake: Lake) -> None:
    registry = StrategyRegistry(lake.root, lake.options)
    assert registry.deactivate(1) is False  # no table yet
    _leg(registry, 1)
    _leg(registry, 2)
    assert registry.deactivate(1) is True
    assert registry.deactivate(1) is False
    assert registry.deactivate(404) is False
    assert not registry.is_active(1) and registry.is_active(2)
    assert registry.active_conids() == {2}
    assert registry.all_legs().height == 2
    _leg(registry, 1)
    assert registry.is_active(1)


def test_is_active_serves_the_cache_until_the_version_changes(tmp_path: Path) -> None:
    writer = StrategyRegistry(str(tmp_path))
    reader = StrategyRegistry(str(tmp_path))
    assert not reader.is_active(1)
    _leg(writer, 1)
    assert reader.is_active(1)  # new version seen on the very next call
    version = reader.version()
    assert reader.refresh() is False
    started = time.perf_counter()
    for _ in range(10_000):
        assert reader.is_active(1)
    per_call = (time.perf_counter() - started) / 10_000
    assert per_call < 200e-6, f"is_active took {per_call * 1e6:.1f} µs per call"
    assert reader.version() == version  # no reload, no write
    writer.deactivate(1)
    assert reader.refresh() is True
    assert not reader.is_active(1)


def test_change_by_another_process_is_visible(lake: Lake) -> None:
    registry = StrategyRegistry(lake.root, lake.options, poll_interval_s=0.0)
    _leg(registry, 1)
    assert registry.is_active(1) and not registry.is_active(2)
    script = (
        "import json, sys\nfrom v6_positions.lake.registry import StrategyRegistry\n"
        "r = StrategyRegistry(sys.argv[1], json.loads(sys.argv[2]))\n"
        "r.add_active(2, 'QQQ', 'P', 400.0, '20261218', 2)\nr.deactivate(1)\n"
    )
    options = json.dumps(lake.options)
    subprocess.run([sys.executable, "-c", script, lake.root, options], check=True, timeout=60)
    assert registry.is_active(2)
    assert not registry.is_active(1)
    assert registry.active_conids() == {2}
