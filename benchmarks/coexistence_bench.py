"""Sharing the gateway with the trader's bot, measured on this tree and on two commits of its history:
d82c738, the repository's first design, in the scenarios "lines" and "account updates"; ba67afb, the last
tree whose lines were not all held in one ledger (`ib/lines/ledger.py`), in "freed lines", next to this
tree with its rotating pool on (the default) and off, and 2d8e6a2, the last tree whose cancelled requests
kept feeding the contract's Ticker (the simulator sends the ticks in flight at a cancel, as IB does).

Every tree runs the same way: `v6-positions stream` in its own process (a commit's package extracted with
`git archive` into a temp dir, never checked out; see BOOT), the current simulator in its own process, and
the trader's bot as an unmodified ib_async client in this process.

Scenario "lines": the account has 100 lines; the bot holds 90; the stream has 50 active legs. Counts the
101s the stream got while the bot held the lines, then the bot frees its 90 lines and the time until the
stream holds a line for every leg (50) is measured.
Scenario "account updates": the stream runs; the bot connects with ib_async's defaults (it takes the one
account-updates subscription of the gateway); after a while the queued payloads' ages are read from
`position_queue` (how stale the batch queue's valuations got; a value IB re-confirms unchanged is not
rewritten, so a few unchanging payloads keep their age by design), and the 2100s everyone received are
counted.
Scenario "freed lines, pool on/off": the account has 100 lines; the bot holds 95 when the stream starts with
12 active legs; after `--bot-hold` s (25) the bot frees its lines and the stream's lines at the gateway are
sampled every second for `--after` s (35): lines over time, seconds until it holds a line per leg, its 101s
(total and the most in any second) and its probes per second (from its own status line).

Run: .venv/bin/python benchmarks/coexistence_bench.py [--hold 15] [--reclaim-timeout 60] [--observe 40]
     [--bot-hold 25] [--after 35] [--only pool]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from ib_async import IB, Contract

from v6_positions.lake import read_table
from v6_positions.simulator import load_book

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_bench import start_simulator as start_simulator_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIRST_DESIGN_COMMIT = "d82c738"
BEFORE_LEDGER_COMMIT = "ba67afb"
BEFORE_CANCEL_COMMIT = "2d8e6a2"  # the last tree whose cancels left their reqIds feeding the Ticker
STREAM_ID = 10
BOT_ID = 70

# Runs `v6_positions` from a given tree. The venv's editable install maps the package name to this checkout
# with a meta-path finder that wins over PYTHONPATH, so the finder is removed first.
BOOT = """
import runpy, sys
tree, target = sys.argv.pop(1), sys.argv.pop(1)
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, tree)
import v6_positions
assert v6_positions.__file__.startswith(tree), (v6_positions.__file__, tree)
if target.startswith("-m"):
    sys.argv[0] = target[2:]
    runpy.run_module(target[2:], run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<bench>", "exec"))
"""

ADD_LEGS = """
from v6_positions.lake.registry import StrategyRegistry
registry = StrategyRegistry(sys.argv[1])
for line in sys.stdin:
    conid, symbol, right, strike, expiry = line.split()
    registry.add_active(int(conid), symbol, right, float(strike), expiry, 1)
"""


def python_in(tree: Path, target: str) -> list[str]:
    """argv running `target` ("-m module" or code) with `v6_positions` imported from `tree`."""
    return [sys.executable, "-c", BOOT, str(tree), target]


def old_tree(tmp: Path, commit: str = FIRST_DESIGN_COMMIT) -> Path:
    """A commit's package, extracted (not checked out: the working tree is shared)."""
    target = tmp / f"old-{commit}"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "v6_positions"],
                             check=True, capture_output=True).stdout
    archive_path = tmp / f"old-{commit}.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(target, filter="data")
    return target


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("V6_")}
    env.update(extra)
    return env


def start_simulator(book: str, max_lines: int, portfolio_interval: float
                    ) -> tuple[subprocess.Popen, int, int]:
    """The current simulator in its own process (both designs meet the same gateway)."""
    return start_simulator_process(
        book, max_lines, "--portfolio-interval", str(portfolio_interval),
        python=python_in(ROOT, "-mv6_positions.cli"), env=env_for(),
    )


