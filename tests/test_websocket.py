"""
The WebSocket adapter on the wire: an in-process Kraken on 127.0.0.1 and
Autobahn clients that send good and bad frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import pytest_twisted
from pycrdt import Doc, Text
from twisted.logger import LogEvent

from bench.wsraw import OP_BINARY, OP_CONTINUATION, OP_PING, frame_bytes
from kraken.awareness import AwarenessEntry, encode_awareness_update
from kraken.config import Limits
from kraken.sync import (
    AwarenessMessage,
    SyncStep1,
    encode_awareness,
    encode_sync_update,
)
from tests import wsclients
from tests.wsclients import Start, warnings, within

start_kraken = wsclients.start_kraken
log_events = wsclients.log_events


def big_update(size: int) -> bytes:
    """
    A valid update inserting C{size} characters into a fresh document.
    """
    doc: Doc[Text] = Doc()
    doc.get("text", type=Text).insert(0, "x" * size)
    return doc.get_update()


@dataclass(frozen=True)
class BadInput:
    """
    A frame a client must not send, and the close code it earns.
    """

    frame: bytes
    binary: bool
    code: int
    limits: Limits = field(default_factory=Limits)


BAD_INPUTS = {
    "truncated-varint": BadInput(b"\x80", True, 1002),
    "auth-message": BadInput(b"\x02\x00\x02no", True, 1002),
    "unknown-message-type": BadInput(b"\x07\x00", True, 1002),
    "unknown-sync-type": BadInput(b"\x00\x05\x00", True, 1002),
    "length-past-end": BadInput(b"\x00\x02\x10abc", True, 1002),
    "update-pycrdt-rejects": BadInput(encode_sync_update(b"garbage"), True, 1002),
    "awareness-state-nested-too-deep": BadInput(
        encode_awareness(
            encode_awareness_update([AwarenessEntry(5, 1, "[" * 3000 + "]" * 3000)])
        ),
        True,
        1002,
    ),
    "message-over-max-message-bytes": BadInput(
        encode_sync_update(big_update(2000)),
        True,
        1009,
        Limits(max_message_bytes=1024),
    ),
    "update-over-max-document-bytes": BadInput(
        encode_sync_update(big_update(3000)),
        True,
        4413,
        Limits(max_document_bytes=2048),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
@pytest_twisted.ensureDeferred
async def test_bad_input_closes_only_that_connection(
    start_kraken: Start, log_events: list[LogEvent], case: BadInput
) -> None:
    """
    A bad frame closes its connection with the precise code and one warning,
    while the other connections of the room keep syncing and the stored
    document stays intact.
    """
    kraken = await start_kraken(case.limits)
    writer, reader = await kraken.synced(), await kraken.synced()
    writer.insert("before")
    await reader.wait_text("before")
    bad = await kraken.connect()
    log_events.clear()

    bad.send(case.frame, case.binary)
    code = await within(bad.closed)

    assert code == case.code
    writer.insert(" after")
    await reader.wait_text("before after")
    late = await kraken.synced()
    assert str(late.text) == "before after"
    assert await kraken.stored_text() == "before after"
    assert len(warnings(log_events)) == 1, [
        event.get("log_format") for event in warnings(log_events)
    ]


@pytest_twisted.ensureDeferred
async def test_frames_of_every_kind_in_one_read_are_handled_in_order(
    start_kraken: Start,
) -> None:
    """
    Kraken reads plain binary frames itself and leaves the others to
    Autobahn; when both kinds arrive in one TCP read (a ping between
    updates, a fragmented update, a frame cut in two) every one is handled,
    in order.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()
    pongs: list[bytes] = []
    writer.onPong = pongs.append  # type: ignore[method-assign]
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    updates = []
    for part in ("one ", "two ", "three ", "four ", "five"):
        before = doc.get_state()
        text += part
        updates.append(encode_sync_update(doc.get_update(before)))
    fragmented = frame_bytes(OP_BINARY, updates[2][:3], fin=False) + frame_bytes(
        OP_CONTINUATION, updates[2][3:]
    )
    cut = frame_bytes(OP_BINARY, updates[4])

    writer.transport.write(
        frame_bytes(OP_BINARY, updates[0])
        + frame_bytes(OP_PING, b"are you there")
        + frame_bytes(OP_BINARY, updates[1])
        + fragmented
        + frame_bytes(OP_BINARY, updates[3])
        + cut[:5]
    )
    await reader.wait_text("one two three four ")
    writer.transport.write(cut[5:])
    await reader.wait_text("one two three four five")

    assert pongs == [b"are you there"]
    assert await kraken.stored_text() == "one two three four five"


