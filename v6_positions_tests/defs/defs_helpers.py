"""Helpers shared by the Dagster tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import dagster as dg

from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.tables import read_table
from v6_positions.simulator import load_book
from v6_positions.simulator.book import demo_strategy_legs


def tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    sensor: str = "stream_supervisor",
) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    result = defs.resolve_sensor_def(sensor)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def queue_tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """A tick of the queue_partitions sensor (queue keys -> partitions, table observations)."""
    return tick(defs, instance, cursor, sensor="queue_partitions")


def apply_partitions(instance: dg.DagsterInstance, result: dg.SensorResult) -> list[str]:
    """What the sensor daemon does with the tick's partition requests."""
    added: list[str] = []
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        added.extend(request.partition_keys)
    return added


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def register_demo_legs(lake_root: str) -> set[int]:
    registry = StrategyRegistry(lake_root)
    legs = demo_strategy_legs(load_book("demo"))
    for leg in legs:
        registry.add_active(leg.conid, leg.symbol, leg.right, leg.strike, leg.expiry, leg.strategy_id)
    return {leg.conid for leg in legs}


def streamed_conids(lake_root: str) -> set[int]:
    return set(read_table(lake_root, "streamed_positions")["conid"].unique().to_list())
