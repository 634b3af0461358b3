"""`v6-positions stream` as a real subprocess: SIGTERM mid-stream loses nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from v6_positions.lake import read_table


def test_sigterm_mid_stream_leaves_every_received_update_in_delta(sim, kit):
    kit.register_demo_legs(sim)
    env = {**os.environ, "V6_FLUSH_INTERVAL_S": "30"}  # nothing flushes on its own: stop must flush it all
    proc = subprocess.Popen(
        [sys.executable, "-m", "v6_positions.cli", "--log-level", "WARNING", "stream",
         "--port", str(sim.port), "--lake-uri", kit.root, "--client-id", "31", "--duration", "60",
         "--status-every", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while not any(_updates(line) >= 100 for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        assert read_table(kit.root, "streamed_positions").height == 0  # all still buffered
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    final = next(line for line in lines if line.startswith("stopped after"))
    received = int(re.search(r"updates_received=(\d+)", final).group(1))
    assert received >= 100
    last_status = [line for line in lines if "coalesced=" in line][-1]
    coalesced = int(re.search(r"coalesced=(\d+)", last_status).group(1))
    assert re.search(r"dropped=0\b", last_status), last_status
    # Every update received is in Delta, or was superseded before the flush by a newer one of its contract.
    frame = read_table(kit.root, "streamed_positions")
    assert frame.height == received - coalesced
    assert frame["conid"].n_unique() == 12
    assert re.search(r"lines=\d+/100", "".join(lines))


def _updates(line: str) -> int:
    match = re.search(r"updates=(\d+)", line)
    return int(match.group(1)) if match else 0
