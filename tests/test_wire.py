"""
Broadcast frames and the immediate socket write (kraken.wire), on real TCP
connections of the reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from bench.wsraw import OP_BINARY, OP_PING, OP_TEXT, frame_bytes
from kraken.wire import (
    HeldWrites,
    binary_frame,
    buffered_bytes,
    read_binary_frame,
    write_now,
)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_binary_frame_is_the_frame_autobahn_builds(size: int) -> None:
    """
    The frame around a payload of every length class (7-bit, 16-bit and
    64-bit lengths) is byte for byte Autobahn's unmasked binary frame.
    """
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)

    expected = PreparedMessage(payload, True, False, True).payloadHybi

    assert binary_frame(payload) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1025, 2048])
def test_read_binary_frame_unmasks_a_client_frame(size: int) -> None:
    """
    A masked client frame of each length class Kraken reads itself comes
    back as its payload, with the offset of the next frame.
    """
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    before = b"\x00\x01\x02"
    frame = frame_bytes(OP_BINARY, payload)

    read = read_binary_frame(before + frame + b"next", len(before), 1 << 20)

    assert read == (payload, len(before) + len(frame))


def test_read_binary_frame_reads_consecutive_frames() -> None:
    """
    The offset returned is where the next frame starts.
    """
    data = frame_bytes(OP_BINARY, b"first") + frame_bytes(OP_BINARY, b"second")

    first = read_binary_frame(data, 0, 100)
    assert first is not None
    second = read_binary_frame(data, first[1], 100)

    assert (first[0], second) == (b"first", (b"second", len(data)))


def _unmasked(frame: bytes) -> bytes:
    header = bytes((frame[0], frame[1] & 0x7F))
    return header + b"\x00" * 4 + frame[6:]


LEFT_TO_AUTOBAHN = {
    "text": frame_bytes(OP_TEXT, b"hello"),
    "ping": frame_bytes(OP_PING, b"hello"),
    "first-fragment": frame_bytes(OP_BINARY, b"hello", fin=False),
    "extension-bit": bytes((0xC2,)) + frame_bytes(OP_BINARY, b"hello")[1:],
    "unmasked": _unmasked(frame_bytes(OP_BINARY, b"hello")),
    "64-bit-length": frame_bytes(OP_BINARY, bytes(70000)),
    "over-2-KiB": frame_bytes(OP_BINARY, bytes(2049)),
    "incomplete": frame_bytes(OP_BINARY, bytes(50))[:-1],
    "incomplete-header": frame_bytes(OP_BINARY, bytes(200))[:3],
    "non-minimal-length": bytes((0x82, 0xFE, 0, 5)) + bytes(4) + b"hello",
}


@pytest.mark.parametrize(
    "data", list(LEFT_TO_AUTOBAHN.values()), ids=list(LEFT_TO_AUTOBAHN)
)
def test_read_binary_frame_leaves_every_other_frame_to_autobahn(data: bytes) -> None:
    """
    Frames that are not complete, masked, unfragmented binary frames within
    the size limit are not read, so that Autobahn parses and checks them.
    """
    assert read_binary_frame(data, 0, 1 << 20) is None


def test_read_binary_frame_leaves_a_message_over_the_limit_to_autobahn() -> None:
    """
    A frame over the message size limit is not read, so that Autobahn
    reports its size to Kraken, which refuses it.
    """
    frame = frame_bytes(OP_BINARY, bytes(101))

    assert read_binary_frame(frame, 0, 100) is None
    assert read_binary_frame(frame, 0, 101) == (bytes(101), len(frame))


class Collector(Protocol):
    """
    A client that keeps what it receives until it has C{expected} bytes.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = bytearray()
        self.complete: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.complete.called:
            self.complete.callback(bytes(self.received))


