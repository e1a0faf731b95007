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
