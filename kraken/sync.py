"""
The y-websocket wire format: decoding client frames and encoding server frames.

Every WebSocket binary frame carries exactly one y-protocols message: a
variable-length unsigned integer naming the message type, then a body whose
shape depends on it.  This module knows those shapes and nothing else: it does
no I/O and keeps no state, so it can be tested and fuzzed with plain function
calls.  Every malformed input raises L{ProtocolError}, never C{IndexError} or
any other accident of the parsing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

#: The largest integer lib0's decoder accepts (JavaScript's safe integers).
MAX_VAR_UINT = 2**53 - 1


class MessageType(IntEnum):
    """
    The outer message types of the y-websocket protocol.
    """

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    """
    The sub-types of a sync message.
    """

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class ProtocolError(Exception):
    """
    The peer sent bytes that are not a valid message.

    This is the one exception the decoders raise; the WebSocket adapter turns
    it into a 1002 close of that one connection.
    """


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """
    A request for everything the sender lacks, given its state vector.
    """

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """
    The answer to a step 1: an update holding what the receiver lacked.
    """

    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """
    An incremental document update.
    """

    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    """
    An awareness update, still encoded (see L{kraken.awareness}).
    """

    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """
    A request for every awareness state the receiver knows.
    """


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness


class UnsupportedMessage(ProtocolError):
    """
    A well-formed message of a type clients must not send (auth) or of an
    unknown type.

    @ivar message_type: the outer type number the peer sent.
    """

    def __init__(self, message_type: int) -> None:
        super().__init__(f"unsupported message type {message_type}")
        self.message_type = message_type


def read_var_uint(data: bytes, position: int) -> tuple[int, int]:
    """
    Read one lib0 variable-length unsigned integer.

    @return: the value and the position just after it.
    @raise ProtocolError: the number is truncated or larger than 2**53 - 1.
    """
    value = 0
    shift = 0
    length = len(data)

    while True:
        if position >= length:
            raise ProtocolError("truncated integer")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 53:
            raise ProtocolError("integer out of range")

    if value > MAX_VAR_UINT:
        raise ProtocolError("integer out of range")
    return value, position


def read_var_bytes(data: bytes, position: int) -> tuple[bytes, int]:
    """
    Read a length-prefixed byte string.

    @return: the bytes and the position just after them.
    @raise ProtocolError: the length runs past the end of C{data}.
    """
    length, position = read_var_uint(data, position)
    end = position + length
    if end > len(data):
        raise ProtocolError("byte string runs past the end of the message")
    return data[position:end], end


def read_var_string(data: bytes, position: int) -> tuple[str, int]:
    """
    Read a length-prefixed UTF-8 string.

    @raise ProtocolError: the bytes are truncated or not UTF-8.
    """
    raw, position = read_var_bytes(data, position)
    try:
        return raw.decode("utf-8"), position
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None


def write_var_uint(value: int) -> bytes:
    """
    Encode a non-negative integer the way lib0 does.
    """
    if value < 0x80:
        return bytes((value,))

    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    """
    Encode a byte string with its length in front.
    """
    return b"".join((write_var_uint(len(data)), data))


def write_var_string(text: str) -> bytes:
    """
    Encode a string as lib0 does: its UTF-8 byte length, then the bytes.

    (pycrdt's encoder writes the character count instead, which breaks
    non-ASCII text; this one does not.)
    """
    return write_var_bytes(text.encode("utf-8"))


def decode_message(frame: bytes) -> Message:
    """
    Decode one client frame.

    Trailing bytes after the message are ignored, as the stock client does.

    @raise UnsupportedMessage: the frame is an auth message or of an unknown
        type.
    @raise ProtocolError: the frame is malformed.
    """
    message_type, position = read_var_uint(frame, 0)

    if message_type == MessageType.SYNC:
        sync_type, position = read_var_uint(frame, position)
        body, _ = read_var_bytes(frame, position)
        if sync_type == SyncType.STEP1:
            return SyncStep1(body)
        if sync_type == SyncType.STEP2:
            return SyncStep2(body)
        if sync_type == SyncType.UPDATE:
            return SyncUpdate(body)
        raise ProtocolError(f"unknown sync message type {sync_type}")

    if message_type == MessageType.AWARENESS:
        body, _ = read_var_bytes(frame, position)
        return AwarenessMessage(body)

    if message_type == MessageType.QUERY_AWARENESS:
        return QueryAwareness()

    raise UnsupportedMessage(message_type)


_STEP1_PREFIX = bytes((MessageType.SYNC, SyncType.STEP1))
_STEP2_PREFIX = bytes((MessageType.SYNC, SyncType.STEP2))
_UPDATE_PREFIX = bytes((MessageType.SYNC, SyncType.UPDATE))
_AWARENESS_PREFIX = bytes((MessageType.AWARENESS,))


def encode_sync_step1(state_vector: bytes) -> bytes:
    """
    Frame a sync step 1 carrying C{state_vector}.
    """
    return _STEP1_PREFIX + write_var_bytes(state_vector)


def _prefixed(prefix: bytes, data: bytes) -> bytes:
    """
    C{prefix}, then C{data} with its length in front, copying C{data} once
    (a step 2 can carry a whole 10 MB document).
    """
    return b"".join((prefix, write_var_uint(len(data)), data))


def encode_sync_step2(update: bytes) -> bytes:
    """
    Frame a sync step 2 carrying C{update}.
    """
    return _prefixed(_STEP2_PREFIX, update)


def encode_sync_update(update: bytes) -> bytes:
    """
    Frame an incremental update.
    """
    return _prefixed(_UPDATE_PREFIX, update)


def encode_awareness(payload: bytes) -> bytes:
    """
    Frame an encoded awareness update.
    """
    return _prefixed(_AWARENESS_PREFIX, payload)


def encode_permission_denied(reason: str) -> bytes:
    """
    Frame an auth message telling the client it was denied, with a reason.

    The stock client only logs it; the close code that follows is what stops
    the client from reconnecting.
    """
    return bytes((MessageType.AUTH, 0)) + write_var_string(reason)
