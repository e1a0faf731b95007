"""
Autobahn clients of an in-process Kraken on 127.0.0.1, shared by the
WebSocket, signaling and reliability tests: a minimal y-websocket client,
the fixture that starts and stops Krakens, and the capture of log events.

A test module takes a fixture of this module by naming it, as in
C{start_kraken = wsclients.start_kraken}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
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

from kraken.config import Limits, Settings
from kraken.sync import (
    Message,
    ProtocolError,
    SyncStep2,
    SyncUpdate,
    decode_message,
    encode_sync_step1,
    encode_sync_update,
)
from kraken.tap import KrakenService, ListeningService

T = TypeVar("T")

ADMIN_TOKEN = "admin-token-for-in-process-tests"
DEPLOYMENT_TOKEN = "deployment-token-for-in-process-tests"
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


C = TypeVar("C", bound=SyncClient)


@dataclass
class InProcessKraken:
    """
    A running in-process Kraken, the tokens of its registered apps and every
    client opened to it.
    """

    service: KrakenService
    port: int
    tokens: dict[str, str]
    clients: list[SyncClient] = field(default_factory=list)

    async def open(
        self, path: str, protocol: type[C], protocols: list[str] | None = None
    ) -> C:
        """
        Open a connection to C{path} (with its query) as a C{protocol} and
        wait until it is open, not for the server's first frame.
        """
        url = f"ws://127.0.0.1:{self.port}{path}"
        factory = WebSocketClientFactory(url, protocols=protocols, reactor=reactor)
        factory.protocol = protocol
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client = cast(C, await within(endpoint.connect(factory)))
        self.clients.append(client)
        await within(client.opened)
        return client


K = TypeVar("K", bound=InProcessKraken)


@asynccontextmanager
async def in_process_krakens(
    tmp_path: Path,
    kind: type[K],
    apps: dict[str, str],
    *,
    abort_unclosed: bool = False,
) -> AsyncIterator[Callable[..., Awaitable[K]]]:
    """
    A function that starts a C{kind} of in-process Kraken with the given
    limits, on a fresh data directory under C{tmp_path}, with C{apps}
    (C{app_id: name}) registered.

    On the way out every Kraken is stopped and each of its clients must
    close in time; with C{abort_unclosed}, one that does not is aborted.
    """
    running: list[K] = []

    async def start(limits: Limits | None = None) -> K:
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
        tokens = {}
        for app_id, name in apps.items():
            _, tokens[app_id] = await service.apps.register(
                {"app_id": app_id, "name": name, "allowed_origins": []}
            )
        address = cast(IPv4Address, listener.port.getHost())
        kraken = kind(service, address.port, tokens)
        running.append(kraken)
        return kraken

    yield start

    for kraken in running:
        await kraken.service.stopService()
        for client in kraken.clients:
            if not abort_unclosed:
                await within(client.closed)
                continue
            try:
                await client.wait_until(lambda c=client: c.closed.called)
            except TimeoutError:
                client.transport.abortConnection()


class Kraken(InProcessKraken):
    """
    A running in-process Kraken with one registered app, C{APP_ID}.
    """

    @property
    def token(self) -> str:
        return self.tokens[APP_ID]

    async def connect(
        self, room: str = ROOM, protocols: list[str] | None = None
    ) -> SyncClient:
        """
        Open a connection to C{room} with the app token and wait for the
        server's first frame.
        """
        path = f"/doc/{room}?token={self.token}"
        client = await self.open(path, SyncClient, protocols)
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
    async with in_process_krakens(tmp_path, Kraken, {APP_ID: "Notes"}) as start:
        yield start


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