class Accepted(Protocol):
    """
    The server side of one connection, handed to the test once connected.
    """

    def __init__(self, connected: Deferred[Any]) -> None:
        self._connected = connected

    def connectionMade(self) -> None:
        self._connected.callback(self.transport)


async def connection_pair(expected: int) -> tuple[Any, Collector, Any]:
    """
    A server transport, the client collecting C{expected} bytes from it, and
    the listening port.
    """
    connected: Deferred[Any] = Deferred()
    server = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    port = await server.listen(Factory.forProtocol(lambda: Accepted(connected)))
    collector = Collector(expected)
    client = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    await client.connect(Factory.forProtocol(lambda: collector))
    transport = await connected
    return transport, collector, port


@pytest_twisted.ensureDeferred
async def test_small_write_goes_to_the_socket_at_once() -> None:
    """
    With nothing queued, the bytes are in the socket when write_now returns,
    not in Twisted's buffer waiting for the next turn of the reactor.
    """
    transport, collector, port = await connection_pair(5)
    try:
        write_now(transport, b"hello")

        assert buffered_bytes(transport) == 0
        assert await collector.complete == b"hello"
    finally:
        transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_socket_does_not_take_is_queued_in_order() -> None:
    """
    Once the socket stops taking everything (its peer is not reading), the
    rest of a write is queued and later writes queue behind it, so the peer
    receives every byte in order.
    """
    transport, collector, port = await connection_pair(0)
    collector.transport.pauseProducing()
    try:
        written = bytearray()
        for index in range(200):
            chunk = bytes([index % 256]) * 100_000
            write_now(transport, chunk)
            written += chunk
            if buffered_bytes(transport):
                break
        queued = buffered_bytes(transport)
        tail = b"and then this"
        write_now(transport, tail)
        written += tail

        assert 0 < queued < len(written)
        assert buffered_bytes(transport) == queued + len(tail)
        collector.expected = len(written)
        collector.transport.resumeProducing()
        assert await collector.complete == bytes(written)
    finally:
        transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_data_larger_than_one_send_is_queued_whole() -> None:
    """
    Data larger than Twisted sends at once (a big document's step 2) is
    handed to Twisted's buffer whole instead of being split and copied.
    """
    big = bytes(range(256)) * 4096  # 1 MiB
    transport, collector, port = await connection_pair(len(big))
    try:
        write_now(transport, big)

        assert buffered_bytes(transport) == len(big)
        assert await collector.complete == big
    finally:
        transport.loseConnection()
        await port.stopListening()


class RecordingTransport:
    """
    A transport that records each write call (not TCP, so write_now hands
    every write to it unchanged).
    """

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_held_writes_go_out_as_one_write_per_transport() -> None:
    """
    Broadcasts made while holding reach each transport as one write, in the
    order they were made, when the outermost hold ends.
    """
    held = HeldWrites()
    first, second = RecordingTransport(), RecordingTransport()

    with held.holding():
        held.write(first, b"a")
        with held.holding():
            held.write(second, b"x")
            held.write(first, b"b")
        assert first.writes == second.writes == []
        held.write(first, b"c")

    assert first.writes == [b"abc"]
    assert second.writes == [b"x"]


def test_released_writes_go_out_before_what_follows() -> None:
    """
    Releasing a transport writes what is held for it at once, so that a
    close frame or signal written next comes after the held updates; other
    transports stay held.
    """
    held = HeldWrites()
    closing, other = RecordingTransport(), RecordingTransport()

    with held.holding():
        held.write(closing, b"update")
        held.write(other, b"update")
        held.release(closing)
        closing.write(b"close frame")
        assert other.writes == []

    assert closing.writes == [b"update", b"close frame"]
    assert other.writes == [b"update"]


def test_writes_outside_a_hold_are_not_held() -> None:
    """
    Without a hold, a broadcast write goes out at once.
    """
    held = HeldWrites()
    transport = RecordingTransport()

    held.write(transport, b"now")

    assert transport.writes == [b"now"]
