"""
Stock y-websocket providers beside signaling peers in one room of a real
Kraken: the providers never see a text frame and keep syncing.
"""

from __future__ import annotations

from typing import Any

from tests.interop.yclients import Client, NodeDriver
from tests.server import KrakenProcess
from tests.signal_peer import PEER_JOINED, PEER_LEFT, SignalPeer

SDP = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
ANSWER_SDP = {"type": "answer", "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.2 51000 typ host"}


def assert_untroubled(*clients: Client) -> None:
    """
    Each provider is still on its first connection and none of its socket
    handlers ever threw (a text frame makes y-websocket's decoder throw).
    """
    for client in clients:
        stats = client.stats()
        assert stats["handlerErrors"] == 0, stats
        assert stats["opens"] == 1, stats
        assert stats["closeCount"] == 0, stats
        assert stats["status"] == "connected", stats
    assert clients[0].get()["errors"] == []


def test_stock_providers_keep_syncing_while_peers_signal_in_their_room(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Two peers announce, call, hang up and leave in a room where two stock
    providers sync; the providers get every update and no text frame.
    """
    token = kraken.register_app("call-app")
    first = driver.client("first", url=kraken.ws_url, room="meeting", token=token)
    second = driver.client("second", url=kraken.ws_url, room="meeting", token=token)
    first.wait_synced()
    second.wait_synced()
    first.set_awareness({"user": "first"})
    second.wait_awareness(1)
    caller = SignalPeer.join(kraken.port, f"/doc/meeting?token={token}")
    callee = SignalPeer.join(kraken.port, f"/meeting?token={token}")

    try:
        assert caller.announce("caller", "Caller") == []
        first.insert(0, "hello")
        assert callee.announce("callee", "Callee") == [
            {"peerId": "caller", "name": "Caller", "meta": None}
        ]
        caller.wait_signal(PEER_JOINED)
        caller.send_signal({"type": 1, "to": "callee", "sdp": SDP})
        second.wait_text("hello")
        offer: dict[str, Any] = callee.wait_signal(1)
        callee.send_signal({"type": 2, "to": "caller", "sdp": ANSWER_SDP})
        callee.send_signal({"type": 3, "to": "caller", "candidate": CANDIDATE})
        caller.send_signal({"type": 3, "to": "callee", "candidate": CANDIDATE})
        second.insert(5, " world")
        answer = caller.wait_signal(2)
        caller.wait_signal(3)
        callee.wait_signal(3)
        first.wait_text("hello world")
        caller.send_signal({"type": 4, "to": "callee", "reason": "done"})
        callee.wait_signal(4)
        callee.close()
        caller.wait_signal(PEER_LEFT)
    finally:
        caller.drop()
        callee.drop()
    first.insert(11, "!")
    second.wait_text("hello world!")
    second.set_awareness({"user": "second"})
    first.wait_awareness(1)

    assert offer == {"type": 1, "to": "callee", "sdp": SDP, "from": "caller"}
    assert answer == {"type": 2, "to": "caller", "sdp": ANSWER_SDP, "from": "callee"}
    assert_untroubled(first, second)


def test_stock_provider_joining_a_room_with_announced_peers_syncs(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A provider that connects while peers are announced gets the document and
    no text frame, while the peers keep signaling.
    """
    token = kraken.register_app("busy-app")
    writer = driver.client("writer", url=kraken.ws_url, room="busy", token=token)
    writer.wait_synced()
    writer.insert(0, "before")
    first = SignalPeer.join(kraken.port, f"/busy?token={token}")
    second = SignalPeer.join(kraken.port, f"/busy?token={token}")

    try:
        first.announce("one")
        second.announce("two")
        late = driver.client("late", url=kraken.ws_url, room="busy", token=token)
        late.wait_synced()
        first.send_signal({"type": 4})
        second.wait_signal(4)
        writer.insert(6, " after")
        late.wait_text("before after")
    finally:
        first.drop()
        second.drop()

    assert_untroubled(writer, late)
