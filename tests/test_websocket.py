"""
The WebSocket adapter on the wire: an in-process Kraken on 127.0.0.1 and
Autobahn clients that send good and bad frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from pycrdt import Doc, Text
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher

from kraken.awareness import AwarenessEntry, encode_awareness_update
from kraken.config import Limits, Settings
from kraken.sync import (
    AwarenessMessage,
    Message,
    ProtocolError,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_awareness,
    encode_sync_step1,
    encode_sync_update,
)
from kraken.tap import KrakenService, ListeningService

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-for-websocket-tests"
DEPLOYMENT_TOKEN = "deployment-token-for-websocket-tests"
APP_ID = "notes"
ROOM = "readme"

#: Seconds any single wait of these tests may take.
DEADLINE = 10.0


def within(deferred: Deferred[T], seconds: float = DEADLINE) -> Deferred[T]:
    """
    C{deferred}, failing with C{TimeoutError} after C{seconds}.
    """
    return deferred.addTimeout(seconds, reactor)


class SyncClient(WebSocketClientProtocol):
    """
    A minimal y-websocket client: it keeps a document of what it received
    and records every frame and its close code.
    """

    def __init__(self) -> None:
        super().__init__()
        self.doc: Doc[Text] = Doc()
        self.text = self.doc.get("text", type=Text)
        self.frames: list[tuple[bytes, bool]] = []
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[int | None] = Deferred()
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.frames.append((payload, isBinary))
        if isBinary:
            try:
                message = decode_message(payload)
            except ProtocolError:
                message = None
            if isinstance(message, SyncStep2 | SyncUpdate):
                self.doc.apply_update(message.update)
        self._check_waiters()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"closed before opening: {code}"))
        self.closed.callback(code)
        self._check_waiters()

    def _check_waiters(self) -> None:
        waiting, self._waiters = self._waiters, []
        for condition, waiter in waiting:
            if waiter.called:
                continue
            if condition():
                waiter.callback(None)
            else:
                self._waiters.append((condition, waiter))

    def wait_until(self, condition: Callable[[], bool]) -> Deferred[None]:
        """
        Fire once C{condition} holds after a frame or the close, or time out.
        """
        if condition():
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((condition, waiter))
        return within(waiter)

    def messages(self) -> list[Message]:
        """
        Every binary frame received, decoded.
        """
        return [decode_message(frame) for frame, binary in self.frames if binary]

    def send(self, frame: bytes, binary: bool = True) -> None:
        self.sendMessage(frame, isBinary=binary)

    def insert(self, content: str) -> None:
        """
        Append C{content} to the text and send the update.
        """
        before = self.doc.get_state()
        self.text.insert(len(self.text), content)
        self.send(encode_sync_update(self.doc.get_update(before)))

    async def sync(self) -> None:
        """
        Send step 1 and wait for the server's step 2.
        """
        self.send(encode_sync_step1(self.doc.get_state()))
        await self.wait_until(
            lambda: any(isinstance(m, SyncStep2) for m in self.messages())
        )

    async def wait_text(self, expected: str) -> None:
        await self.wait_until(lambda: str(self.text) == expected)


@dataclass
class Kraken:
    """
    A running in-process Kraken with one registered app.
    """

    service: KrakenService
    port: int
    token: str
    clients: list[SyncClient]

    async def connect(
        self, room: str = ROOM, protocols: list[str] | None = None
    ) -> SyncClient:
        """
        Open a connection to C{room} with the app token and wait for the
        server's first frame.
        """
        url = f"ws://127.0.0.1:{self.port}/doc/{room}?token={self.token}"
        factory = WebSocketClientFactory(url, protocols=protocols, reactor=reactor)
        factory.protocol = SyncClient
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client = cast(SyncClient, await within(endpoint.connect(factory)))
        self.clients.append(client)
        await within(client.opened)
        await client.wait_until(lambda: bool(client.frames))
        return client

    async def synced(self, room: str = ROOM) -> SyncClient:
        """
        A connection that has sent its step 1 and received the step 2.
        """
        client = await self.connect(room)
        await client.sync()
        return client

    async def stored_text(self, room: str = ROOM) -> str:
        """
        The text of the document as the store holds it.
        """
        stored = await self.service.store.load(APP_ID, room)
        doc: Doc[Text] = Doc()
        if stored.update is not None:
            doc.apply_update(stored.update)
        return str(doc.get("text", type=Text))


Start = Callable[..., Awaitable[Kraken]]


@pytest_twisted.async_yield_fixture
async def start_kraken(tmp_path: Path) -> AsyncIterator[Start]:
    """
    Start Kraken with the given limits; everything is stopped at the end.
    """
    running: list[Kraken] = []

    async def start(limits: Limits | None = None) -> Kraken:
        data_dir = tmp_path / f"data-{len(running)}"
        data_dir.mkdir()
        settings = Settings(
            listen=["tcp:0:interface=127.0.0.1"],
            data_dir=data_dir,
            admin_token=ADMIN_TOKEN,
            deployment_token=DEPLOYMENT_TOKEN,
            limits=limits or Limits(),
        )
        service = KrakenService(settings, reactor)
        service.startService()
        listener = next(s for s in service if isinstance(s, ListeningService))
        assert listener.port is not None
        _, token = await service.apps.register(
            {"app_id": APP_ID, "name": "Notes", "allowed_origins": []}
        )
        address = cast(IPv4Address, listener.port.getHost())
        kraken = Kraken(service, address.port, token, [])
        running.append(kraken)
        return kraken

    yield start

    for kraken in running:
        await kraken.service.stopService()
        for client in kraken.clients:
            await within(client.closed)


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """
    Every log event emitted during the test.
    """
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def warnings(events: list[LogEvent]) -> list[LogEvent]:
    """
    The warning events among C{events}.
    """
    return [event for event in events if event.get("log_level") == LogLevel.warn]


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
