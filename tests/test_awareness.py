"""
A room's awareness states and the y-protocols rules for accepting entries.
"""

from __future__ import annotations

import json

import pytest

from kraken.awareness import (
    AwarenessEntry,
    AwarenessStates,
    AwarenessTooLarge,
    decode_awareness_update,
    encode_awareness_update,
)
from kraken.sync import AwarenessMessage, ProtocolError, decode_message

CURSOR = '{"cursor":1}'
MOVED = '{"cursor":2}'
REMOVED = "null"


def entry(client_id: int, clock: int, state: str = CURSOR) -> AwarenessEntry:
    """
    An awareness entry, by default a present cursor state.
    """
    return AwarenessEntry(client_id, clock, state)


def states_with(*entries: AwarenessEntry) -> AwarenessStates:
    """
    Awareness states that have already accepted C{entries}.
    """
    states = AwarenessStates(max_state_bytes=1024)
    states.apply(list(entries), now=0.0)
    return states


def test_first_state_of_a_client_is_accepted() -> None:
    """
    A state from a client the room has not seen is accepted and kept.
    """
    states = AwarenessStates(max_state_bytes=1024)

    assert states.apply([entry(1, 1)], now=0.0) == [entry(1, 1)]
    assert states.all_entries() == [entry(1, 1)]


def test_first_state_at_clock_zero_is_rejected() -> None:
    """
    A state at clock 0 from a client the room has not seen is rejected, as
    y-protocols rejects it (its unknown clients count as clock 0).
    """
    states = AwarenessStates(max_state_bytes=1024)

    assert states.apply([entry(1, 0)], now=0.0) == []
    assert len(states) == 0


def test_newer_clock_is_accepted() -> None:
    """
    An entry with a clock newer than the known one replaces the state.
    """
    states = states_with(entry(1, 1))

    assert states.apply([entry(1, 2, MOVED)], now=1.0) == [entry(1, 2, MOVED)]
    assert states.all_entries() == [entry(1, 2, MOVED)]


def test_same_clock_is_rejected() -> None:
    """
    A different state at the known clock is rejected and the old one kept.
    """
    states = states_with(entry(1, 3))

    assert states.apply([entry(1, 3, MOVED)], now=1.0) == []
    assert states.all_entries() == [entry(1, 3)]


def test_older_clock_is_rejected() -> None:
    """
    An entry older than the known clock is rejected.
    """
    states = states_with(entry(1, 3))

    assert states.apply([entry(1, 2, MOVED)], now=1.0) == []
    assert states.all_entries() == [entry(1, 3)]


def test_removal_at_the_same_clock_is_accepted() -> None:
    """
    A null at the known clock removes a present state, as a departing
    client's removal does.
    """
    states = states_with(entry(1, 3))

    assert states.apply([entry(1, 3, REMOVED)], now=1.0) == [entry(1, 3, REMOVED)]
    assert len(states) == 0


def test_removal_at_a_newer_clock_is_accepted() -> None:
    """
    A null at a newer clock removes a present state.
    """
    states = states_with(entry(1, 3))

    assert states.apply([entry(1, 4, REMOVED)], now=1.0) == [entry(1, 4, REMOVED)]
    assert len(states) == 0


@pytest.mark.parametrize("clock", [0, 5])
def test_removal_of_an_unknown_client_is_not_relayed(clock: int) -> None:
    """
    A null for a client with no present state changes nothing, so it is not
    relayed.
    """
    states = AwarenessStates(max_state_bytes=1024)

    assert states.apply([entry(9, clock, REMOVED)], now=0.0) == []
    assert len(states) == 0


def test_second_removal_is_not_relayed() -> None:
    """
    A null repeated at the same clock finds nothing to remove.
    """
    states = states_with(entry(1, 3), entry(1, 3, REMOVED))

    assert states.apply([entry(1, 3, REMOVED)], now=1.0) == []


def test_stale_entry_after_removal_is_rejected() -> None:
    """
    The clock of a removed state is remembered, so an entry that was sent
    before the removal and arrives after it cannot bring the state back.
    """
    states = states_with(entry(1, 3), entry(1, 3, REMOVED))

    assert states.apply([entry(1, 3)], now=1.0) == []
    assert states.apply([entry(1, 2)], now=1.0) == []
    assert len(states) == 0


def test_newer_state_after_removal_is_accepted() -> None:
    """
    A client that comes back with a newer clock is present again.
    """
    states = states_with(entry(1, 3), entry(1, 3, REMOVED))

    assert states.apply([entry(1, 4)], now=1.0) == [entry(1, 4)]
    assert states.all_entries() == [entry(1, 4)]


def test_renewal_is_accepted() -> None:
    """
    The same state at a newer clock is accepted, so that relaying it keeps
    an idle client's connection alive.
    """
    states = states_with(entry(1, 1))

    assert states.apply([entry(1, 2)], now=15.0) == [entry(1, 2)]


def test_apply_returns_only_accepted_entries_in_order() -> None:
    """
    Of a mixed update, the accepted entries come back in their order.
    """
    states = states_with(entry(1, 5), entry(2, 5))
    update = [entry(3, 1), entry(1, 4), entry(2, 6, MOVED), entry(4, 1, REMOVED)]

    assert states.apply(update, now=1.0) == [entry(3, 1), entry(2, 6, MOVED)]


