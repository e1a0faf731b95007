"""
The bytes Kraken puts on a connection's socket for a broadcast.

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
