"""`v6-positions registry add|deactivate|list` through the lake CLI module's own subparser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from v6_positions.commands import registry as cli
from v6_positions.lake.registry import StrategyRegistry

# The `registry add` arguments of one QQQ call leg (the expiry varies).
_QQQ_CALL = "--conid 7 --symbol QQQ --right C --strike 400 --expiry {expiry} --strategy-id 1"


def _run(argv: list[str]) -> int:
    # The same wiring as v6_positions/cli.py: the module registers its subcommands on a subparsers object.
    parser = argparse.ArgumentParser(prog="v6-positions")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_add_list_deactivate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = str(tmp_path / "lake")
    add = [
        "registry",
        "--lake-uri",
        lake,
        "add",
        "--conid",
        "42",
        "--symbol",
        "SPY",
        "--right",
        "P",
        "--strike",
        "480",
        "--expiry",
        "20261218",
        "--strategy-id",
        "3",
    ]
    assert _run(add) == 0
    assert (
        _run(
            [
                *add[:3],
                "add",
                "--conid",
                "43",
                "--symbol",
                "ES",
                "--right",
                "C",
                "--strike",
                "6000",
                "--expiry",
                "20261218",
                "--strategy-id",
                "4",
                "--sec-type",
                "FOP",
                "--multiplier",
                "50",
            ]
        )
        == 0
    )
    registry = StrategyRegistry(lake)
    assert registry.active_conids() == {42, 43}
    assert [leg.multiplier for leg in registry.active_legs()] == [100, 50]

    capsys.readouterr()
    assert _run(["registry", "--lake-uri", lake, "list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:4] == ["conid", "symbol", "sec_type", "right"]
    assert "42" in out and "SPY" in out and "2 legs, 2 active" in out

    assert _run(["registry", "--lake-uri", lake, "deactivate", "--conid", "42"]) == 0
    assert _run(["registry", "deactivate", "--conid", "42", "--lake-uri", lake]) == 1
    assert registry.active_conids() == {43}


def test_lake_uri_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("V6_LAKE_URI", str(tmp_path / "env-lake"))
    assert _run(["registry", "list"]) == 0
    assert "no strategy legs registered" in capsys.readouterr().out
    assert _run(["registry", "add", *_QQQ_CALL.format(expiry="20261218").split()]) == 0
    assert StrategyRegistry(str(tmp_path / "env-lake")).is_active(7)


def test_bad_leg_is_a_value_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expiry='20261340'"):
        _run(["registry", "--lake-uri", str(tmp_path), "add", *_QQQ_CALL.format(expiry="20261340").split()])
