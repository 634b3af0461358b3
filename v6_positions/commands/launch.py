"""`v6-positions demo` and `v6-positions up`: start the whole system on one machine.

`demo` starts the gateway simulator with the demo book, registers the demo's strategy legs and starts
Dagster (webserver + daemon via `dagster dev`) bound to 127.0.0.1 with a project-local DAGSTER_HOME. `up` does
the same against a real IB Gateway/TWS (no simulator, no legs registered). Ctrl-C stops every process it
started: each child runs in its own session, so its whole process group (Dagster's run workers included) is
signalled.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from v6_positions.config import Settings

if TYPE_CHECKING:
    from v6_positions.simulator.book import Book

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTANCE_TEMPLATE = PROJECT_ROOT / "deploy" / "local" / "dagster.yaml"
WORKSPACE_FILE = PROJECT_ROOT / "workspace.yaml"
STOP_GRACE_S = 20.0


@dataclass(slots=True)
class ManagedProcess:
    """A child process in its own session, stopped with its whole process group."""

    name: str
    popen: subprocess.Popen[str]
    output_lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, argv: list[str], env: dict[str, str], echo: bool = True) -> ManagedProcess:
        popen = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        process = cls(name, popen)
        threading.Thread(target=process._pump, args=(echo,), daemon=True, name=f"{name}-output").start()
        return process

    def _pump(self, echo: bool) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output_lines.append(line.rstrip("\n"))
            if echo:
                sys.stdout.write(f"[{self.name}] {line}")
                sys.stdout.flush()

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.output_lines):
                return
            if self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(f"{self.name} exited with {code} before printing {text!r}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} did not print {text!r} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.popen.wait(timeout=5)
        # Grandchildren (Dagster's code server, run workers) may outlive the leader: sweep the group.
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass


def prepare_dagster_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    instance_file = home / "dagster.yaml"
    if not instance_file.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, instance_file)
    return home


def register_demo_legs(
    lake_uri: str,
    storage_options: Mapping[str, str] | None = None,
    *,
    book: Book | None = None,
    count: int | None = None,
) -> list[int]:
    """Register the strategy legs of `book` (default: the demo book) as ACTIVE, the first `count` of them
    (default all); returns their conids. The demo does this at start; tests do it to have legs to stream."""
    # Imported here so `v6-positions --help` stays fast.
    from v6_positions.lake.registry import StrategyRegistry
    from v6_positions.simulator import demo_strategy_legs, load_book

    registry = StrategyRegistry(lake_uri, None if storage_options is None else dict(storage_options))
    legs = demo_strategy_legs(load_book("demo") if book is None else book)[:count]
    for leg in legs:
        registry.add_active(
            conid=leg.conid,
            symbol=leg.symbol,
            right=leg.right,
            strike=leg.strike,
            expiry=leg.expiry,
            strategy_id=leg.strategy_id,
        )
    return [leg.conid for leg in legs]


def child_environment(settings: Settings, dagster_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Batch runs' per-contract materializations are stored as batches (see instance/sqlite_event_log.py).
    from v6_positions.instance.sqlite_event_log import EVENT_BATCH_ENV

    for name, value in EVENT_BATCH_ENV.items():
        env.setdefault(name, value)
    env.update(
        DAGSTER_HOME=str(dagster_home.resolve()),
        V6_LAKE_URI=settings.lake_uri,
        V6_IB_HOST=settings.ib_host,
        V6_IB_PORT=str(settings.ib_port),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_dagster(env: dict[str, str], host: str, port: int) -> ManagedProcess:
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "dev", "-w", str(WORKSPACE_FILE), "-h", host, "-p", str(port)]
    return ManagedProcess.start("dagster", argv, env)


# The demo's market walks at the real pace (a minute per minute). Faster, the marks of one valuation sweep
# of the queued positions (~90 s) would describe different markets (at the simulator's default, a minute per
# tick, a whole trading day), no one underlying price would fit them, and their model greeks would be wrong.
DEMO_TICK_INTERVAL_S = 0.25
DEMO_STEP_MINUTES = DEMO_TICK_INTERVAL_S / 60.0


def start_simulator(host: str, port: int, control_port: int, book: str) -> ManagedProcess:
    argv = [
        sys.executable, "-m", "v6_positions.cli", "simulate",
        "--host", host, "--port", str(port), "--control-port", str(control_port), "--book", book,
        "--tick-interval", str(DEMO_TICK_INTERVAL_S), "--step-minutes", str(DEMO_STEP_MINUTES),
    ]  # fmt: skip
    return ManagedProcess.start("simulator", argv, dict(os.environ, PYTHONUNBUFFERED="1"))


def serve_until_interrupted(processes: list[ManagedProcess]) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    exit_code = 0
    try:
        while not stop.wait(0.5):
            dead = [p for p in processes if p.popen.poll() is not None]
            if dead:
                print(f"{dead[0].name} exited with {dead[0].popen.returncode}; stopping", file=sys.stderr)
                exit_code = 1
                break
    finally:
        print("stopping…", flush=True)
        for process in reversed(processes):
            process.stop()
    return exit_code


def print_guide(ui_url: str, simulator: str | None) -> None:
    lines = [
        "",
        f"v6-positions is up.  Dagster UI: {ui_url}",
        f"  Lineage:  {ui_url}/asset-groups  (registry -> streamed_positions -> positions;"
        " position_queue -> queued_positions -> positions)",
        f"  Stream:   {ui_url}/runs  (one long-lived run launched by the supervisor sensor)",
        f"  Batches:  {ui_url}/automation  (the batch schedule's runs, one per minute)",
        "  Checks:   open an asset, tab 'Checks' (line budget, freshness, backlog, orphan legs)",
    ]
    if simulator:
        lines.append(f"  Simulator control API: {simulator}/stats")
    lines.append("Press Ctrl-C to stop everything.")
    print("\n".join(lines), flush=True)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(lake_uri=args.lake_uri, ib_port=args.ib_port)
    home = prepare_dagster_home(Path(args.dagster_home))
    processes: list[ManagedProcess] = []
    control_url = None
    try:
        if args.with_simulator:
            simulator = start_simulator(settings.ib_host, settings.ib_port, args.control_port, args.book)
            processes.append(simulator)
            simulator.wait_for_line("listening on", timeout_s=30)
            count = len(register_demo_legs(settings.lake_uri, settings.lake_storage_options))
            print(f"registered {count} demo strategy legs in {settings.lake_uri}", flush=True)
            control_url = f"http://{settings.ib_host}:{args.control_port}"
        dagster = start_dagster(child_environment(settings, home), args.ui_host, args.ui_port)
        processes.append(dagster)
        dagster.wait_for_line("Serving dagster-webserver", timeout_s=120)
    except BaseException:
        for process in reversed(processes):
            process.stop()
        raise
    print_guide(f"http://{args.ui_host}:{args.ui_port}", control_url)
    return serve_until_interrupted(processes)


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, with_simulator, help_text in (
        ("demo", True, "simulator + demo legs + Dagster, all on 127.0.0.1"),
        ("up", False, "Dagster against a real IB Gateway/TWS (V6_IB_HOST, V6_IB_PORT, ...)"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("--dagster-home", default=str(PROJECT_ROOT / ".dagster_home"))
        parser.add_argument("--lake-uri", default=None, help="overrides V6_LAKE_URI")
        parser.add_argument("--ib-port", type=int, default=4010 if with_simulator else None)
        parser.add_argument("--ui-host", default="127.0.0.1")
        parser.add_argument("--ui-port", type=int, default=3000)
        if with_simulator:
            parser.add_argument("--control-port", type=int, default=4011)
            parser.add_argument("--book", default="demo")
        parser.set_defaults(handler=run, with_simulator=with_simulator)
