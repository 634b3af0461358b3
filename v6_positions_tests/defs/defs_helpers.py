"""Helpers shared by the Dagster tests (plain functions; fixtures live in conftest.py).

Bounded polls are `polling.wait_for`; demo legs are registered with `v6_positions.launch.register_demo_legs`.
"""

from __future__ import annotations

import dagster as dg

from v6_positions.lake.tables import read_table


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


def streamed_conids(lake_root: str) -> set[int]:
    return set(read_table(lake_root, "streamed_positions")["conid"].unique().to_list())
