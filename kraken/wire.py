"""
WebSocket frames on the hot path: the common client frame read without
Autobahn, and the bytes Kraken puts on a connection's socket for a broadcast.

Nearly every frame a y-websocket client sends is small, complete, masked and
binary; L{read_binary_frame} unmasks those and leaves every other frame, and
every check they need, to Autobahn.

A room sends the same update to every member.  Going through Autobahn's
C{sendMessage} for each of them re-frames the message and, on every send,
builds the arguments of a debug log line; going through Twisted's buffered
C{write} registers the socket for writability and unregisters it again on the
next turn of the reactor, two system calls per member and update.  Here the
frame is built once (RFC 6455 section 5.2: a server's frames are not masked)
and written to each socket at once when nothing is queued before it, which is
what Node's C{ws} does.  Whatever the socket does not take is handed to
Twisted's buffer as usual.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet import tcp

#: The first byte of an unfragmented frame: FIN and the opcode.
_BINARY_FRAME = 0x82

#: The largest payload L{read_binary_frame} reads: up to this size one
#: integer XOR unmasks faster than Autobahn's native masker is created and
#: run; larger frames (a pasted document) are rare and left to Autobahn.
_FAST_FRAME_BYTES = 2048


def binary_frame(payload: bytes) -> bytes:
    """
    One unmasked, unfragmented binary WebSocket frame around C{payload}.
    """
    length = len(payload)
    if length < 126:
        header = bytes((_BINARY_FRAME, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _BINARY_FRAME, 126, length)
    else:
        header = struct.pack("!BBQ", _BINARY_FRAME, 127, length)
    return header + payload


def read_binary_frame(
    data: bytes, start: int, max_payload: int
) -> tuple[bytes, int] | None:
    """
    The unmasked payload of the client frame at C{data[start:]}, and the
    offset where the frame ends, if it is the common case: complete,
    unfragmented, binary, masked (as every client frame must be, RFC 6455
    section 5.3), without extension bits, and no larger than C{max_payload}
    or 2 KiB.  Anything else is C{None}, and Autobahn parses it, checks
    included.

    Autobahn creates a frame object, a native masker and half a dozen method
    calls per frame; a y-websocket client's frames are nearly all of this
    kind and small.
    """
    available = len(data) - start
    if available < 6 or data[start] != _BINARY_FRAME:
        return None
    second = data[start + 1]
    if not second & 0x80:
        return None

    length = second & 0x7F
    mask_at = start + 2
    if length == 126:
        if available < 8:
            return None
        length = (data[mask_at] << 8) | data[mask_at + 1]
        if length < 126:
            return None
        mask_at += 2
    elif length == 127:
        return None
    end = mask_at + 4 + length
    if length > max_payload or length > _FAST_FRAME_BYTES or end > len(data):
        return None

    mask = data[mask_at : mask_at + 4]
    return unmask(data[mask_at + 4 : end], mask), end


def unmask(payload: bytes, mask: bytes) -> bytes:
    """
    C{payload} XORed with the repeated four-byte C{mask}.
    """
    length = len(payload)
    if not length:
        return b""
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(length, "little")


def buffered_bytes(transport: object) -> int:
    """
    How many bytes a TCP transport holds that the peer has not read yet.

    Twisted keeps no public count, so this reads the attributes of
    L{twisted.internet.abstract.FileDescriptor}; another transport (TLS)
    reports 0, which disables the slow-reader limit for it.
    """
    try:
        connection: Any = transport
        return int(
            len(connection.dataBuffer) - connection.offset + connection._tempDataLen
        )
    except (AttributeError, TypeError):
        return 0


def write_now(transport: Any, data: bytes) -> None:
    """
    Write C{data} to a plain TCP connection's socket at once if nothing is
    queued before it, and queue what the socket does not take; any other
    transport (TLS, or one with a producer) gets an ordinary C{write}, and so
    does data larger than one send (a big document's step 2), which Twisted
    then writes without copying it again.

    A failed send is left to Twisted: the data is queued, and Twisted's own
    write finds the error and closes the connection the usual way.
    """
    if (
        not isinstance(transport, tcp.Connection)
        or len(data) > transport.SEND_LIMIT
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
        or transport.producer is not None
        or buffered_bytes(transport)
    ):
        transport.write(data)
        return

    sent = transport.writeSomeData(data)
    if isinstance(sent, Exception):
        transport.write(data)
    elif sent < len(data):
        transport.write(data[sent:])


class HeldWrites:
    """
    Broadcast writes held while a burst of commits is handled, then written
    out as one write per socket.

    When several updates are committed in one transaction, each member would
    otherwise get one system call per update; held, it gets one for all of
    them.  Anything else a connection writes (a signaling message, a close
    frame) must first L{release} what is held for it, so that the order on
    the wire stays the order of the calls.
    """

    def __init__(self) -> None:
        self._held: dict[Any, list[bytes]] | None = None

    @contextmanager
    def holding(self) -> Iterator[None]:
        """
        Hold broadcast writes until the block ends (nested blocks end with
        the outermost).
        """
        if self._held is not None:
            yield
            return
        self._held = {}
        try:
            yield
        finally:
            held, self._held = self._held, None
            for transport, chunks in held.items():
                write_now(transport, b"".join(chunks))

    def write(self, transport: Any, data: bytes) -> None:
        """
        Write C{data} now, or hold it if a burst is being handled.
        """
        if self._held is None:
            write_now(transport, data)
        else:
            self._held.setdefault(transport, []).append(data)

    def release(self, transport: Any) -> None:
        """
        Write out at once what is held for C{transport}.
        """
        if self._held is None:
            return
        chunks = self._held.pop(transport, None)
        if chunks:
            write_now(transport, b"".join(chunks))


#: The one holder of broadcast writes, for the reactor thread.
held_writes = HeldWrites()
