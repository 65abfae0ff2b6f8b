"""The flat string table under the resolver's index: every string keeps its code, frozen or not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import matching.strings as strings_module
from matching.strings import FEATURES, StringTable

texts = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80"]), max_size=12)


def _table(before: list[str], after: list[str]) -> tuple[StringTable, dict[str, int]]:
    table, expected = StringTable(), {}
    for value in before:
        expected.setdefault(value, table.code(value))
    table.freeze()
    for value in after:
        expected.setdefault(value, table.code(value))
    return table, expected


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, max_size=40), st.lists(texts, max_size=10), st.lists(texts, max_size=5))
def test_every_string_keeps_its_code_through_a_freeze(before, after, absent):
    table, expected = _table(before, after)
    assert len(table) == len(expected)
    assert sorted(expected.values()) == list(range(len(expected)))
    for value, code in expected.items():
        assert table.get(value) == code and table.code(value) == code and value in table
        assert table.text(code) == value
    codes = np.array(list(expected.values()), dtype=np.int64)
    assert table.take(codes) == list(expected)
    for name, fn in FEATURES.items():                 # SQL's length / ascii, read without decoding
        assert table.feature(name, codes).tolist() == [fn(v) for v in expected]
    for value in absent:
        assert (table.get(value) is None) == (value not in expected)
    table.freeze()                                   # a second freeze changes no code
    assert [table.get(v) for v in expected] == list(expected.values())


def test_strings_with_equal_hashes_are_told_apart_by_their_text(monkeypatch):
    monkeypatch.setattr(strings_module, "_hash", len)          # every string of one length collides
    table, expected = _table(["ANA", "BOB", "EVE", "JO"], ["IDA"])
    assert {v: table.get(v) for v in expected} == expected
    assert table.get("ZOE") is None and table.get("J") is None


def test_take_reads_frozen_and_added_strings_in_one_call():
    table, _ = _table(["A", "B"], ["C"])
    assert table.take(np.array([2, 0, 1, 2])) == ["C", "A", "B", "C"]
    assert table.take(np.array([], dtype=np.int64)) == []


def test_a_frozen_table_holds_no_python_string_objects():
    table, _ = _table([f"NAME{i}" for i in range(1000)], [])
    held: set[str] = set()
    for value in vars(table).values():
        items = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
        held |= {item for item in items if isinstance(item, str)}
    assert held <= set(FEATURES) and table.frozen == 1000


@pytest.mark.parametrize("value", [None, 3])
def test_non_strings_are_not_in_the_table(value):
    table, _ = _table(["3"], [])
    assert value not in table
