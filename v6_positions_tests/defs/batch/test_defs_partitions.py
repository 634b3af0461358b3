"""Partition keys of queued contracts: readable, stable per contract, (account, conid) recoverable."""

from __future__ import annotations

import pytest

from v6_positions.defs.batch.partition_keys import contract_from_key, contract_partition_key


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("DU1000001", 123456, "SPY", "OPT", "C", 600.0, "20261218"), "DU1000001-SPY-20261218-C-600-123456"),
        (("DU1000001", 7, "SPX", "OPT", "P", 5612.5, "20261218"), "DU1000001-SPX-20261218-P-5612.5-7"),
        (("DU1000001", 1002, "BRK B", "STK"), "DU1000001-BRK_B-STK-1002"),
        (("DU1000001", 1003, "ES-MINI", "FUT"), "DU1000001-ES_MINI-FUT-1003"),
        (("", 99, "QQQ", "OPT", None, None, None), "ANY-QQQ-NA-NA-NA-99"),
    ],
)
def test_keys_read_like_the_contract_and_give_back_account_and_conid(args, key):
    assert contract_partition_key(*args) == key
    assert contract_from_key(key) == (args[0], args[1])


def test_the_same_contract_always_gets_the_same_key():
    first = contract_partition_key("DU1", 5, "SPY", "OPT", "C", 600.0, "20261218")
    assert contract_partition_key("DU1", 5, "SPY", "OPT", "C", 600, "20261218") == first


@pytest.mark.parametrize("key", ["", "DU1", "DU1-SPY-STK-x12"])
def test_a_foreign_key_is_refused(key):
    with pytest.raises(ValueError):
        contract_from_key(key)
