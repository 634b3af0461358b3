"""The underlying's price of every option at zero lines, per symbol, from the sources at hand:

- "stream": IB's underlying price from a streamed leg's option computation (`underlying_price` of a row
  that has one), the newest of the symbol;
- "stock": a held stock's refreshed `market_price` (a STK row of the symbol), the newest;
- "historical": the latest daily bar's close from reqHistoricalData (`ib/zero_line/underlying_bars.py`),
  asked only for the symbols `symbols_without_price` lists.
An option row without a price of its own takes the candidate nearest in time to its own row (`event_time`),
then the first in the order above. Why nearest: the implied vol is solved from the option's mark, and a mark
and a spot of different moments are off by the move between them: a queued option's mark and a held stock's
price come from the same valuation sweep, while a streamed price may be a minute newer (deep in the money,
that minute's move can put the mark below its no-arbitrage floor at the newer spot).
A symbol none of these covers keeps a null price (and its options get no model greeks, counted there).
Pure polars over the `positions` rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from v6_positions.contracts import OPTION_SEC_TYPES

PRICE_SOURCES = ("stream", "stock", "historical")
_SEC_TYPE = pl.col("sec_type").cast(pl.String).fill_null("OPT").str.strip_chars().str.to_uppercase()
_SCHEMA = {"symbol": pl.String(), "underlying_price": pl.Float64(), "underlying_price_source": pl.String()}
_TIME = pl.Datetime("us", "UTC")


def _newest(frame: pl.DataFrame, price: pl.Expr, source: str) -> pl.DataFrame:
    has_time = "event_time" in frame.columns
    ordered = frame.sort("event_time", nulls_last=False) if has_time else frame
    return (
        ordered.filter(price.is_not_null() & (price > 0))
        .group_by("symbol", maintain_order=True)
        .agg(
            underlying_price=price.last(),
            priced_at=pl.col("event_time").last() if has_time else pl.lit(None, _TIME),
        )
        .with_columns(underlying_price_source=pl.lit(source))
    )


def _candidates(book: pl.DataFrame, historical: Mapping[str, float] | None) -> pl.DataFrame:
    """Every source's price per symbol: symbol, underlying_price, underlying_price_source, priced_at, rank."""
    closes = historical or {}
    options = book.filter(_SEC_TYPE.is_in(sorted(OPTION_SEC_TYPES)))
    found = [
        _newest(options, pl.col("underlying_price").cast(pl.Float64), "stream"),
        _newest(book.filter(_SEC_TYPE == "STK"), pl.col("market_price").cast(pl.Float64), "stock"),
        pl.DataFrame(
            {
                "symbol": list(closes.keys()),
                "underlying_price": [float(p) for p in closes.values()],
                "underlying_price_source": ["historical"] * len(closes),
                "priced_at": [None] * len(closes),
            },
            schema={**_SCHEMA, "priced_at": _TIME},
        ).filter(pl.col("underlying_price").is_finite() & (pl.col("underlying_price") > 0)),
    ]
    columns = {**_SCHEMA, "priced_at": _TIME}
    return pl.concat([f.select(list(columns)).cast(columns) for f in found]).with_columns(  # type: ignore[arg-type]
        rank=pl.col("underlying_price_source").replace_strict(
            PRICE_SOURCES, list(range(3)), return_dtype=pl.Int64
        )
    )


def underlying_prices(book: pl.DataFrame, historical: Mapping[str, float] | None = None) -> pl.DataFrame:
    """One row per symbol with a price, the first source in the module's order: symbol, underlying_price,
    underlying_price_source."""
    return (
        _candidates(book, historical)
        .sort("rank", maintain_order=True)
        .unique("symbol", keep="first", maintain_order=True)
        .select(list(_SCHEMA))
    )


def symbols_without_price(book: pl.DataFrame) -> list[str]:
    """Underlyings of options the book holds that neither a streamed leg nor a held stock prices: the ones
    worth a historical request."""
    priced = set(underlying_prices(book)["symbol"].to_list())
    symbols = book.filter(_SEC_TYPE.is_in(sorted(OPTION_SEC_TYPES)))["symbol"].drop_nulls().unique()
    return sorted(set(symbols.to_list()) - priced)


def with_underlying_prices(book: pl.DataFrame, historical: Mapping[str, float] | None = None) -> pl.DataFrame:
    """`book` with every option row's missing `underlying_price` filled (the candidate nearest in time to the
    row, see the module docstring) and `underlying_price_source` saying where each option's price came from
    ("stream" for a row's own)."""
    is_option = _SEC_TYPE.is_in(sorted(OPTION_SEC_TYPES))
    own = pl.col("underlying_price").cast(pl.Float64)
    has_own = own.is_not_null() & (own > 0)
    indexed = book.with_row_index("_row")
    row_time = pl.col("event_time") if "event_time" in book.columns else pl.lit(None, _TIME)
    needing = indexed.filter(is_option & ~has_own).select("_row", "symbol", _row_time=row_time)
    chosen = (
        needing.join(_candidates(book, historical), on="symbol", how="inner")
        .with_columns(_gap=(pl.col("_row_time") - pl.col("priced_at")).abs())
        .sort("_row", "_gap", "rank", nulls_last=True)
        .unique("_row", keep="first")
        .select("_row", _price="underlying_price", _source="underlying_price_source")
    )
    return (
        indexed.join(chosen, on="_row", how="left", maintain_order="left")
        .with_columns(
            underlying_price=pl.when(~is_option | has_own).then(own).otherwise(pl.col("_price")),
            underlying_price_source=pl.when(~is_option)
            .then(None)
            .when(has_own)
            .then(pl.lit("stream"))
            .otherwise(pl.col("_source")),
        )
        .drop("_row", "_price", "_source")
    )
