"""The control HTTP API and the `simulate` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from polling import wait_until
from sim_helpers import connect_ib, control_call

from v6_positions.commands import simulate as cli
from v6_positions.simulator import demo_strategy_legs


def test_control_api_endpoints(sim) -> None:
    port = sim.control_port
    stats = control_call(port, "GET", "/stats")
    for key in (
        "lines_in_use",
        "max_lines_in_use",
        "errors",
        "orders_received",
        "pacing_violations",
        "clients",
        "messages_received",
    ):
        assert key in stats

    async def main() -> None:
        errors: list = []
        ib = await connect_ib(sim.port, errors=errors)
        events: list = []
        ib.positionEvent += events.append
        leg = demo_strategy_legs(sim.book)[0]
        stats = control_call(port, "GET", "/stats")
        assert stats["clients"][0]["client_id"] == 1 and stats["clients"][0]["lines"] == 0
        assert stats["messages_received"] > 0
        control_call(port, "POST", "/connectivity", {"code": 1102})
        await wait_until(lambda: any(code == 1102 for _, code, _ in errors))
        control_call(port, "POST", "/positions", {"account": "DU1000001", "conid": leg.conid, "position": 7})
        await wait_until(lambda: any(e.position == 7 for e in events))
        control_call(port, "POST", "/reset-stats")
        assert control_call(port, "GET", "/stats")["messages_received"] == 0
        closed = asyncio.Event()
        ib.disconnectedEvent += closed.set
        assert control_call(port, "POST", "/disconnect") == {"dropped": 1}
        await asyncio.wait_for(closed.wait(), 3)
        assert control_call(port, "POST", "/restart", {"down_seconds": 0.2}) == {"down_seconds": 0.2}
        await wait_until(lambda: control_call(port, "GET", "/stats")["accepting"])

    asyncio.run(main())
    with pytest.raises(urllib.error.HTTPError) as bad:
        control_call(port, "POST", "/connectivity", {"code": 42})
    assert bad.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as missing:
        control_call(port, "GET", "/nope")
    assert missing.value.code == 404


def test_simulate_parser_defaults_avoid_ib_ports() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate"])
    assert args.port not in (7496, 7497, 4001, 4002) and args.control_port not in (7496, 7497, 4001, 4002)
    assert args.book == "demo" and args.max_lines == 100 and args.portfolio_interval == 180.0
    assert args.handler is cli.run_simulate
    assert args.client_id_linger == 0.0 and args.step_minutes == 1.0
    with pytest.raises(ValueError, match="--step-minutes > 0"):
        cli.run_simulate(parser.parse_args(["simulate", "--step-minutes", "0"]))
    bad = parser.parse_args(["simulate", "--client-id-linger", "-1"])
    with pytest.raises(ValueError, match="--client-id-linger must be >= 0"):
        cli.run_simulate(bad)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_simulate_command_prints_listening_and_stops_on_a_signal(stop_signal: signal.Signals) -> None:
    # The real entry point, with a pipe for stdout and no PYTHONUNBUFFERED: the line must be flushed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "v6_positions.cli",
            "simulate",
            "--port",
            "0",
            "--control-port",
            "0",
            "--book",
            "generated:20",
            "--max-lines",
            "5",
            "--portfolio-interval",
            "1",
            "--seed",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        listening = proc.stdout.readline()
        assert re.fullmatch(r"listening on 127\.0\.0\.1:\d+\n", listening)
        port = int(listening.rsplit(":", 1)[1])
        control = int(proc.stdout.readline().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it accepts connections once it says so
        stats = control_call(control, "GET", "/stats")
        assert stats["max_lines"] == 5 and stats["positions"] == 20
        proc.send_signal(stop_signal)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulate_refuses_a_bad_book_file_at_start_naming_row_and_field(tmp_path) -> None:
    book = {
        "accounts": ["DU1"],
        "underlyings": [{"symbol": "SPY", "price": 500}],
        "positions": [
            {
                "account": "DU1",
                "conid": 1,
                "symbol": "SPY",
                "expiry": "20301220",
                "strike": 600,
                "right": "C",
                "position": 1,
            },
            {
                "account": "DU1",
                "conid": 2,
                "symbol": "SPY",
                "expiry": "20301220",
                "strike": 600,
                "right": "C",
                "position": 1,
                "avg_cst": 12.0,
            },
        ],
    }
    path = tmp_path / "book.json"
    path.write_text(json.dumps(book))
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--book", str(path), "--port", "0", "--control-port", "0"])
    with pytest.raises(ValueError, match=re.escape(f"book file {path}: positions[1].avg_cst: unknown field")):
        args.handler(args)
