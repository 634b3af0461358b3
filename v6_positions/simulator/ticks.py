"""The tick messages one quote becomes, the way IB sends them (first burst vs. later updates, quirks)."""

from __future__ import annotations

from v6_positions.simulator import protocol
from v6_positions.simulator.book import Quirks
from v6_positions.simulator.market import Quote
from v6_positions.simulator.protocol import Tick

_PLAIN = Quirks()


def tick_messages(req_id: int, q: Quote, quirks: Quirks | None, initial: bool) -> list[list[object]]:
    """`initial`: the first burst after reqMktData (close, every option computation); later ticks carry
    bid/ask/last/volume and the model computation only."""
    quirks = quirks or _PLAIN
    messages = [
        protocol.tick_price(req_id, Tick.BID, q.bid, q.bid_size),
        protocol.tick_price(req_id, Tick.ASK, q.ask, q.ask_size),
    ]
    if initial or not quirks.one_sided:  # a one-sided wing does not trade: its last stays stale
        messages.append(protocol.tick_price(req_id, Tick.LAST, q.last, q.last_size))
    messages.append(protocol.tick_size(req_id, Tick.VOLUME, q.volume))
    if initial:
        messages.append(protocol.tick_price(req_id, Tick.CLOSE, q.close, 0))
    g = q.greeks
    if g is None:
        return messages
    if not initial:
        kinds: tuple[Tick, ...] = (Tick.MODEL_OPTION,)
    elif quirks.one_sided:  # no bid, so no bid computation; none on the stale last either
        kinds = (Tick.ASK_OPTION, Tick.MODEL_OPTION)
    else:
        kinds = (Tick.BID_OPTION, Tick.ASK_OPTION, Tick.LAST_OPTION, Tick.MODEL_OPTION)
    prices = {
        Tick.BID_OPTION: q.bid,
        Tick.ASK_OPTION: q.ask,
        Tick.LAST_OPTION: q.last,
        Tick.MODEL_OPTION: g.price,
    }
    for kind in kinds:
        values = {
            "implied_vol": g.implied_vol,
            "delta": g.delta,
            "opt_price": prices[kind],
            "pv_dividend": 0.0,
            "gamma": g.gamma,
            "vega": g.vega,
            "theta": g.theta,
            "und_price": q.und_price,
        }
        for name in quirks.missing_greeks:  # IB's "not computed"
            values[name] = protocol.GREEK_SENTINELS[name]
        messages.append(protocol.tick_option_computation(req_id, kind, **values))
    return messages