def stats(control_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{control_port}/stats", timeout=10) as response:
        return json.loads(response.read())


def errors_to(s: dict, client_id: int, code: int) -> int:
    return int(s.get("errors_by_client", {}).get(str(client_id), {}).get(str(code), 0))


def lines_of(s: dict, client_id: int) -> int:
    return int(s.get("lines_by_client", {}).get(str(client_id), 0))


def option_conids(book: str) -> list[tuple]:
    loaded = load_book(book)
    contracts = sorted((p.contract for p in loaded.positions.values() if p.contract.sec_type == "OPT"),
                       key=lambda c: c.conid)
    return [(c.conid, c.symbol, c.right, c.strike, c.expiry) for c in contracts]


def add_legs(tree: Path, lake: str, legs: list[tuple]) -> None:
    lines = "".join(" ".join(str(v) for v in leg) + "\n" for leg in legs)
    subprocess.run([*python_in(tree, ADD_LEGS), lake], input=lines, text=True, check=True,
                   env=env_for(), capture_output=True)


def start_stream(tree: Path, port: int, lake: str, seconds: float, status_to: Path | None = None,
                 **env: str) -> subprocess.Popen:
    """`v6-positions stream` from `tree`; its status lines go to `status_to` when given."""
    out = status_to.open("w") if status_to is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [*python_in(tree, "-mv6_positions.cli"), "--log-level", "ERROR", "stream", "--port", str(port),
             "--lake-uri", lake, "--client-id", str(STREAM_ID), "--duration", str(seconds),
             "--status-every", "5"],
            stdout=out, stderr=subprocess.DEVNULL, env=env_for(**env),
        )
    finally:
        if status_to is not None:
            out.close()


def wait_for(predicate, timeout: float, sleep=time.sleep, interval: float = 0.2) -> float | None:
    """Seconds until predicate() held, or None after `timeout`. `sleep=bot.sleep` keeps the bot's ib_async
    loop running meanwhile (its throttled requests and incoming ticks need it)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        sleep(interval)
    return None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def lines_scenario(tree: Path, tmp: Path, hold: float, reclaim_timeout: float) -> dict[str, object]:
    book, legs_count, bot_lines = "generated:300", 50, 90
    options = option_conids(book)
    legs, others = options[:legs_count], options[legs_count:legs_count + bot_lines]
    lake = str(tmp / f"lake-lines-{tree.name}")
    add_legs(tree, lake, legs)
    sim, port, control_port = start_simulator(book, 100, 180.0)
    bot = IB()
    stream = None
    try:
        bot.connect("127.0.0.1", port, clientId=BOT_ID, readonly=True, timeout=20)
        for conid, *_ in others:
            bot.reqMktData(Contract(conId=conid, exchange="SMART"))
        if wait_for(lambda: lines_of(stats(control_port), BOT_ID) == bot_lines, 30, bot.sleep) is None:
            raise RuntimeError(f"the bot could not take {bot_lines} lines")
        stream = start_stream(tree, port, lake, hold + reclaim_timeout + 60)
        wait_for(lambda: lines_of(stats(control_port), STREAM_ID) >= 100 - bot_lines, 30, bot.sleep)
        bot.sleep(hold)
        held_stats = stats(control_port)
        refused = errors_to(held_stats, STREAM_ID, 101)
        held = lines_of(held_stats, STREAM_ID)
        for ticker in list(bot.tickers()):
            bot.cancelMktData(ticker.contract)
        reclaimed = wait_for(lambda: lines_of(stats(control_port), STREAM_ID) >= legs_count, reclaim_timeout,
                             bot.sleep)
        final = stats(control_port)
        return {
            "held_while_bot": held, "refused_101": refused, "reclaim_s": reclaimed,
            "lines_after": lines_of(final, STREAM_ID), "legs": legs_count,
            "bot_101": errors_to(final, BOT_ID, 101), "orders": final["orders_received"],
        }
    finally:
        bot.disconnect()
        if stream is not None:
            stop(stream)
        stop(sim)


def account_scenario(tree: Path, tmp: Path, observe: float) -> dict[str, object]:
    book, legs_count, interval = "generated:100", 10, 5.0
    legs = option_conids(book)[:legs_count]
    lake = str(tmp / f"lake-acct-{tree.name}")
    add_legs(tree, lake, legs)
    sim, port, control_port = start_simulator(book, 100, interval)  # IB pushes every 180 s; 5 s here
    stream = start_stream(tree, port, lake, observe + 90, V6_VALUATION_INTERVAL_S=str(interval))
    bot = IB()
    try:
        wait_for(lambda: lines_of(stats(control_port), STREAM_ID) == legs_count, 30)
        time.sleep(2 * interval)  # the stream settles (the first design holds account updates by then)
        bot.connect("127.0.0.1", port, clientId=BOT_ID, timeout=20)  # ib_async defaults: takes them
        taken_at = datetime.now(UTC)
        bot.sleep(observe)
        frame = read_table(lake, "position_queue")
        queued = frame.filter(~frame["conid"].is_in([leg[0] for leg in legs]))
        now = datetime.now(UTC)
        ages = [(now - t).total_seconds() if t is not None else float("inf") for t in queued["payload_time"]]
        final = stats(control_port)
        return {
            "queued": len(ages), "age_median_s": statistics.median(ages) if ages else None,
        "changed_since_bot": sum(1 for t in queued["payload_time"] if t is not None and t >= taken_at),
            "age_max_s": max(ages) if ages else None,
            "holder": final["account_updates_holder"],
            "bot_2100": errors_to(final, BOT_ID, 2100), "stream_2100": errors_to(final, STREAM_ID, 2100),
            "stream_acct_requests": int(final.get("account_updates_requests_by_client", {})
                                        .get(str(STREAM_ID), 0)),
            "pacing": final["pacing_violations"], "orders": final["orders_received"],
        }
    finally:
        bot.disconnect()
        stop(stream)
        stop(sim)


def last_probes(status_file: Path) -> tuple[int, int]:
    """(won, made) from the stream's last status line (`probes=W/T`; none printed: no probe was made)."""
    lines = [line for line in status_file.read_text().splitlines() if "probes=" in line]
    if not lines:
        return 0, 0
    won, made = lines[-1].split("probes=")[1].split()[0].split("/")
    return int(won), int(made)


