"""TWS-API gateway simulator: the unmodified ib_async client connects to it over TCP as to IB Gateway.

framing (wire) -> session (one connection) -> dispatch (request table) -> the state owners the server wires
together (clients, lines, feed, valuation, accounts, book_changes, details) over book + market (prices);
control (HTTP API) and runner (background thread) drive it; cli starts it from the command line.
"""

from v6_positions.simulator.book import (
    Book,
    BookContract,
    BookError,
    BookPosition,
    Quirks,
    StrategyLeg,
    Underlying,
    demo_strategy_legs,
)
from v6_positions.simulator.book_file import book_from_dict, load_book
from v6_positions.simulator.control import ControlServer
from v6_positions.simulator.runner import SimulatorThread
from v6_positions.simulator.server import GatewaySimulator

__all__ = [
    "Book",
    "BookContract",
    "BookError",
    "BookPosition",
    "ControlServer",
    "GatewaySimulator",
    "Quirks",
    "SimulatorThread",
    "StrategyLeg",
    "Underlying",
    "book_from_dict",
    "demo_strategy_legs",
    "load_book",
]
