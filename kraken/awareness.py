"""
Awareness: the presence states (cursors, names, selections) of a room's
clients.

The server is not an awareness peer of its own.  It keeps each client's
latest state so that a newcomer learns who is there, relays every accepted
change, and removes the states of clients that left or went silent.  The rules
for accepting an entry are those of y-protocols, so every client and the
server agree on the outcome whatever order entries arrive in.

No I/O here: states are plain data and time is passed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kraken.sync import (
    ProtocolError,
    read_var_string,
    read_var_uint,
    write_var_string,
    write_var_uint,
)

#: The JSON text that removes a client's state.
REMOVED = "null"

#: How many clocks of departed clients a room remembers; older ones are
#: forgotten first.
_MAX_REMEMBERED_CLOCKS = 10_000


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """
    One client's state as carried in an awareness update.

    @ivar client_id: the Yjs client id.
    @ivar clock: increases with every change the client makes.
    @ivar state: the state as JSON text; C{"null"} means "removed".
    """

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        """
        Whether this entry removes the client's state.
        """
        return self.state == REMOVED


@dataclass(slots=True)
class _KnownState:
    clock: int
    state: str
    updated_at: float


class AwarenessTooLarge(ProtocolError):
    """
    A client state is larger than the configured limit.
    """


def decode_awareness_update(payload: bytes) -> list[AwarenessEntry]:
    """
    Decode an awareness update into its entries.

    Each state must be valid JSON, because every other client will parse it.

    @raise ProtocolError: the payload is malformed.
    """
    count, position = read_var_uint(payload, 0)
    if count > len(payload):
        raise ProtocolError("awareness entry count exceeds the message")

    entries = []
    for _ in range(count):
        client_id, position = read_var_uint(payload, position)
        clock, position = read_var_uint(payload, position)
        state, position = read_var_string(payload, position)
        _check_json(state)
        entries.append(AwarenessEntry(client_id, clock, state))
    return entries


def _check_json(state: str) -> None:
    """
    Accept only JSON that JavaScript's C{JSON.parse} accepts too: no
    C{NaN} or C{Infinity}, and no nesting deep enough to exhaust the stack.
    """
    try:
        json.loads(state, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ProtocolError("awareness state is not JSON") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def encode_awareness_update(entries: list[AwarenessEntry]) -> bytes:
    """
    Encode entries as an awareness update payload.
    """
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts.append(write_var_uint(entry.client_id))
        parts.append(write_var_uint(entry.clock))
        parts.append(write_var_string(entry.state))
    return b"".join(parts)


class AwarenessStates:
    """
    The awareness states of one room, with the y-protocols acceptance rule.

    @ivar max_state_bytes: the largest state, in UTF-8 bytes, accepted.
    """

    def __init__(self, max_state_bytes: int) -> None:
        self.max_state_bytes = max_state_bytes
        self._states: dict[int, _KnownState] = {}
        self._clocks: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._states)

    def apply(self, entries: list[AwarenessEntry], now: float) -> list[AwarenessEntry]:
        """
        Apply decoded entries and return the ones accepted, in order.

        An entry is accepted when its clock is newer than the known one, or
        when it removes a present state at the same clock.  Renewals (same
        state, newer clock) are accepted too: relaying them is what keeps an
        idle client's connection alive.

        @raise AwarenessTooLarge: a state exceeds C{max_state_bytes}; nothing
            of the update is applied.
        """
        for entry in entries:
            size = len(entry.state.encode("utf-8"))
            if size > self.max_state_bytes:
                raise AwarenessTooLarge(f"awareness state of {size} bytes")

        accepted = []
        for entry in entries:
            if self._accept(entry, now):
                accepted.append(entry)
        return accepted

    def _accept(self, entry: AwarenessEntry, now: float) -> bool:
        known = self._states.get(entry.client_id)
        known_clock = self._clocks.get(entry.client_id, 0)
        newer = known_clock < entry.clock
        removes_present = (
            known_clock == entry.clock and entry.removed and known is not None
        )
        if not (newer or removes_present):
            return False

        self._remember_clock(entry.client_id, entry.clock)
        if not entry.removed:
            self._states[entry.client_id] = _KnownState(entry.clock, entry.state, now)
            return True
        return self._states.pop(entry.client_id, None) is not None

    def _remember_clock(self, client_id: int, clock: int) -> None:
        """
        Keep the last clock of a client, present or removed, so that a stale
        entry arriving late cannot bring a removed state back.
        """
        self._clocks.pop(client_id, None)
        self._clocks[client_id] = clock
        while len(self._clocks) > max(_MAX_REMEMBERED_CLOCKS, len(self._states)):
            oldest = next(iter(self._clocks))
            if oldest in self._states:
                self._clocks[oldest] = self._clocks.pop(oldest)
            else:
                del self._clocks[oldest]

    def holds(self, entry: AwarenessEntry) -> bool:
        """
        Whether C{entry} repeats the known state at the known clock, as a
        reconnecting client does when it announces itself again.
        """
        known = self._states.get(entry.client_id)
        return (
            known is not None
            and known.clock == entry.clock
            and known.state == entry.state
        )

    def remove(self, client_ids: set[int]) -> list[AwarenessEntry]:
        """
        Remove the states of C{client_ids} without bumping their clocks.

        @return: the removal entries to broadcast; receivers accept them by
            the equal-clock rule.
        """
        removed = []
        for client_id in sorted(client_ids):
            known = self._states.pop(client_id, None)
            if known is not None:
                removed.append(AwarenessEntry(client_id, known.clock, REMOVED))
        return removed

    def outdated(self, now: float, timeout: float) -> set[int]:
        """
        The clients whose state has not been renewed for C{timeout} seconds.
        """
        return {
            client_id
            for client_id, known in self._states.items()
            if now - known.updated_at >= timeout
        }

    def all_entries(self) -> list[AwarenessEntry]:
        """
        Every known state, as entries for a newcomer.
        """
        return [
            AwarenessEntry(client_id, known.clock, known.state)
            for client_id, known in self._states.items()
        ]
