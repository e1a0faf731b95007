"""
What the stock client relies on but cannot show: a minimal WebSocket client
on a plain Python socket checks the frames Kraken sends, beside stock clients.
"""

from __future__ import annotations

import time

from bench.harness import joined as harness_joined
from bench.wsraw import (
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    OP_BINARY,
    SYNC_STEP1,
    Frame,
    RawWebSocket,
    awareness,
    decode_awareness,
)
from tests.interop.yclients import NodeDriver
from tests.server import KrakenProcess

#: Seconds any single condition in these tests may take.
DEADLINE = 5.0


def whole(frame: Frame | None) -> Frame:
    """
    C{frame}, which must be there and unfragmented: Kraken sends every
    message in a single frame.
    """
    assert frame is not None, "the server closed the TCP connection"
    assert not frame.fragmented, "fragmented frames are not expected here"
    return frame


def binary(frame: Frame) -> bool:
    """
    Whether C{frame} is a whole binary message; fail on anything else.
    """
    assert whole(frame).opcode == OP_BINARY, frame
    return True


def wait_for_awareness(
    raw: RawWebSocket, client_id: int, clock: int
) -> tuple[int, object]:
    """
    Read until an awareness message carries C{client_id} at C{clock}; fail
    on a text or close frame first.
    """

    def carries(frame: Frame) -> bool:
        if not (binary(frame) and frame.payload.startswith(bytes([MESSAGE_AWARENESS]))):
            return False
        entry = decode_awareness(frame.payload).get(client_id)
        return entry is not None and entry[0] == clock

    frame = raw.wait_for(carries, DEADLINE)
    return decode_awareness(frame.payload)[client_id]


def joined(kraken: KrakenProcess, room: str, token: str) -> RawWebSocket:
    """
    A raw connection that has done what the stock client does on open: read
    the server's step 1, send its own and read the step 2 answer, with
    nothing but whole binary frames on the way.
    """
    raw = harness_joined(kraken, room, token, timeout=DEADLINE)
    assert all(binary(frame) for frame in raw.frames)
    return raw


def test_server_echoes_a_clients_own_awareness_back(kraken: KrakenProcess) -> None:
    """
    Kraken sends a connection's own awareness update back to it, renewals too.
    """
    token = kraken.register_app("echo-app")
    raw = joined(kraken, "alone", token)
    try:
        state = {"user": {"name": "solo"}}
        raw.send_binary(awareness([(4242, 1, state)]))
        assert wait_for_awareness(raw, 4242, 1) == (1, state)

        # The stock client renews an unchanged state every 15 s and counts on
        # the echo of that renewal to keep its 30 s watchdog quiet.
        raw.send_binary(awareness([(4242, 2, state)]))
        assert wait_for_awareness(raw, 4242, 2) == (2, state)
    finally:
        raw.drop()


def test_awareness_of_a_dropped_connection_is_removed_for_stock_clients(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A connection that vanishes without a word has its awareness removed for all.
    """
    token = kraken.register_app("drop-app")
    stock = driver.client("stock", url=kraken.ws_url, room="room", token=token)
    stock.wait_synced()
    stock.set_awareness({"user": "stock"})
    raw = joined(kraken, "room", token)
    try:
        raw.send_binary(awareness([(777, 1, {"user": "raw"})]))
        stock.wait_awareness(1)
        assert stock.awareness() == {"777": {"user": "raw"}}
    finally:
        raw.drop()
    stock.wait_awareness(0)


def test_new_connection_gets_step1_then_current_awareness_in_binary_frames(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    On open Kraken sends its sync step 1 and then the room's awareness states.
    """
    token = kraken.register_app("welcome-app")
    stock = driver.client("stock", url=kraken.ws_url, room="welcome", token=token)
    stock.wait_synced()
    stock.set_awareness({"user": "present"})
    stock_id = int(stock.get()["self"])
    # The state has reached the server once a second client sees it.
    witness = driver.client("witness", url=kraken.ws_url, room="welcome", token=token)
    witness.wait_synced()
    witness.wait_awareness(1)

    raw = RawWebSocket.connect(
        kraken.port, f"/doc/welcome?token={token}", timeout=DEADLINE
    )
    try:
        deadline = time.monotonic() + DEADLINE
        first = whole(raw.receive(deadline))
        second = whole(raw.receive(deadline))
    finally:
        raw.drop()
    assert first.opcode == second.opcode == OP_BINARY
    assert first.payload.startswith(bytes([MESSAGE_SYNC, SYNC_STEP1]))
    entries = decode_awareness(second.payload)
    assert entries[stock_id][1] == {"user": "present"}
