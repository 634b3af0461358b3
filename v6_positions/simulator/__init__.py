"""TWS-API gateway simulator: the unmodified ib_async client connects to it over TCP as to IB Gateway.

framing.py -> session.py (one connection) -> dispatch.py (request table) -> requests.py (fields) -> the state
owners server.py wires: clients.py (clientIds), lines.py (market-data lines), feed.py + ticks.py (market
data), valuation.py (positions, portfolio, PnL), accounts.py (subscriptions), book_changes.py, details.py
(contract details), historical.py (bars), stats.py (counters); over book.py + book_file.py + demo_books.py
(the books) and market.py + pricing.py (prices); protocol.py holds the message layouts. control.py (HTTP
API) and runner.py (a background thread) drive it; `v6-positions simulate` (commands/simulate.py) starts it.
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
