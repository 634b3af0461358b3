"""The whole system under churn, then checked against the gateway: the soak test's and soak_bench's driver.

What runs, all real: the gateway simulator (demo book) with a bot holding most of the account's lines, so
the active legs outnumber the lines IB grants (legs stream, rotate and queue); the stream job in its own
process (a run worker) on a Dagster instance; the supervisor sensor, the queue sensor, the batch schedule
and the reconciliation evaluated by this driver (as the daemon would tick them), their runs executed on the
same instance; and a churn thread changing the account meanwhile: positions opened, resized and closed
(legs and queued contracts), brand-new contracts, legs flipped in the registry, a gateway restart and a 1101.
After a quiet period the book (`positions`) must equal the simulator's positions exactly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from v6_positions.commands.launch import register_demo_legs
from v6_positions.config import Settings
from v6_positions.definitions import build_definitions
from v6_positions.defs.jobs import BATCH_JOB_NAME
from v6_positions.defs.reconciliation import RECONCILE_JOB_NAME
from v6_positions.defs.resources import StreamSupervision
from v6_positions.defs.stream.heartbeat import STREAM_JOB_NAME
from v6_positions.lake.positions import read_positions
from v6_positions.lake.registry import StrategyRegistry
from v6_positions.simulator import SimulatorThread

WORKER = Path(__file__).parent / "defs" / "stream" / "stream_worker.py"
Key = tuple[str, int]
# Runs still log everything to the instance; only the console copy of every step event is left out.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(slots=True)
class BookDiff:
    ib_positions: int
    book_rows: int
    missing: list[Key] = field(default_factory=list)
    wrong_size: list[Key] = field(default_factory=list)
    closed_shown_open: list[Key] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.wrong_size or self.closed_shown_open)

    def line(self) -> str:
        return (
            f"IB positions {self.ib_positions}, book rows {self.book_rows}: missing {len(self.missing)}, "
            f"wrong size {len(self.wrong_size)}, closed shown open {len(self.closed_shown_open)}"
        )


def book_vs_gateway(lake_root: str, sim: SimulatorThread) -> BookDiff:
    held = {key: p.position for key, p in list(sim.book.positions.items()) if p.position}
    book = {
        (a, c): p
        for a, c, p in read_positions(lake_root).select("account", "conid", "position").iter_rows()
    }
    diff = BookDiff(ib_positions=len(held), book_rows=len(book))
    for key, size in sorted(held.items()):
        if key not in book:
            diff.missing.append(key)
        elif book[key] is None or abs(book[key] - size) > 1e-9:
            diff.wrong_size.append(key)
    diff.closed_shown_open = sorted(key for key in book if key not in held)
    return diff


@dataclass(slots=True)
class SoakReport:
    churn_s: float
    events: Counter
    batch_runs: int = 0
    batch_failures: int = 0
    reconciliations: int = 0
    reconcile_repairs: int = 0  # closes written + contracts re-queued by the scheduled reconciliations
    reconcile_found: Counter = field(default_factory=Counter)  # differences found, by kind
    stream_runs_launched: int = 0  # worker processes started on a supervisor's request
    stream_runs: int = 0  # stream runs the instance holds at the end
    converged_after_s: float | None = None  # quiet time until the book equalled the gateway
    final: BookDiff | None = None
    sim_stats: dict = field(default_factory=dict)


class Churn:
    """Seeded changes to the account and the registry, one every `every_s`, on its own thread."""

    def __init__(self, sim: SimulatorThread, lake_root: str, seed: int, legs: list[int]) -> None:
        self.sim = sim
        self.registry = StrategyRegistry(lake_root)
        self.rng = random.Random(seed)
        self.legs = set(legs)
        self.flipped: set[int] = set()
        self.events: Counter = Counter()
        self.errors: list[BaseException] = []
        self._next_conid = 990_000_001

    def one(self) -> None:
        book = self.sim.book
        held = [(key, p) for key, p in list(book.positions.items()) if p.position]
        legs = [(k, p) for k, p in held if k[1] in self.legs]
        queued = [(k, p) for k, p in held if k[1] not in self.legs]
        roll = self.rng.random()
        if roll < 0.25 and queued:
            (account, conid), p = self.rng.choice(queued)
            self.sim.set_position(account, conid, p.position + self.rng.choice([-2, -1, 1, 2]) or 1)
            self.events["queued resized"] += 1
        elif roll < 0.40 and queued:
            (account, conid), _ = self.rng.choice(queued)
            self.sim.set_position(account, conid, 0)
            self.events["queued closed"] += 1
        elif roll < 0.55:
            account = book.accounts[0]
            conid, self._next_conid = self._next_conid, self._next_conid + 1
            expiry = self.rng.choice(sorted({p.contract.expiry for _, p in held if p.contract.expiry}))
            strike = float(self.rng.randrange(400, 700, 5))
            size = self.rng.choice([-3, -1, 1, 2])
            self.sim.set_position(
                account, conid, size, symbol="SPY", expiry=expiry, strike=strike, right=self.rng.choice("CP")
            )
            self.events["new contract"] += 1
        elif roll < 0.70 and legs:
            (account, conid), p = self.rng.choice(legs)
            self.sim.set_position(account, conid, p.position + self.rng.choice([-1, 1]) or -1)
            self.events["leg resized"] += 1
        elif roll < 0.78 and legs:
            (account, conid), _ = self.rng.choice(legs)
            self.sim.set_position(account, conid, 0)
            self.events["leg closed"] += 1
        elif roll < 0.90 and (self.legs - self.flipped):
            conid = self.rng.choice(sorted(self.legs - self.flipped))
            self.registry.deactivate(conid)
            self.flipped.add(conid)
            self.events["leg deactivated"] += 1
        elif self.flipped:
            conid = self.rng.choice(sorted(self.flipped))
            c = book.contracts[conid]  # the simulator knows every contract it ever held
            self.registry.add_active(conid, c.symbol, c.right, c.strike, c.expiry, 1)
            self.flipped.discard(conid)
            self.events["leg reactivated"] += 1

    def run(self, until: float, every_s: float, faults: dict[float, Callable[[], None]]) -> None:
        started = time.monotonic()
        pending = sorted(faults.items())
        try:
            while time.monotonic() < until:
                if pending and time.monotonic() - started >= pending[0][0]:
                    _, fault = pending.pop(0)
                    fault()
                self.one()
                time.sleep(every_s)  # the churn's own pace (a rate, not a wait for something)
        except BaseException as exc:  # surfaced by the driver
            self.errors.append(exc)


class StreamWorker:
    """The stream job in its own process on the instance: the run a supervisor's request launches."""

    def __init__(self, instance: dg.DagsterInstance, env: dict[str, str]) -> None:
        self.log_path = Path(instance.root_directory) / f"soak-stream-{int(time.time() * 1000)}.log"
        self.env = {**os.environ, "DAGSTER_HOME": instance.root_directory, **env}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER)], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class SoakDriver:
    def __init__(
        self,
        sim: SimulatorThread,
        instance: dg.DagsterInstance,
        lake_root: str,
        *,
        seed: int = 7,
        bot_lines: int = 92,
        valuation_interval_s: float = 10.0,
    ) -> None:
        self.sim = sim
        self.instance = instance
        self.lake_root = lake_root
        self.seed = seed
        self.bot_lines = bot_lines
        settings = Settings(
            lake_uri=lake_root, ib_port=sim.port, flush_interval_s=0.5,
            valuation_interval_s=valuation_interval_s,
        )  # fmt: skip
        supervision = StreamSupervision(heartbeat_interval_s=0.5, progress_interval_s=1.0)
        self.defs = build_definitions(settings, supervision)
        self.worker = StreamWorker(instance, {
            "V6_LAKE_URI": lake_root, "V6_IB_PORT": str(sim.port), "V6_FLUSH_INTERVAL_S": "0.5",
            "V6_VALUATION_INTERVAL_S": str(valuation_interval_s),
        })  # fmt: skip
        self.queue_cursor: str | None = None
        self.supervisor_cursor: str | None = None
        self.report = SoakReport(churn_s=0.0, events=Counter())

    # -- what the daemon does each tick ----------------------------------------------------------------
    def _sensor(self, name: str, cursor: str | None) -> dg.SensorResult:
        resources = self.defs.resources
        context = dg.build_sensor_context(instance=self.instance, cursor=cursor, resources=resources)
        result = self.defs.resolve_sensor_def(name)(context)
        assert isinstance(result, dg.SensorResult)
        return result

    def supervise(self) -> None:
        result = self._sensor("stream_supervisor", self.supervisor_cursor)
        self.supervisor_cursor = result.cursor
        # The launcher: a request while the worker process still starts up (its run not yet in the
        # instance, as a queued run would be) launches nothing more.
        if result.run_requests and not self.worker.alive():
            self.report.stream_runs_launched += 1
            self.worker.start()

    def partitions(self) -> None:
        result = self._sensor("queue_partitions", self.queue_cursor)
        self.queue_cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)

    def batch(self) -> None:
        schedule = self.defs.resolve_schedule_def("queued_positions_batch")
        with dg.build_schedule_context(
            instance=self.instance, scheduled_execution_time=datetime.now(UTC), resources=self.defs.resources
        ) as context:
            data = schedule.evaluate_tick(context)
        for request in data.run_requests or []:
            # Every third run fetches from IB instead of using the stream's payloads, as a batch does
            # whenever the stream is judged down (or a user asks for it): its rows carry the fetch's time,
            # newer than the payloads the stream queues next. Closes must still win over them.
            fetch = "always" if self.report.batch_runs % 3 == 2 else "auto"
            config = {**_QUIET, "ops": {"queued_positions": {"config": {"zero_line_fetch": fetch}}}}
            result = self.defs.resolve_job_def(BATCH_JOB_NAME).execute_in_process(
                instance=self.instance, tags=request.tags, raise_on_error=False, run_config=config
            )
            self.report.batch_runs += 1
            self.report.batch_failures += not result.success

    def reconcile(self) -> None:
        job = self.defs.resolve_job_def(RECONCILE_JOB_NAME)
        result = job.execute_in_process(instance=self.instance, run_config=_QUIET)
        self.report.reconciliations += 1
        for evaluation in result.get_asset_check_evaluations():
            found = {k: v.value for k, v in evaluation.metadata.items()}
            if found.get("reconciled"):
                self.report.reconcile_repairs += int(found["requeued"]) + int(found["closes_written"])
                for kind in ("missing", "wrong_size", "closed_but_open_in_book"):
                    self.report.reconcile_found[kind] += int(found[kind])

    def tick(self, n: int, reconcile_every: int) -> None:
        self.supervise()
        self.partitions()
        self.batch()
        if reconcile_every and n % reconcile_every == reconcile_every - 1:
            self.reconcile()

    # -- the soak ----------------------------------------------------------------------------------------
    def run(self, churn_s: float, quiet_timeout_s: float, reconcile_every: int = 4) -> SoakReport:
        """Churn for `churn_s`, then tick until the book equals the gateway (at most `quiet_timeout_s`);
        the scheduled reconciliation runs every `reconcile_every` ticks (0: never, to see the pipeline on
        its own: the stream's reconciliation at connect still runs)."""
        legs = register_demo_legs(self.lake_root, book=self.sim.book)
        self.sim.hold_lines(self.bot_lines)  # the bot's lines: fewer granted than active legs
        self.supervise()  # no stream run yet: the supervisor requests one, the "launcher" starts it
        assert self.worker.alive(), "the supervisor requested no stream run"
        churn = Churn(self.sim, self.lake_root, self.seed, legs)
        faults = {
            churn_s * 0.35: lambda: self.sim.restart(down_seconds=2.0),
            churn_s * 0.65: lambda: self.sim.connectivity(1101),
        }
        started = time.monotonic()
        thread = threading.Thread(target=churn.run, args=(started + churn_s, 1.0, faults), daemon=True)
        thread.start()
        n = 0
        try:
            while thread.is_alive():
                self.tick(n, reconcile_every)
                n += 1
            if churn.errors:
                raise churn.errors[0]
            churn.events.update({"gateway restart": 1, "1101": 1})
            self.report.churn_s = time.monotonic() - started
            self.report.events = churn.events
            quiet = time.monotonic()
            while time.monotonic() - quiet < quiet_timeout_s:
                self.tick(n, reconcile_every)
                n += 1
                diff = book_vs_gateway(self.lake_root, self.sim)
                if diff.equal:
                    self.report.converged_after_s = time.monotonic() - quiet
                    break
            self.report.final = book_vs_gateway(self.lake_root, self.sim)
            self.report.sim_stats = self.sim.stats()
            self.report.stream_runs = len(self.instance.get_runs(dg.RunsFilter(job_name=STREAM_JOB_NAME)))
        finally:
            self.worker.stop()
        return self.report
