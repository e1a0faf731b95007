"""
The idle timeout of HTTP connections: a request head that never ends is
closed, an upgraded WebSocket is not.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

import kraken.site
from tests import wsclients
from tests.wsclients import Start, within

start_kraken = wsclients.start_kraken

#: The idle timeout the tests run with, in seconds.
IDLE = 1


class Unfinished(Protocol):
    """
    Sends the start of a request head and never the rest.
    """

    def __init__(self) -> None:
        self.lost: Deferred[float] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(time.monotonic())


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kraken.site, "HTTP_IDLE_TIMEOUT", IDLE)


@pytest_twisted.ensureDeferred
async def test_unfinished_request_head_is_closed_after_the_idle_timeout(
    short_idle: None, start_kraken: Start
) -> None:
    """
    A connection that starts a request and goes silent is closed by the
    server once the idle timeout has passed, not kept for hours.
    """
    server = await start_kraken()
    client = Unfinished()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port)
    await endpoint.connect(Factory.forProtocol(lambda: client))
    opened = time.monotonic()

    closed = await within(client.lost, 5)

    assert IDLE - 0.1 <= closed - opened < IDLE + 2


@pytest_twisted.ensureDeferred
async def test_websocket_outlives_the_http_idle_timeout(
    short_idle: None, start_kraken: Start
) -> None:
    """
    An upgraded connection that stays quiet longer than the HTTP idle
    timeout stays open and keeps syncing.
    """
    server = await start_kraken()
    writer = await server.synced()
    await deferLater(reactor, IDLE * 2.5, lambda: None)

    reader = await server.synced()
    writer.insert("still here")

    await reader.wait_text("still here")
    assert not writer.closed.called
