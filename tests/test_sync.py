"""
The y-websocket codec: lib0 integers, client frames in, server frames out.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.awareness import AwarenessEntry, decode_awareness_update
from kraken.sync import (
    MAX_VAR_UINT,
    AwarenessMessage,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    UnsupportedMessage,
    decode_message,
    encode_awareness,
    encode_permission_denied,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
    read_var_bytes,
    read_var_string,
    read_var_uint,
    write_var_bytes,
    write_var_string,
    write_var_uint,
)

FUZZ = settings(max_examples=300, deadline=None)

#: Frames that start like each real message type, so that random tails reach
#: the decoders past the first byte.
_PREFIXES = [b"", b"\x00", b"\x00\x00", b"\x00\x01", b"\x00\x02", b"\x01", b"\x03"]


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (MAX_VAR_UINT, b"\xff\xff\xff\xff\xff\xff\xff\x0f"),
    ],
)
def test_var_uint_encodes_as_lib0_does(value: int, encoded: bytes) -> None:
    """
    An integer encodes to lib0's bytes and decodes back to itself.
    """
    assert write_var_uint(value) == encoded
    assert read_var_uint(encoded, 0) == (value, len(encoded))


@given(st.integers(min_value=0, max_value=MAX_VAR_UINT))
@FUZZ
def test_var_uint_round_trips(value: int) -> None:
    """
    Every integer lib0 accepts decodes to the value that was encoded.
    """
    encoded = write_var_uint(value)

    assert read_var_uint(encoded + b"\xff", 0) == (value, len(encoded))


def test_var_uint_reads_from_a_position() -> None:
    """
    Reading starts at the given position and returns the position after it.
    """
    assert read_var_uint(b"\x05\xac\x02\x07", 1) == (300, 3)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\x80" * 7])
def test_truncated_var_uint_raises_protocol_error(data: bytes) -> None:
    """
    An integer whose last byte still says "more follows" is refused.
    """
    with pytest.raises(ProtocolError):
        read_var_uint(data, 0)


@pytest.mark.parametrize(
    "data",
    [
        write_var_uint(2**53),
        write_var_uint(2**60),
        b"\xff" * 8 + b"\x01",
        b"\x80" * 20 + b"\x00",
    ],
)
def test_var_uint_over_range_raises_protocol_error(data: bytes) -> None:
    """
    An integer above 2**53 - 1, or one longer than lib0 reads, is refused.
    """
    with pytest.raises(ProtocolError):
        read_var_uint(data, 0)


def test_var_bytes_length_past_the_end_raises_protocol_error() -> None:
    """
    A byte string whose length runs past the end of the data is refused.
    """
    with pytest.raises(ProtocolError):
        read_var_bytes(b"\x05abcd", 0)


def test_var_bytes_round_trip() -> None:
    """
    A length-prefixed byte string decodes to the bytes and the next position.
    """
    encoded = write_var_bytes(b"abc")

    assert encoded == b"\x03abc"
    assert read_var_bytes(encoded + b"rest", 0) == (b"abc", 4)


def test_var_string_carries_the_utf8_byte_length() -> None:
    """
    A string is prefixed with its UTF-8 byte length, not its character count.
    """
    assert write_var_string("nö") == b"\x03n\xc3\xb6"
    assert read_var_string(b"\x03n\xc3\xb6", 0) == ("nö", 4)


def test_var_string_that_is_not_utf8_raises_protocol_error() -> None:
    """
    A string whose bytes are not UTF-8 is refused.
    """
    with pytest.raises(ProtocolError):
        read_var_string(b"\x02\xc3\x28", 0)


def test_decode_step1() -> None:
    """
    A sync step 1 decodes to its state vector (the empty-doc bytes).
    """
    assert decode_message(b"\x00\x00\x01\x00") == SyncStep1(b"\x00")


def test_decode_step2() -> None:
    """
    A sync step 2 decodes to its update (the empty-doc bytes).
    """
    assert decode_message(b"\x00\x01\x02\x00\x00") == SyncStep2(b"\x00\x00")


def test_decode_update() -> None:
    """
    A sync update decodes to its update.
    """
    assert decode_message(b"\x00\x02\x03abc") == SyncUpdate(b"abc")


def test_decode_awareness() -> None:
    """
    An awareness message decodes to its still-encoded payload.
    """
    payload = b"\x01\x05\x00\x02{}"

    assert decode_message(b"\x01\x06" + payload) == AwarenessMessage(payload)


def test_decode_query_awareness() -> None:
    """
    A query-awareness message has no body.
    """
    assert decode_message(b"\x03") == QueryAwareness()


def test_trailing_bytes_are_ignored() -> None:
    """
    Bytes after the message are ignored, as the stock client ignores them.
    """
    assert decode_message(b"\x00\x02\x01zjunk") == SyncUpdate(b"z")


def test_auth_message_raises_unsupported_message() -> None:
    """
    An auth message from a client (type 2) is refused as unsupported.
    """
    with pytest.raises(UnsupportedMessage) as raised:
        decode_message(encode_permission_denied("no"))

    assert raised.value.message_type == 2


@pytest.mark.parametrize("message_type", [4, 127, 128, 300, MAX_VAR_UINT])
def test_unknown_message_type_raises_unsupported_message(message_type: int) -> None:
    """
    An outer message type outside the protocol is refused as unsupported.
    """
    with pytest.raises(UnsupportedMessage) as raised:
        decode_message(write_var_uint(message_type) + b"\x00\x00")

    assert raised.value.message_type == message_type


def test_unsupported_message_is_a_protocol_error() -> None:
    """
    The adapter can catch every refusal of the codec as one ProtocolError.
    """
    assert issubclass(UnsupportedMessage, ProtocolError)


@pytest.mark.parametrize("sync_type", [3, 4, 128])
def test_unknown_sync_type_raises_protocol_error(sync_type: int) -> None:
    """
    A sync message with a sub-type other than step 1, step 2 or update is
    refused, but not as an unsupported outer type.
    """
    frame = b"\x00" + write_var_uint(sync_type) + b"\x00"

    with pytest.raises(ProtocolError) as raised:
        decode_message(frame)

    assert not isinstance(raised.value, UnsupportedMessage)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x80",
        b"\x00",
        b"\x00\x80",
        b"\x00\x00",
        b"\x00\x02\x05abc",
        b"\x00\x02\x80",
        b"\x01",
        b"\x01\x05ab",
    ],
)
def test_malformed_frame_raises_protocol_error(frame: bytes) -> None:
    """
    A truncated frame, or one whose length runs past its end, is refused.
    """
    with pytest.raises(ProtocolError):
        decode_message(frame)


def test_encode_step1() -> None:
    """
    The server's step 1 for an empty document is the bytes lib0 writes.
    """
    assert encode_sync_step1(b"\x00") == b"\x00\x00\x01\x00"


def test_encode_step2() -> None:
    """
    A step 2 answer for an empty document is the bytes lib0 writes.
    """
    assert encode_sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"


def test_encode_update() -> None:
    """
    An update frame is the sync type, the update sub-type, then the update.
    """
    assert encode_sync_update(b"abc") == b"\x00\x02\x03abc"


def test_encode_awareness() -> None:
    """
    An awareness frame is type 1 and the length-prefixed payload.
    """
    assert encode_awareness(b"\x00") == b"\x01\x01\x00"


def test_permission_denied_uses_the_utf8_byte_length() -> None:
    """
    The reason of a permission-denied message is prefixed with its UTF-8
    byte length, which lib0's strict decoder needs for non-ASCII text.
    """
    assert encode_permission_denied("nö") == b"\x02\x00\x03n\xc3\xb6"


@given(st.binary(max_size=64))
@FUZZ
def test_sync_frames_round_trip(body: bytes) -> None:
    """
    Every sync frame the server encodes decodes back to the same message.
    """
    assert decode_message(encode_sync_step1(body)) == SyncStep1(body)
    assert decode_message(encode_sync_step2(body)) == SyncStep2(body)
    assert decode_message(encode_sync_update(body)) == SyncUpdate(body)
    assert decode_message(encode_awareness(body)) == AwarenessMessage(body)


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=64))
@FUZZ
def test_var_string_round_trips(text: str) -> None:
    """
    Every string decodes back to itself and the position after it.
    """
    encoded = write_var_string(text)

    assert read_var_string(encoded, 0) == (text, len(encoded))


@given(st.sampled_from(_PREFIXES), st.binary(max_size=64))
@FUZZ
def test_any_bytes_decode_to_a_message_or_a_protocol_error(
    prefix: bytes, tail: bytes
) -> None:
    """
    Whatever a client sends, decoding returns a message or raises
    ProtocolError, never another exception.
    """
    try:
        message = decode_message(prefix + tail)
    except ProtocolError:
        return

    assert isinstance(
        message, SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness
    )


@given(st.sampled_from([b"", b"\x01", b"\x01\x01", b"\x02"]), st.binary(max_size=64))
@FUZZ
def test_any_bytes_decode_to_awareness_entries_or_a_protocol_error(
    prefix: bytes, tail: bytes
) -> None:
    """
    Whatever awareness payload a client sends, decoding returns entries or
    raises ProtocolError, never another exception.
    """
    try:
        entries = decode_awareness_update(prefix + tail)
    except ProtocolError:
        return

    assert all(isinstance(entry, AwarenessEntry) for entry in entries)


_STATES = st.one_of(
    st.text(max_size=32),
    st.integers(min_value=0, max_value=5000).map(lambda depth: "[" * depth),
    st.integers(min_value=0, max_value=5000).map(lambda depth: '{"a":' * depth),
)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=MAX_VAR_UINT),
            st.integers(min_value=0, max_value=MAX_VAR_UINT),
            _STATES,
        ),
        max_size=4,
    )
)
@FUZZ
def test_any_awareness_state_decodes_or_raises_protocol_error(
    raw: list[tuple[int, int, str]],
) -> None:
    """
    Whatever state text an awareness entry carries, decoding returns entries
    or raises ProtocolError, never another exception.
    """
    payload = write_var_uint(len(raw)) + b"".join(
        write_var_uint(client_id)
        + write_var_uint(clock)
        + write_var_string(state.encode("utf-8", "replace").decode("utf-8"))
        for client_id, clock, state in raw
    )

    try:
        entries = decode_awareness_update(payload)
    except ProtocolError:
        return

    assert [(e.client_id, e.clock) for e in entries] == [(c, k) for c, k, _ in raw]