def pool_scenario(tree: Path, tmp: Path, name: str, bot_hold: float, after: float,
                  **env: str) -> dict[str, object]:
    """The bot holds 95 of 100 lines when the stream starts with 12 legs, then frees them."""
    book, legs_count, bot_lines = "generated:120", 12, 95
    options = option_conids(book)
    legs, others = options[:legs_count], options[legs_count:legs_count + bot_lines]
    lake = str(tmp / f"lake-pool-{name}")
    add_legs(tree, lake, legs)
    sim, port, control_port = start_simulator(book, 100, 180.0)
    status_file = tmp / f"status-{name}.txt"
    bot = IB()
    stream = None
    try:
        bot.connect("127.0.0.1", port, clientId=BOT_ID, readonly=True, timeout=20)
        for conid, *_ in others:
            bot.reqMktData(Contract(conId=conid, exchange="SMART"))
        if wait_for(lambda: lines_of(stats(control_port), BOT_ID) == bot_lines, 30, bot.sleep) is None:
            raise RuntimeError(f"the bot could not take {bot_lines} lines")
        stream = start_stream(tree, port, lake, bot_hold + after + 60, status_file, **env)
        started = time.monotonic()
        samples: list[tuple[float, int, int]] = []  # (seconds since the bot freed its lines, lines, 101s)

        def sample(since: float) -> None:
            s = stats(control_port)
            samples.append((time.monotonic() - since, lines_of(s, STREAM_ID), errors_to(s, STREAM_ID, 101)))

        while time.monotonic() - started < bot_hold:
            sample(started + bot_hold)
            bot.sleep(1.0)
        won_held, made_held = last_probes(status_file)  # while the bot held 95 lines: no probe can win
        refused_held = samples[-1][2] if samples else 0
        for ticker in list(bot.tickers()):
            bot.cancelMktData(ticker.contract)
        freed = time.monotonic()
        while time.monotonic() - freed < after:
            sample(freed)
            bot.sleep(1.0)
        sample(freed)
        stop(stream)
        run_s = time.monotonic() - started
        won, total = last_probes(status_file)
        per_second = [b[2] - a[2] for a, b in zip(samples, samples[1:], strict=False)]
        held = [lines for t, lines, _ in samples if t < 0]
        after_free = [(t, lines) for t, lines, _ in samples if t >= 0]

        def lines_at(at: float) -> int:  # the first sample at or after `at` s
            return next((lines for t, lines in after_free if t >= at), after_free[-1][1])

        return {
            "held_max": max(held, default=0),
            "lines_at": {at: lines_at(at) for at in (0, 5, 10, 20, 30, after)},
            "all_legs_s": next((t for t, lines in after_free if lines >= legs_count), None),
            "refused": samples[-1][2], "refused_peak": max(per_second, default=0),
            "probes": total, "probes_won": won, "probes_per_s": total / run_s,
            "probes_held": made_held, "probes_won_held": won_held, "refused_held": refused_held,
            "bot_101": errors_to(stats(control_port), BOT_ID, 101),
        }
    finally:
        bot.disconnect()
        if stream is not None:
            stop(stream)
        stop(sim)


def fmt(value: object) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.1f}"
    return str(value)


