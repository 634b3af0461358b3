"""A cancelled market-data request's late ticks never pass for IB's answer to the next one on the contract.

The simulator sends one more cycle of ticks ahead of applying each cancel, as IB does when its ticks are on
the wire while the client's cancel is; the client is unmodified ib_async, which keeps one Ticker per contract.
"""

from __future__ import annotations

import asyncio
import math

from gateway_bot import STREAM_ID, bot, non_leg_options
from ib_async import Contract, Ticker

from v6_positions.ib.lines.cancel import MarketDataCanceller


def quoted(ticker: Ticker) -> bool:
    return not math.isnan(ticker.bid) and not math.isnan(ticker.minTick)


def test_ticks_in_flight_at_a_cancel_never_reach_the_next_request_on_the_same_contract(make_sim, kit):
    # Two lines in the account: the stream holds both, gives x's up for w (a pool line moving on) and asks
    # for x again beyond what IB grants (a probe). IB refuses x; the ticks it had sent for x's first request
    # before reading the cancel must not look like an answer to the second.
    sim = make_sim(max_lines=2)
    sim.ticks_in_flight_at_cancel(True)
    x, y, w = non_leg_options(sim, [], 3)

    async def scenario():
        async with bot(sim, client_id=STREAM_ID, readonly=True) as ib:
            seen: list[tuple[int | None, float]] = []  # (conid, bid) of every Ticker ib_async reports updated
            ib.pendingTickersEvent += lambda tickers: seen.extend(
                (t.contract.conId if t.contract else None, t.bid) for t in tickers
            )
            errors: list[tuple[int, int]] = []
            ib.errorEvent += lambda req_id, code, *_: errors.append((req_id, code))
            canceller = MarketDataCanceller(ib)
            first = ib.reqMktData(Contract(conId=x, exchange="SMART"))
            other = ib.reqMktData(Contract(conId=y, exchange="SMART"))
            await kit.until(lambda: quoted(first) and quoted(other), what="x and y stream: the account full")

            canceller.cancel(first.contract, first)
            ib.reqMktData(Contract(conId=w, exchange="SMART"))  # takes the line x gave up
            again = ib.reqMktData(Contract(conId=x, exchange="SMART"))
            assert again is first  # ib_async's one Ticker per contract
            again.minTick, again.time = math.nan, None  # what SubscriptionRegistry forgets at each request
            again.bid = math.nan
            seen.clear()
            refused = (canceller.request_of(again), 101)
            await kit.until(lambda: refused in errors, what="IB refuses x's second request")

            late = [bid for conid, bid in seen if conid is None]
            assert late and not math.isnan(late[0])  # the late ticks came, to the retired request's Ticker
            assert x not in {conid for conid, _ in seen}  # and never to x's
            assert math.isnan(again.minTick) and again.time is None and math.isnan(again.bid)

    asyncio.run(scenario())
