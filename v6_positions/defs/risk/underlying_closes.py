"""`underlying_closes`: the latest price of every underlying the book holds options on but has no other price
for (no streamed leg carrying IB's underlying price, no held stock): one daily bar each from
reqHistoricalData (zero market-data lines) on a helper clientId, paced within IB's historical-data rules.

It runs with the risk refresh (same job, upstream of `underlying_risk`) and connects to IB only when a close
is due: each underlying's close is asked again at every refresh (`REFRESH_AFTER_S`), because the model solves
a queued option's implied vol from its mark and this price, and a price minutes older than the mark moves deep
in-the-money marks below their floor and every implied vol off; an unreachable gateway is tried again after
`GATEWAY_RETRY_AFTER_S`. The closes take at most half of IB's 60 requests per 10 minutes
(`WINDOW_SHARE`), leaving the rest to other clients of the login; closes the pacer holds back are asked at
a later run, the oldest first. Its state lives in its own materialization metadata, read back by the next run:
the closes with when each was fetched, and the historical requests of the last ten minutes, from which the
next run's pacer starts (wall-clock times), so IB's limits hold across runs and processes. A run never waits
for the pacer: a request that may not go out now is left for a later run. `latest_closes(instance)` is what
the risk refresh reads. An IB problem never fails the asset (the risk refresh downstream would be skipped):
it is logged and shown in the metadata, and the previous closes stay.
"""

import time
from dataclasses import dataclass, field

import dagster as dg

from v6_positions.defs.assets import OWNERS, positions
from v6_positions.defs.resources import IBResource, LakeResource, settings_of
from v6_positions.ib.connection.client_ids import helper_client_ids
from v6_positions.ib.zero_line.underlying_bars import (
    WINDOW_MAX,
    BarRequest,
    HistoricalPacer,
    HistoricalStats,
    fetch_closes_zero_line,
)
from v6_positions.lake.positions import read_positions
from v6_positions.risk.underlying_prices import symbols_without_price

CLOSES_KEY = dg.AssetKey("underlying_closes")
# A close older than this is asked again: at every minute's refresh (a run starts up to a few seconds late).
REFRESH_AFTER_S = 45.0
GATEWAY_RETRY_AFTER_S = 600.0  # an unreachable gateway is tried again after this
WINDOW_SHARE = WINDOW_MAX // 2  # historical requests per IB window (10 minutes) the closes may use
MAX_AGE_S = 86_400.0  # an older close is not used (a symbol no longer held, a gateway down for a day)
# The helper clientIds after the stream's: batch N+1, reconciliation N+2, these closes N+3.
CLIENT_ID_INDEX = 2


@dataclass(slots=True)
class ClosesState:
    closes: dict[str, tuple[float, float]] = field(default_factory=dict)  # symbol -> (close, fetched at)
    requests: list[tuple[float, str]] = field(default_factory=list)  # (sent at, symbol), last 10 minutes
    failed_at: float | None = None  # when the gateway last could not be reached

    @classmethod
    def latest(cls, instance: dg.DagsterInstance) -> "ClosesState":
        event = instance.get_latest_materialization_event(CLOSES_KEY)
        materialization = event.asset_materialization if event is not None else None
        if materialization is None:
            return cls()
        meta = materialization.metadata
        closes = meta.get("closes")
        requests = meta.get("requests")
        failed = meta.get("gateway_failed_at")
        return cls(
            closes={
                s: (float(v["close"]), float(v["at"])) for s, v in (closes.value if closes else {}).items()
            },
            requests=[(float(t), str(s)) for t, s in (requests.value if requests else [])],
            failed_at=float(failed.value) if failed is not None else None,
        )

    def metadata(self, asked: HistoricalStats | None, error: str | None) -> dict[str, object]:
        closes = {symbol: {"close": close, "at": at} for symbol, (close, at) in sorted(self.closes.items())}
        return {
            "closes": dg.MetadataValue.json(closes),
            "requests": dg.MetadataValue.json([[t, s] for t, s in self.requests]),
            "underlyings_priced": len(self.closes),
            "requested": asked.requested if asked else 0,
            "answered": asked.answered if asked else 0,
            "missing": asked.missing if asked else 0,
            "deferred_by_pacing": asked.deferred if asked else 0,
            **({"error": error} if error else {}),
            **({"gateway_failed_at": self.failed_at} if self.failed_at is not None else {}),
        }  # fmt: skip


def latest_closes(instance: dg.DagsterInstance, now: float | None = None) -> dict[str, float]:
    """symbol -> close from the newest `underlying_closes` materialization, without closes older than
    MAX_AGE_S."""
    now = time.time() if now is None else now
    return {s: c for s, (c, at) in ClosesState.latest(instance).closes.items() if now - at <= MAX_AGE_S}


@dg.asset(
    key=CLOSES_KEY,
    deps=[positions],
    group_name="positions",  # the risk assets' group (`risk/assets.py`'s GROUP): one lineage, drawn expanded
    owners=OWNERS,
    kinds={"ib_async", "polars"},
    description="The latest close (one daily bar, reqHistoricalData, zero lines) of every underlying the "
    "book holds options on and has no streamed or stock price for: what the model greeks of its queued "
    "options price from. Refreshed every minute, paced within IB's historical-data rules across runs (at "
    "most half of IB's 60 requests per 10 minutes).",
)
def underlying_closes(
    context: dg.AssetExecutionContext, lake: LakeResource, ib: IBResource
) -> dg.MaterializeResult:
    settings = settings_of(lake, ib)
    now = time.time()
    state = ClosesState.latest(context.instance)
    wanted = symbols_without_price(read_positions(lake.root_uri, lake.storage_options))
    state.closes = {s: v for s, v in state.closes.items() if s in wanted and now - v[1] <= MAX_AGE_S}
    fetched_at = {s: state.closes.get(s, (0.0, 0.0))[1] for s in wanted}
    # The oldest first: when pacing holds some back, those are the first asked at the next run.
    due = sorted((s for s in wanted if now - fetched_at[s] > REFRESH_AFTER_S), key=lambda s: fetched_at[s])
    gateway_resting = state.failed_at is not None and now - state.failed_at < GATEWAY_RETRY_AFTER_S
    asked: HistoricalStats | None = None
    error: str | None = None
    if due and not gateway_resting:
        pacer = HistoricalPacer(window_max=WINDOW_SHARE, clock=time.time)
        pacer.restore((t, BarRequest(s)) for t, s in state.requests)
        client_id = helper_client_ids(settings)[CLIENT_ID_INDEX]
        try:
            fetched, asked = fetch_closes_zero_line(settings, client_id, due, pacer, max_wait_s=0.0)
        except Exception as exc:  # gateway down, clientIds taken: keep the closes we have, try again later
            error = f"{type(exc).__name__}: {exc}"
            context.log.warning(f"underlying closes not fetched: {error}")
            state.failed_at = now
        else:
            state.failed_at = None
            state.closes.update({s: (c, now) for s, c in fetched.items()})
            state.requests = [(t, r.symbol) for t, r in pacer.history()]
            context.log.info(
                f"closes of {len(fetched)}/{len(due)} underlyings ({asked.deferred} left for a later run by "
                f"pacing, {asked.missing} without an answer)"
            )
    return dg.MaterializeResult(metadata=state.metadata(asked, error))