def print_table(rows: list[tuple[str, object]], results: dict[str, object]) -> None:
    names = list(results)
    width = max(len(label) for label, _ in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{n:>22}" for n in names))
    for label, get in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{fmt(get(results[n])):>22}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hold", type=float, default=15.0, help="seconds the bot holds its 90 lines")
    parser.add_argument("--reclaim-timeout", type=float, default=60.0)
    parser.add_argument("--observe", type=float, default=40.0, help="seconds the bot holds account updates")
    parser.add_argument("--bot-hold", type=float, default=25.0, help="seconds the bot holds 95 lines (pool)")
    parser.add_argument("--after", type=float, default=35.0, help="seconds sampled after the bot frees them")
    parser.add_argument("--only", choices=("all", "designs", "pool"), default="all")
    args = parser.parse_args()
    asyncio.set_event_loop(asyncio.new_event_loop())
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if args.only in ("all", "designs"):
            trees = {f"first design ({FIRST_DESIGN_COMMIT})": old_tree(tmp), "this design": ROOT}
            results = {}
            for name, tree in trees.items():
                print(f"running {name} ...", file=sys.stderr, flush=True)
                results[name] = (lines_scenario(tree, tmp, args.hold, args.reclaim_timeout),
                                 account_scenario(tree, tmp, args.observe))
            print_table(design_rows(args), results)
        if args.only in ("all", "pool"):
            runs = {
                f"before ({BEFORE_LEDGER_COMMIT}) pool on": (old_tree(tmp, BEFORE_LEDGER_COMMIT), {}),
                f"before ({BEFORE_CANCEL_COMMIT}) pool on": (old_tree(tmp, BEFORE_CANCEL_COMMIT), {}),
                "this design, pool on": (ROOT, {}),
                "this design, pool off": (ROOT, {"V6_ROTATION_LINES": "0"}),
            }
            pool_results = {}
            for index, (name, (tree, env)) in enumerate(runs.items()):
                print(f"running {name} ...", file=sys.stderr, flush=True)
                pool_results[name] = pool_scenario(tree, tmp, f"run{index}", args.bot_hold, args.after, **env)
            print()
            print(f"freed lines: 100 lines, the bot holds 95 for {args.bot_hold:.0f}s while the stream has "
                  f"12 active legs (V6_ROTATION_LINES default 10, or 0), then frees them")
            print_table(pool_rows(args), pool_results)


def design_rows(args: argparse.Namespace) -> list[tuple[str, object]]:
    return [
        ("lines held by the stream while the bot held 90/100", lambda r: r[0]["held_while_bot"]),
        (f"101s the stream got in {args.hold:.0f}s while the bot held them", lambda r: r[0]["refused_101"]),
        ("101s the bot got", lambda r: r[0]["bot_101"]),
        ("seconds to stream all 50 legs after the bot freed 90", lambda r: r[0]["reclaim_s"]),
        (f"lines held {args.reclaim_timeout:.0f}s after (legs: 50)", lambda r: r[0]["lines_after"]),
        (f"queued payload age, median s, bot on account updates {args.observe:.0f}s",
         lambda r: r[1]["age_median_s"]),
        ("queued payload age, max s", lambda r: r[1]["age_max_s"]),
        ("queued payloads with a new value since the bot connected",
         lambda r: f"{r[1]['changed_since_bot']}/{r[1]['queued']}"),
        ("account-updates requests by the stream", lambda r: r[1]["stream_acct_requests"]),
        ("2100s sent to the stream / to the bot", lambda r: f"{r[1]['stream_2100']} / {r[1]['bot_2100']}"),
        ("account updates held by (clientId) at the end", lambda r: r[1]["holder"]),
        ("pacing violations / orders received",
         lambda r: f"{r[1]['pacing']} / {r[0]['orders'] + r[1]['orders']}"),
    ]


def pool_rows(args: argparse.Namespace) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("lines held by the stream while the bot held 95 (most)", lambda r: r["held_max"]),
    ]
    for at in (0, 5, 10, 20, 30, args.after):
        rows.append((f"lines held {at:.0f}s after the bot freed its lines",
                     lambda r, at=at: r["lines_at"][at]))
    rows += [
        ("seconds until a line per leg (12)", lambda r: r["all_legs_s"]),
        ("101s the stream got while the bot held 95", lambda r: r["refused_held"]),
        ("probes won / made while the bot held 95", lambda r: f"{r['probes_won_held']} / {r['probes_held']}"),
        ("101s the stream got (total)", lambda r: r["refused"]),
        ("101s the stream got in its worst second", lambda r: r["refused_peak"]),
        ("probes per second (whole run)", lambda r: f"{r['probes_per_s']:.2f}"),
        ("probes won / made", lambda r: f"{r['probes_won']} / {r['probes']}"),
        ("101s the bot got", lambda r: r["bot_101"]),
    ]
    return rows


if __name__ == "__main__":
    main()
