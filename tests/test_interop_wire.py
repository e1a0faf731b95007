"""
What the stock client relies on but cannot show: a minimal WebSocket client
on a plain Python socket checks the frames Kraken sends, beside stock clients.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass

from tests.interop.yclients import NodeDriver
from tests.server import KrakenProcess

#: Seconds any single condition in these tests may take.
DEADLINE = 5.0

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_BINARY = 0x2
_OP_PING = 0x9
_OP_PONG = 0xA
_MAX_HEADER_BYTES = 64 * 1024
_MAX_FRAMES = 1000

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
SYNC_STEP1 = 0
SYNC_STEP2 = 1


def var_uint(value: int) -> bytes:
    """
    lib0's variable-length unsigned integer.
    """
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    """
    lib0's length-prefixed byte array.
    """
    return var_uint(len(data)) + data


def read_var_uint(data: bytes, position: int) -> tuple[int, int]:
    """
    Decode a lib0 varuint at C{position}; return it and the next position.
    """
    value = 0
    shift = 0
    for index in range(position, min(len(data), position + 8)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index + 1
    raise AssertionError(f"bad varuint in {data!r} at {position}")


def read_var_bytes(data: bytes, position: int) -> tuple[bytes, int]:
    """
    Decode a lib0 length-prefixed byte array.
    """
    length, position = read_var_uint(data, position)
    end = position + length
    assert end <= len(data), f"truncated bytes in {data!r}"
    return data[position:end], end


def awareness_message(entries: list[tuple[int, int, object]]) -> bytes:
    """
    A y-protocols awareness message for C{(client_id, clock, state)} entries.
    """
    body = var_uint(len(entries))
    for client_id, clock, state in entries:
        state_json = json.dumps(state).encode("utf-8")
        body += var_uint(client_id) + var_uint(clock) + var_bytes(state_json)
    return var_uint(MESSAGE_AWARENESS) + var_bytes(body)


def decode_awareness(frame: bytes) -> dict[int, tuple[int, object]]:
    """
    The C{client_id: (clock, state)} entries of an awareness message.
    """
    message_type, position = read_var_uint(frame, 0)
    assert message_type == MESSAGE_AWARENESS
    body, _ = read_var_bytes(frame, position)
    count, position = read_var_uint(body, 0)
    entries: dict[int, tuple[int, object]] = {}
    for _ in range(count):
        client_id, position = read_var_uint(body, position)
        clock, position = read_var_uint(body, position)
        state, position = read_var_bytes(body, position)
        entries[client_id] = (clock, json.loads(state))
    return entries


#: Sync step 1 of an empty document: its state vector has no entries.
EMPTY_STEP1 = var_uint(MESSAGE_SYNC) + var_uint(SYNC_STEP1) + var_bytes(var_uint(0))


@dataclass
class Frame:
    """
    One WebSocket frame received from the server.
    """

    opcode: int
    payload: bytes


class RawWebSocket:
    """
    A blocking WebSocket client with just enough of RFC 6455 for these tests.
    """

    def __init__(self, sock: socket.socket, buffered: bytes) -> None:
        self._sock = sock
        self._buffer = bytearray(buffered)

    @classmethod
    def connect(cls, port: int, path: str) -> RawWebSocket:
        """
        Open a WebSocket to Kraken on 127.0.0.1, failing unless it answers 101.
        """
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode('ascii')}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        answer = bytearray()
        while b"\r\n\r\n" not in answer:
            assert len(answer) < _MAX_HEADER_BYTES, "handshake answer too long"
            chunk = sock.recv(4096)
            assert chunk, f"connection closed during handshake: {bytes(answer)!r}"
            answer += chunk
        head, _, rest = bytes(answer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), head
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode("ascii")
        assert headers.get("sec-websocket-accept") == accept, headers
        return cls(sock, rest)

    def _read_exact(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server in time")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the TCP connection")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header.append(0x80 | length)
        elif length < 2**16:
            header.append(0x80 | 126)
            header += struct.pack("!H", length)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self._sock.sendall(bytes(header) + mask + masked)

    def send_binary(self, payload: bytes) -> None:
        """
        Send one binary message.
        """
        self._send_frame(_OP_BINARY, payload)

    def receive(self, deadline: float) -> Frame:
        """
        The next data or close frame; pings are answered on the way.
        """
        for _ in range(_MAX_FRAMES):
            first, second = self._read_exact(2, deadline)
            assert first & 0x80, "fragmented frames are not expected here"
            assert not second & 0x80, "a server must not mask its frames"
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read_exact(2, deadline))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read_exact(8, deadline))
            frame = Frame(first & 0x0F, self._read_exact(length, deadline))
            if frame.opcode == _OP_PING:
                self._send_frame(_OP_PONG, frame.payload)
                continue
            return frame
        raise AssertionError("too many control frames")

    def receive_binary_until(self, wanted: str) -> list[bytes]:
        """
        Binary messages up to and including the first one starting with the
        bytes that C{wanted} names; fail on a text or close frame first.
        """
        prefixes = {
            "step1": bytes([MESSAGE_SYNC, SYNC_STEP1]),
            "step2": bytes([MESSAGE_SYNC, SYNC_STEP2]),
            "awareness": bytes([MESSAGE_AWARENESS]),
        }
        deadline = time.monotonic() + DEADLINE
        seen: list[bytes] = []
        for _ in range(_MAX_FRAMES):
            frame = self.receive(deadline)
            assert frame.opcode == _OP_BINARY, frame
            seen.append(frame.payload)
            if frame.payload.startswith(prefixes[wanted]):
                return seen
        raise AssertionError(f"no {wanted} message among {seen!r}")

    def wait_for_awareness(self, client_id: int, clock: int) -> tuple[int, object]:
        """
        Read until an awareness message carries C{client_id} at C{clock}.
        """
        deadline = time.monotonic() + DEADLINE
        for _ in range(_MAX_FRAMES):
            frame = self.receive(deadline)
            assert frame.opcode == _OP_BINARY, frame
            if not frame.payload.startswith(bytes([MESSAGE_AWARENESS])):
                continue
            entry = decode_awareness(frame.payload).get(client_id)
            if entry is not None and entry[0] == clock:
                return entry
        raise AssertionError(f"no awareness for {client_id} at clock {clock}")

    def drop(self) -> None:
        """
        Close the TCP connection without a close frame, as a crashed tab would.
        """
        self._sock.close()


def joined(kraken: KrakenProcess, room: str, token: str) -> RawWebSocket:
    """
    A raw connection that has done what the stock client does on open: read
    the server's step 1, send its own and read the step 2 answer.
    """
    raw = RawWebSocket.connect(kraken.port, f"/{room}?token={token}")
    raw.receive_binary_until("step1")
    raw.send_binary(EMPTY_STEP1)
    raw.receive_binary_until("step2")
    return raw


def test_server_echoes_a_clients_own_awareness_back(kraken: KrakenProcess) -> None:
    """
    Kraken sends a connection's own awareness update back to it, renewals too.
    """
    token = kraken.register_app("echo-app")
    raw = joined(kraken, "alone", token)
    try:
        state = {"user": {"name": "solo"}}
        raw.send_binary(awareness_message([(4242, 1, state)]))
        assert raw.wait_for_awareness(4242, 1) == (1, state)

        # The stock client renews an unchanged state every 15 s and counts on
        # the echo of that renewal to keep its 30 s watchdog quiet.
        raw.send_binary(awareness_message([(4242, 2, state)]))
        assert raw.wait_for_awareness(4242, 2) == (2, state)
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
        raw.send_binary(awareness_message([(777, 1, {"user": "raw"})]))
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

    raw = RawWebSocket.connect(kraken.port, f"/doc/welcome?token={token}")
    try:
        deadline = time.monotonic() + DEADLINE
        first = raw.receive(deadline)
        second = raw.receive(deadline)
    finally:
        raw.drop()
    assert first.opcode == second.opcode == _OP_BINARY
    assert first.payload.startswith(bytes([MESSAGE_SYNC, SYNC_STEP1]))
    entries = decode_awareness(second.payload)
    assert entries[stock_id][1] == {"user": "present"}
