"""The rotation check: fails when an active leg's newest row is older than twice the staleness
bound the live stream run publishes; passes when no leg rotates."""

from __future__ import annotations

import time

from test_defs_checks import GATEWAY, healthy_lake, run_checks

from v6_positions.defs.stream.heartbeat import LINES_TAG, ROTATION_BOUND_TAG


def test_legs_within_twice_the_bound_pass_and_older_ones_fail(make_defs, instance, lake_root, add_stream_run):
    healthy_lake(lake_root, age_s=25.0)  # both active legs' newest rows are 25 s old
    run = add_stream_run(GATEWAY, heartbeat=time.time())
    instance.add_run_tags(run.run_id, {LINES_TAG: "2", ROTATION_BOUND_TAG: "15.0"})
    passed = run_checks(make_defs(), instance)["rotating_legs_within_bound"]
    assert passed.passed and passed.metadata["fail_above_s"].value == 30.0
    instance.add_run_tags(run.run_id, {ROTATION_BOUND_TAG: "10.0"})  # 25 s > 2 x 10 s
    failed = run_checks(make_defs(), instance)["rotating_legs_within_bound"]
    assert not failed.passed
    assert failed.metadata["legs_past_2x_bound"].value == 2
    assert "11 (" in failed.metadata["late_conids"].value


def test_no_rotation_or_no_live_stream_passes(make_defs, instance, lake_root, add_stream_run):
    healthy_lake(lake_root, age_s=600.0)
    assert run_checks(make_defs(), instance)["rotating_legs_within_bound"].passed  # no stream run at all
    run = add_stream_run(GATEWAY, heartbeat=time.time())
    instance.add_run_tags(run.run_id, {LINES_TAG: "2", ROTATION_BOUND_TAG: ""})
    evaluation = run_checks(make_defs(), instance)["rotating_legs_within_bound"]
    assert evaluation.passed and evaluation.metadata["rotation"].value == "no leg rotates"
