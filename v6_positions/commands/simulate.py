"""`v6-positions simulate`: run the gateway simulator and its control API until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from v6_positions.simulator.book import Book, BookError
from v6_positions.simulator.book_file import load_book
from v6_positions.simulator.control import ControlServer
from v6_positions.simulator.feed import QUOTE_LATENCY
from v6_positions.simulator.server import GatewaySimulator

log = logging.getLogger(__name__)

# Not 7496/7497 (TWS) nor 4001/4002 (IB Gateway): the simulator must never be mistaken for a real gateway.
DEFAULT_PORT = 4010
DEFAULT_CONTROL_PORT = 4011


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("simulate", help="run the TWS-API gateway simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"API port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--control-port",
        type=int,
        default=DEFAULT_CONTROL_PORT,
        help=f"control HTTP port on loopback (default {DEFAULT_CONTROL_PORT})",
    )
    parser.add_argument(
        "--book", default="demo", help="demo | demo-fa | generated:N | FILE.json (default demo)"
    )
    parser.add_argument("--max-lines", type=int, default=100, help="market data lines (default 100)")
    parser.add_argument(
        "--portfolio-interval",
        type=float,
        default=180.0,
        help="seconds between portfolio pushes (default 180, as IB)",
    )
    parser.add_argument(
        "--tick-interval", type=float, default=0.25, help="seconds between ticks (default 0.25)"
    )
    parser.add_argument(
        "--step-minutes",
        type=float,
        default=1.0,
        help="market minutes each tick walks (default 1: a trading day in ~98 s at 0.25 s ticks; "
        "tick interval / 60 walks at the real market's pace)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random-walk seed (default 0)")
    parser.add_argument(
        "--client-id-linger",
        type=float,
        default=0.0,
        help="seconds a closed socket keeps its clientId and lines, as a gateway dropping a dead socket "
        "late (default 0)",
    )
    parser.add_argument(
        "--quote-latency",
        type=_latency,
        default=QUOTE_LATENCY,
        metavar="MIN,MAX",
        help="seconds from reqMktData to the first ticks, seeded uniform in [MIN, MAX] "
        f"(default {QUOTE_LATENCY[0]},{QUOTE_LATENCY[1]}, as IB; 0,0 = at once)",
    )
    parser.set_defaults(handler=run_simulate)


def _latency(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--quote-latency: expected MIN,MAX seconds, got {text!r}") from None
    if not 0 <= low <= high:
        raise argparse.ArgumentTypeError(f"--quote-latency: need 0 <= MIN <= MAX, got {text!r}")
    return low, high


def run_simulate(args: argparse.Namespace) -> int:
    if args.max_lines < 0 or min(args.portfolio_interval, args.tick_interval, args.step_minutes) <= 0:
        raise ValueError(
            "--max-lines must be >= 0; --portfolio-interval, --tick-interval, --step-minutes > 0"
        )
    if args.client_id_linger < 0:
        raise ValueError(f"--client-id-linger must be >= 0, got {args.client_id_linger}")
    try:
        book = load_book(args.book)
    except BookError as exc:
        raise ValueError(str(exc)) from None
    return asyncio.run(_serve(args, book))


async def _serve(args: argparse.Namespace, book: Book) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = GatewaySimulator(
        book,
        host=args.host,
        port=args.port,
        max_lines=args.max_lines,
        portfolio_interval=args.portfolio_interval,
        seed=args.seed,
        tick_interval=args.tick_interval,
        step_minutes=args.step_minutes,
        client_id_linger=args.client_id_linger,
        quote_latency=args.quote_latency,
    )
    async with sim, ControlServer(sim, "127.0.0.1", args.control_port) as control:
        print(f"listening on {args.host}:{sim.port}", flush=True)
        print(f"control API on http://127.0.0.1:{control.port}", flush=True)
        await stop.wait()
        log.info("stopping the simulator")
    return 0