@pytest_twisted.ensureDeferred
async def test_updates_in_one_read_are_forwarded_as_one_message(
    start_kraken: Start,
) -> None:
    """
    Updates that reach the server in one read are applied together: the
    other member gets them in one message, and they are stored.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    frames = b""
    for part in ("one ", "two ", "three ", "four"):
        before = doc.get_state()
        text += part
        frames += frame_bytes(OP_BINARY, encode_sync_update(doc.get_update(before)))
    received_before = len(reader.messages())

    writer.transport.write(frames)
    await reader.wait_text("one two three four")

    assert len(reader.messages()) - received_before == 1
    assert await kraken.stored_text() == "one two three four"


@pytest.mark.parametrize(
    "bad",
    [b"\x00\x02\x05ab", b"\x00\x07\x00", b"\x09\x00", b"\x02\x00", b""],
    ids=["truncated", "unknown-sync-type", "unknown-type", "auth", "empty"],
)
@pytest_twisted.ensureDeferred
async def test_updates_read_before_a_bad_message_are_kept(
    start_kraken: Start, bad: bytes
) -> None:
    """
    When a bad message follows updates in the same read, the updates before
    it are applied, forwarded and stored, as if each had come alone; the
    sender is closed with 1002 and what followed is not applied.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    updates = []
    for part in ("kept ", "too", " lost"):
        before = doc.get_state()
        text += part
        updates.append(encode_sync_update(doc.get_update(before)))

    writer.transport.write(
        b"".join(
            frame_bytes(OP_BINARY, message)
            for message in (updates[0], updates[1], bad, updates[2])
        )
    )
    code = await within(writer.closed)
    await reader.wait_text("kept too")

    assert code == 1002
    assert await kraken.stored_text() == "kept too"
    assert str(reader.text) == "kept too"


@pytest_twisted.ensureDeferred
async def test_server_sends_step1_on_open_as_a_binary_frame(
    start_kraken: Start,
) -> None:
    """
    The first frame a connection gets is the server's step 1, in binary.
    """
    kraken = await start_kraken()

    client = await kraken.connect()

    assert client.frames[0] == (b"\x00\x00\x01\x00", True)


@pytest_twisted.ensureDeferred
async def test_every_frame_the_server_sends_is_binary(start_kraken: Start) -> None:
    """
    Step 1, step 2, updates and awareness all arrive as binary frames.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()

    writer.insert("hello")
    writer.send(bytes.fromhex("010a01dae3f39c0e01027b7d"))
    await reader.wait_until(
        lambda: any(isinstance(m, AwarenessMessage) for m in reader.messages())
    )
    await reader.wait_text("hello")

    assert all(binary for _, binary in reader.frames + writer.frames)


@pytest_twisted.ensureDeferred
async def test_client_offering_subprotocols_gets_the_first(
    start_kraken: Start,
) -> None:
    """
    A client that offers subprotocols is answered with the first it offered,
    so that browsers and Node's ws accept the handshake.
    """
    kraken = await start_kraken()

    client = await kraken.connect(protocols=["y-sync", "other"])

    assert client.websocket_protocol_in_use == "y-sync"


@pytest_twisted.ensureDeferred
async def test_unsynced_connection_receives_no_updates(start_kraken: Start) -> None:
    """
    A connection that never sent step 1 is sent no updates, only its
    welcome and what it asks for.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()
    silent = await kraken.connect()

    writer.insert("hello")
    await reader.wait_text("hello")
    silent.send(b"\x03")
    await silent.wait_until(
        lambda: any(isinstance(m, AwarenessMessage) for m in silent.messages())
    )

    assert [type(m) for m in silent.messages()] == [SyncStep1, AwarenessMessage]


@pytest_twisted.ensureDeferred
async def test_update_reaches_another_client_and_the_store(
    start_kraken: Start,
) -> None:
    """
    An update sent by one client reaches the other and is in the store by
    the time it arrives.
    """
    kraken = await start_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()

    writer.insert("hello")
    await reader.wait_text("hello")

    assert await kraken.stored_text() == "hello"


@pytest_twisted.ensureDeferred
async def test_rooms_are_apart(start_kraken: Start) -> None:
    """
    An update in one room does not reach a client of another room.
    """
    kraken = await start_kraken()
    writer = await kraken.synced("one")
    other = await kraken.synced("two")
    reader = await kraken.synced("one")

    writer.insert("hello")
    await reader.wait_text("hello")
    other.send(b"\x03")
    await other.wait_until(
        lambda: any(isinstance(m, AwarenessMessage) for m in other.messages())
    )

    assert str(other.text) == ""
    assert await kraken.stored_text("two") == ""


@pytest.mark.parametrize(("code", "logged"), [(None, 1005), (1000, 1000), (4000, 4000)])
@pytest_twisted.ensureDeferred
async def test_close_is_logged_once_with_its_code(
    start_kraken: Start, log_events: list[LogEvent], code: int | None, logged: int
) -> None:
    """
    A connection is logged once, when it closes, with the client's close
    code; a close frame without one (what the stock client sends when it is
    destroyed) is logged as 1005, the code RFC 6455 gives that case.
    """
    kraken = await start_kraken()
    client = await kraken.synced()
    log_events.clear()

    client.sendClose(code)
    await within(client.closed)

    lines = [
        event
        for event in log_events
        if str(event.get("log_format", "")).startswith("Connection ")
    ]
    assert [event["code"] for event in lines] == [logged]
