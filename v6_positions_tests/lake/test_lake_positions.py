"""positions: newest row per (account, conid) across stream and batch history, closed positions dropped."""

from __future__ import annotations

from lake_helpers import Lake, aged_row

from v6_positions.lake.book_heal import refresh_positions
from v6_positions.lake.history import write_rows
from v6_positions.lake.positions import read_positions
from v6_positions.lake.tables import table_version


def test_newest_row_wins_across_sources_and_closed_are_dropped(lake: Lake) -> None:
    root, options = lake.root, lake.options
    assert refresh_positions(root, options) == 0 and read_positions(root, options).is_empty()
    write_rows(
        root,
        "streamed_positions",
        [
            aged_row("A", 1, 1.0, 10, "stream"),
            aged_row("A", 1, 2.0, 5, "stream"),  # newest for (A, 1)
            aged_row("A", 2, 3.0, 1, "stream"),  # newer than the batch row below
            aged_row("A", 3, 4.0, 60, "stream"),
            aged_row("B", 1, 7.0, 2, "stream"),  # same conid, other account
        ],
        options,
    )
    write_rows(
        root,
        "queued_positions",
        [
            aged_row("A", 2, 9.0, 30, "batch"),
            aged_row("A", 3, 0.0, 5, "batch"),  # closed: dropped
            aged_row("A", 4, -2.0, 20, "batch"),  # only the batch knows it
        ],
        options,
    )
    version = table_version(root, "positions", options)
    assert refresh_positions(root, options) == 4
    assert table_version(root, "positions", options) == version + 1  # one commit
    book = read_positions(root, options).sort(["account", "conid"])
    assert list(zip(book["account"], book["conid"], book["position"], book["source"], strict=True)) == [
        ("A", 1, 2.0, "stream"),
        ("A", 2, 3.0, "stream"),
        ("A", 4, -2.0, "batch"),
        ("B", 1, 7.0, "stream"),
    ]
    ages = dict(zip(book["conid"].to_list(), book["age_s"].to_list(), strict=False))
    assert 19 * 60 < ages[4] < 21 * 60
    assert book["refreshed_at"].n_unique() == 1


def test_refresh_overwrites_the_previous_book(lake: Lake) -> None:
    root, options = lake.root, lake.options
    write_rows(root, "streamed_positions", [aged_row("A", 1, 1.0, 1, "stream")], options)
    refresh_positions(root, options)
    write_rows(root, "streamed_positions", [aged_row("A", 1, 0.0, 0, "stream")], options)  # closed now
    assert refresh_positions(root, options) == 0
    assert read_positions(root, options).is_empty()
