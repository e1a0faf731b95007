"""
A blocking signaling peer on a plain socket, for the interop tests beside
stock clients and for the latency benchmark.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench.wsraw import OP_BINARY, OP_CLOSE, OP_TEXT, RawWebSocket

_MAX_FRAMES = 10_000

#: Seconds a single wait of a peer may take.
DEADLINE = 5.0

PEER_LIST = 5
PEER_JOINED = 6
PEER_LEFT = 7


@dataclass
class SignalPeer(RawWebSocket):
    """
    A room connection that only signals: it never sends a binary frame, reads
    past the binary frames the server sends it, and keeps every text message.

    @ivar received: every signal or error envelope received, in order.
    """

    received: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def join(cls, port: int, path: str) -> SignalPeer:
        """
        Connect to C{path} (C{/doc/ROOM?token=...} or C{/ROOM?token=...}) on
        127.0.0.1 and read the server's sync step 1.
        """
        peer = cls.connect(port, path, timeout=DEADLINE)
        assert isinstance(peer, cls)
        first = peer.receive(time.monotonic() + DEADLINE)
        assert first is not None and first.opcode == OP_BINARY, first
        return peer

    def send_signal(self, signal: dict[str, Any]) -> None:
        """
        Send one signal in its envelope.
        """
        self.send_text(json.dumps({"kraken": "signal", "signal": signal}).encode())

    def next_text(self, deadline: float) -> dict[str, Any]:
        """
        The next text message, binary frames skipped; a close fails.
        """
        for _ in range(_MAX_FRAMES):
            frame = self.receive(deadline)
            if frame is None:
                raise ConnectionError("the server closed the TCP connection")
            assert frame.opcode != OP_CLOSE, f"closed: {frame.payload!r}"
            if frame.opcode == OP_TEXT:
                message: dict[str, Any] = json.loads(frame.payload)
                self.received.append(message)
                return message
        raise AssertionError("too many binary frames")

    def wait_signal(self, kind: int, timeout: float = DEADLINE) -> dict[str, Any]:
        """
        Read until a signal of type C{kind} arrives; return it.
        """
        deadline = time.monotonic() + timeout
        for _ in range(_MAX_FRAMES):
            message = self.next_text(deadline)
            if message.get("kraken") == "signal" and message["signal"]["type"] == kind:
                signal: dict[str, Any] = message["signal"]
                return signal
        raise AssertionError(f"no signal of type {kind}")

    def announce(self, peer_id: str, name: str = "") -> list[dict[str, Any]]:
        """
        Announce as C{peer_id}; return the peers of the PeerList answer.
        """
        self.send_signal({"type": 0, "from": peer_id, "name": name})
        peers: list[dict[str, Any]] = self.wait_signal(PEER_LIST)["peers"]
        return peers

    def close(self) -> None:
        """
        Close cleanly: send a close frame, wait for the server's, then hang up.
        """
        self.send_close(1000)
        try:
            self.wait_close(DEADLINE)
        finally:
            self.drop()
