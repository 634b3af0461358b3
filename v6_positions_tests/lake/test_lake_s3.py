"""What makes the lake safe and usable on an S3 API: conditional commits, bounded retries and staleness,
clear errors.

The lake tests that take the `lake` fixture already run every table operation on S3; these cover what only
exists there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from deltalake.exceptions import CommitFailedError
from lake_helpers import enqueue, queue_version
from s3_server import REGION, S3Server

from v6_positions.commands import registry as cli
from v6_positions.lake.errors import LakeError
from v6_positions.lake.queue import PositionQueue
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.lake.schemas import TABLES
from v6_positions.lake.tables import ensure_table, read_table, retry_on_conflict, table_version


def test_every_commit_is_a_conditional_put_the_server_enforces(tmp_path: Path) -> None:
    """delta-rs 1.x commits version N by PUT `_delta_log/N.json` with `If-None-Match: *`: the store, not a
    lock, decides which of two writers gets version N; the loser re-reads and retries (no lost update)."""
    commit_log = tmp_path / "commits.txt"
    with S3Server(commit_log=str(commit_log)) as s3:
        bucket = s3.new_bucket()
        root, options = f"s3://{bucket}/lake", s3.storage_options()
        queue = PositionQueue(root, options)
        enqueue(queue, 1, "SPY", account="A")
        enqueue(queue, 2, "SPY", account="A")
        queue.mark_done([("A", 1)])
        StrategyRegistry(root, options).add_active(7, "SPY", "C", 500.0, "20261218", 1)

        commits = [line.split() for line in commit_log.read_text().splitlines()]
        queue_commits = [c for c in commits if "/position_queue/" in c[0]]
        versions = range(queue_version(queue) + 1)  # every version of the table, each written exactly once
        assert [c[0].rsplit("/", 1)[1] for c in queue_commits] == [f"{v:020d}.json" for v in versions]
        assert len(versions) >= 4  # create, two inserts, one mark
        assert any("/strategy_registry/" in c[0] for c in commits)
        assert {(condition, status) for _, condition, status in commits} == {("*", "200")}

        # The server refuses a second writer of an existing version, as S3 does.
        key = queue_commits[-1][0].split("/", 2)[2]
        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            region_name=REGION,
            aws_access_key_id=options["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=options["AWS_SECRET_ACCESS_KEY"],
        )
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=bucket, Key=key, Body=b"{}", IfNoneMatch="*")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        assert queue.backlog().due == 1 and queue.keys("done") == [("A", 1)]


def test_conditional_put_switched_off_fails_loudly_naming_the_table(s3_server: S3Server) -> None:
    root = f"s3://{s3_server.new_bucket()}/lake"
    options = s3_server.storage_options(conditional_put="disabled")
    with pytest.raises(LakeError) as info:
        enqueue(PositionQueue(root, options), 1, "SPY", account="A")
    message = str(info.value)
    assert "position_queue" in message and "conditional put is disabled" in message
    assert read_table(root, "position_queue", s3_server.storage_options()).is_empty()


def test_registry_on_s3_sees_changes_within_its_poll_interval_and_serves_the_cache(
    s3_server: S3Server,
) -> None:
    root, options = f"s3://{s3_server.new_bucket()}/lake", s3_server.storage_options()
    writer = StrategyRegistry(root, options)
    reader = StrategyRegistry(root, options, poll_interval_s=0.5)
    assert not reader.is_active(1)
    writer.add_active(1, "SPY", "C", 500.0, "20261218", 1)
    deadline = time.monotonic() + 10
    while not reader.is_active(1):  # bounded staleness: seen at the next poll, not at once
        assert time.monotonic() < deadline, "the reader never saw the new leg"
        time.sleep(0.05)
    started = time.perf_counter()
    for _ in range(2_000):
        assert reader.is_active(1)
    per_call = (time.perf_counter() - started) / 2_000
    # Between polls the answer comes from memory; a request per call would take milliseconds.
    assert per_call < 500e-6, f"is_active took {per_call * 1e6:.1f} µs per call on S3"


def test_unreachable_store_names_the_table_and_never_the_secret() -> None:
    secret = "v6-SECRET-must-not-leak-0451"
    options = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
        "AWS_ACCESS_KEY_ID": "v6-key",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",
        "max_retries": "1",
        "retry_timeout": "2s",
    }
    with pytest.raises(LakeError) as info:
        read_table("s3://nowhere/lake", "strategy_registry", options)
    message = str(info.value)
    assert "strategy_registry" in message and "s3://nowhere/lake/strategy_registry" in message
    assert secret not in message and secret not in repr(info.value)


def test_every_table_is_created_on_s3_with_its_declared_schema(s3_server: S3Server) -> None:
    root, options = f"s3://{s3_server.new_bucket()}/lake", s3_server.storage_options()
    for name, spec in TABLES.items():
        assert table_version(root, name, options) == -1
        table = ensure_table(root, name, options)
        assert [f.name for f in table.schema().fields] == list(spec.columns)
        assert table.metadata().partition_columns == list(spec.partition_by)
        assert read_table(root, name, options).schema == spec.polars_schema


def test_registry_cli_on_s3_configured_by_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a user does: V6_LAKE_URI + V6_LAKE_STORAGE_OPTIONS, then `v6-positions registry ...`."""
    secret = "v6-cli-secret-7f3a"
    root = f"s3://{s3_server.new_bucket()}/lake"
    options = s3_server.storage_options(AWS_SECRET_ACCESS_KEY=secret)
    monkeypatch.setenv("V6_LAKE_URI", root)
    monkeypatch.setenv("V6_LAKE_STORAGE_OPTIONS", json.dumps(options))
    parser = argparse.ArgumentParser(prog="v6-positions")
    cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.handler(args)

    add = ("--conid", "42", "--symbol", "SPY", "--right", "P", "--strike", "480", "--expiry", "20261218")
    assert run("registry", "add", *add, "--strategy-id", "3") == 0
    assert run("registry", "list") == 0
    out, err = capsys.readouterr()
    assert "42" in out and "SPY" in out
    assert secret not in out + err
    assert StrategyRegistry(root, options).active_conids() == {42}


def test_a_writer_that_keeps_losing_the_race_gives_up_loudly_within_its_budget() -> None:
    """Retries are bounded by time (an attempt on S3 is slow, so a count alone would starve a writer there,
    or wait for minutes): a commit that always loses fails with a clear error, and nothing is half-done."""
    attempts: list[float] = []

    def always_loses() -> None:
        attempts.append(time.monotonic())
        raise CommitFailedError("a concurrent transaction added new data")

    started = time.monotonic()
    with pytest.raises(LakeError, match=r"position_queue mark_done: gave up after \d+ conflicting commits"):
        retry_on_conflict(always_loses, what="position_queue mark_done", budget_s=0.5)
    assert len(attempts) >= 3  # it did retry, with backoff
    assert time.monotonic() - started < 0.5 + 1.5  # and stopped at its budget (+ at most one backoff)

    wins_third_time: list[int] = []

    def loses_twice() -> str:
        wins_third_time.append(1)
        if len(wins_third_time) < 3:
            raise CommitFailedError("a concurrent transaction added new data")
        return "committed"

    assert retry_on_conflict(loses_twice, what="position_queue insert") == "committed"
