"""Two real processes upsert and mark the same position_queue table at the same time.

Each process: 500 upserts (the first 20 one by one, the rest in chunks) plus marks of the keys only it owns.
Keys 251..500 are upserted by BOTH processes (never marked), so concurrent MERGEs really collide.
Runs on a local directory and on an S3 API (whose conditional puts make concurrent commits safe). On S3 the
same keys come in fewer, larger commits: every MERGE reads each file of the (uncompacted) queue with
ranged GETs, so 100 commits per worker would take minutes on the test server.
Run as a script, this file is the worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
from lake_helpers import Lake, enqueue

from v6_positions.lake.queue import PositionQueue, QueueItem
from v6_positions.lake.tables import read_table

OPS_PER_PROCESS = 500
WORKERS = 2
# (upserts one by one, then chunk size) per storage
WORKLOAD = {"local": (20, 25), "s3": (6, 125)}


def conids_of(worker: int) -> range:
    return range(1, 501) if worker == 0 else range(251, 751)


def shared(conid: int) -> bool:
    return 251 <= conid <= 500


def expected_status(conid: int) -> str:
    if shared(conid) or conid % 3 == 2:
        return "pending"
    return "done" if conid % 3 == 0 else "failed"


def start_together(barrier: Path, worker: int, timeout_s: float = 60.0) -> None:
    """Announce this worker is ready, then wait (bounded) until every worker is: imports and table
    opening take seconds on a loaded machine, and a fixed start time would let one finish alone."""
    (barrier / f"ready-{worker}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.glob("ready-*"))) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other worker did not get ready within {timeout_s}s")
        time.sleep(0.005)


def run_worker(
    root: str,
    options: dict[str, str] | None,
    worker: int,
    barrier: Path,
    single_inserts: int,
    chunk_size: int,
) -> None:
    queue = PositionQueue(root, options)
    queue.backlog()  # open the table before the race starts
    conids = list(conids_of(worker))
    assert len(conids) == OPS_PER_PROCESS
    start_together(barrier, worker)
    for conid in conids[:single_inserts]:
        enqueue(queue, conid, "SPY", account="DU1", position=float(worker + 1))
        _mark_owned(queue, [conid])
    rest = conids[single_inserts:]
    for start in range(0, len(rest), chunk_size):
        chunk = rest[start : start + chunk_size]
        queue.insert_many(
            QueueItem(account="DU1", conid=c, symbol="SPY", position=float(worker + 1)) for c in chunk
        )
        _mark_owned(queue, chunk)


def _mark_owned(queue: PositionQueue, conids: list[int]) -> None:
    owned = [c for c in conids if not shared(c)]
    done = [("DU1", c) for c in owned if expected_status(c) == "done"]
    failed = [("DU1", c) for c in owned if expected_status(c) == "failed"]
    if done:
        queue.mark_done(done)
    if failed:
        queue.mark_failed(failed, "simulated failure")


def test_two_processes_lose_nothing_and_duplicate_nothing(lake: Lake, tmp_path: Path) -> None:
    root, options = lake.root, lake.options
    # Create the table before the race.
    enqueue(PositionQueue(root, options), 999_999, "WARMUP", account="DU0")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, root, json.dumps(options), str(worker), str(barrier)]
            + [str(n) for n in WORKLOAD[lake.storage]],
            stderr=subprocess.PIPE,
        )
        for worker in range(WORKERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]

    rows = read_table(root, "position_queue", options).filter(pl.col("account") == "DU1")
    expected = set(conids_of(0)) | set(conids_of(1))
    assert rows.height == len(expected) == 750
    assert rows.select(pl.struct("account", "conid").n_unique()).item() == rows.height
    assert set(rows["conid"].to_list()) == expected
    statuses = dict(zip(rows["conid"].to_list(), rows["status"].to_list(), strict=True))
    assert {c: statuses[c] for c in expected} == {c: expected_status(c) for c in expected}
    failed = rows.filter(pl.col("status") == "failed")
    assert failed["attempts"].to_list() == [1] * failed.height
    assert failed["last_error"].unique().to_list() == ["simulated failure"]
    positions = dict(zip(rows["conid"].to_list(), rows["position"].to_list(), strict=True))
    assert all(positions[c] == 1.0 for c in range(1, 251))
    assert all(positions[c] == 2.0 for c in range(501, 751))
    assert all(positions[c] in (1.0, 2.0) for c in range(251, 501))


if __name__ == "__main__":
    root_arg, options_arg, worker_arg, barrier_arg, single_arg, chunk_arg = sys.argv[1:7]
    run_worker(
        root_arg, json.loads(options_arg), int(worker_arg), Path(barrier_arg), int(single_arg), int(chunk_arg)
    )
