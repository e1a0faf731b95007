"""
A blocking signaling peer on a plain socket, for the interop tests beside
stock clients and for the latency benchmark.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any

from tests.test_interop_wire import _OP_BINARY, RawWebSocket

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_MAX_FRAMES = 10_000

#: Seconds a single wait of a peer may take.
DEADLINE = 5.0

PEER_LIST = 5
PEER_JOINED = 6
PEER_LEFT = 7


class SignalPeer(RawWebSocket):
    """
    A room connection that only signals: it never sends a binary frame, reads
    past the binary frames the server sends it, and keeps every text message.

    @ivar received: every signal or error envelope received, in order.
    """

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        super().__init__(sock, buffered)
        self.received: list[dict[str, Any]] = []

    @classmethod
    def join(cls, port: int, path: str) -> SignalPeer:
        """
        Connect to C{path} (C{/doc/ROOM?token=...} or C{/ROOM?token=...}) on
        127.0.0.1 and read the server's sync step 1.
        """
        peer = cls.connect(port, path)
        assert isinstance(peer, cls)
        first = peer.receive(time.monotonic() + DEADLINE)
        assert first.opcode == _OP_BINARY, first
        return peer

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        # The same frame as RawWebSocket sends, masked with integer arithmetic
        # so that large signals cost the latency bench next to nothing.
        length = len(payload)
        header = bytearray([0x80 | opcode])
        if length < 126:
            header.append(0x80 | length)
        elif length < 2**16:
            header.append(0x80 | 126)
            header += struct.pack("!H", length)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", length)
        mask = os.urandom(4)
        key = (mask * (length // 4 + 1))[:length]
        masked = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
        self._sock.sendall(bytes(header) + mask + masked.to_bytes(length, "big"))

    def send_text(self, payload: bytes) -> None:
        """
        Send one text message.
        """
        self._send_frame(_OP_TEXT, payload)

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
            assert frame.opcode != _OP_CLOSE, f"closed: {frame.payload!r}"
            if frame.opcode == _OP_TEXT:
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
        self._send_frame(_OP_CLOSE, struct.pack("!H", 1000))
        deadline = time.monotonic() + DEADLINE
        try:
            for _ in range(_MAX_FRAMES):
                if self.receive(deadline).opcode == _OP_CLOSE:
                    break
        except ConnectionError:
            pass
        finally:
            self.drop()