def test_remove_returns_removals_at_the_same_clock() -> None:
    """
    Removing a leaving member's clients yields nulls at their current
    clocks, which every receiver accepts by the equal-clock rule.
    """
    states = states_with(entry(2, 7), entry(1, 4), entry(3, 1))

    assert states.remove({1, 2, 99}) == [entry(1, 4, REMOVED), entry(2, 7, REMOVED)]
    assert states.all_entries() == [entry(3, 1)]


def test_remove_keeps_clocks() -> None:
    """
    After a server-side removal, the old entry is still rejected and only a
    newer clock brings the client back.
    """
    states = states_with(entry(1, 4))
    states.remove({1})

    assert states.apply([entry(1, 4)], now=1.0) == []
    assert states.apply([entry(1, 5)], now=1.0) == [entry(1, 5)]


def test_outdated_lists_states_not_renewed_in_time() -> None:
    """
    A state last set C{timeout} seconds ago or more is outdated; a renewed
    one is not.
    """
    states = AwarenessStates(max_state_bytes=1024)
    states.apply([entry(1, 1), entry(2, 1)], now=0.0)
    states.apply([entry(2, 2)], now=20.0)

    assert states.outdated(now=29.0, timeout=30.0) == set()
    assert states.outdated(now=30.0, timeout=30.0) == {1}
    assert states.outdated(now=50.0, timeout=30.0) == {1, 2}


def test_outdated_ignores_removed_states() -> None:
    """
    A removed state is not reported as outdated.
    """
    states = states_with(entry(1, 1), entry(1, 1, REMOVED))

    assert states.outdated(now=100.0, timeout=30.0) == set()


def test_state_over_the_limit_raises_and_applies_nothing() -> None:
    """
    One state over the size limit refuses the whole update, including the
    entries before it.
    """
    states = AwarenessStates(max_state_bytes=20)
    big = json.dumps({"name": "x" * 20})

    with pytest.raises(AwarenessTooLarge):
        states.apply([entry(1, 1), entry(2, 1, big)], now=0.0)

    assert len(states) == 0


def test_state_size_is_counted_in_utf8_bytes() -> None:
    """
    The limit is on UTF-8 bytes, so a short string of wide characters can
    exceed it.
    """
    states = AwarenessStates(max_state_bytes=20)
    wide = json.dumps({"n": "ö" * 8}, ensure_ascii=False)
    assert len(wide) <= 20 < len(wide.encode("utf-8"))

    with pytest.raises(AwarenessTooLarge):
        states.apply([entry(1, 1, wide)], now=0.0)


def test_state_at_the_limit_is_accepted() -> None:
    """
    A state of exactly C{max_state_bytes} bytes is accepted.
    """
    state = json.dumps({"n": "x" * 12})
    states = AwarenessStates(max_state_bytes=len(state))

    assert states.apply([entry(1, 1, state)], now=0.0) == [entry(1, 1, state)]


def test_awareness_too_large_is_a_protocol_error() -> None:
    """
    The adapter can treat an oversized state as bad client input.
    """
    assert issubclass(AwarenessTooLarge, ProtocolError)


def test_awareness_update_round_trips() -> None:
    """
    Encoded entries decode to the same entries, non-ASCII states included.
    """
    entries = [
        entry(1, 0, "{}"),
        entry(2**32, 7, '{"name":"Jürgen"}'),
        entry(3, 2, "null"),
    ]

    assert decode_awareness_update(encode_awareness_update(entries)) == entries


def test_stock_client_first_awareness_message_decodes() -> None:
    """
    The first awareness frame of a stock client (one entry, clock 0, state
    C{{}}, a 5-byte client id) decodes to that entry.
    """
    frame = bytes.fromhex("010a01dae3f39c0e00027b7d")

    message = decode_message(frame)

    assert isinstance(message, AwarenessMessage)
    assert decode_awareness_update(message.payload) == [entry(3_818_713_562, 0, "{}")]


@pytest.mark.parametrize("state", ["{oops", "", "undefined", "{'a': 1}", '{"a":1'])
def test_non_json_state_is_rejected(state: str) -> None:
    """
    A state that is not JSON is refused, because every client parses it.
    """
    payload = encode_awareness_update([entry(1, 0, state)])

    with pytest.raises(ProtocolError):
        decode_awareness_update(payload)


@pytest.mark.parametrize("state", ["NaN", '{"x":Infinity}', "-Infinity"])
def test_json_that_javascript_refuses_is_rejected(state: str) -> None:
    """
    A state that Python's JSON parser accepts but JavaScript's C{JSON.parse}
    throws on is refused, because every stock client parses it.
    """
    payload = encode_awareness_update([entry(1, 0, state)])

    with pytest.raises(ProtocolError):
        decode_awareness_update(payload)


def test_deeply_nested_state_is_rejected() -> None:
    """
    A state nested deeper than the JSON parser can follow is refused as bad
    input, not raised as a RecursionError.
    """
    payload = encode_awareness_update([entry(1, 0, "[" * 5000 + "]" * 5000)])

    with pytest.raises(ProtocolError):
        decode_awareness_update(payload)


def test_entry_count_larger_than_the_payload_is_rejected() -> None:
    """
    An entry count that cannot fit in the payload is refused before any
    entry is read.
    """
    with pytest.raises(ProtocolError):
        decode_awareness_update(b"\xff\xff\x03")


def test_truncated_entry_is_rejected() -> None:
    """
    An update that ends inside an entry is refused.
    """
    payload = encode_awareness_update([entry(1, 0)])

    with pytest.raises(ProtocolError):
        decode_awareness_update(payload[:-1])
