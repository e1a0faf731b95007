"""
Awareness hygiene on a real twistd Kraken: presence survives a reconnect
when the old socket is later found dead, and an awareness flood is limited
like any other message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.harness import (
    LogWindow,
    connection_closed_pattern,
    joined,
    started_kraken,
    wait_reading,
)
from bench.wsraw import Frame, awareness, decode_awareness
from tests.server import KrakenProcess
from tests.test_reliability_limits import assert_one_warning, flood, is_awareness

APP = "limits"

#: The Yjs client id of the client that reconnects.
CLIENT_ID = 4242


def _entries(frame: Frame) -> dict[int, tuple[int, object]]:
    """
    The awareness entries of C{frame}.
    """
    return decode_awareness(frame.payload)


@pytest.fixture(scope="module")
def fast_pings(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that pings every second and waits two seconds for a pong.
    """
    args = ["--ping-interval", "1", "--ping-timeout", "2"]
    with started_kraken(tmp_path_factory.mktemp("pings") / "data", args) as server:
        yield server, server.register_app(APP)


@pytest.mark.parametrize(
    "clock_on_reconnect",
    [1, 2],
    ids=["same-clock-as-stock-client-sends", "newer-clock"],
)
def test_reconnected_client_keeps_presence_when_old_socket_is_found_dead(
    fast_pings: tuple[KrakenProcess, str], clock_on_reconnect: int
) -> None:
    """
    A client whose socket went silent reconnects on a new one and announces
    the same client id (y-websocket resends its state at the clock it has);
    when the ping timeout drops the old socket, its presence stays for
    everyone.
    """
    server, token = fast_pings
    room = f"reconnect-{clock_on_reconnect}"
    state = {"user": {"name": "alice"}}
    watcher = joined(server, room, token)
    old = joined(server, room, token)
    old.send_binary(awareness([(CLIENT_ID, 1, state)]))
    watcher.wait_for(lambda f: is_awareness(f) and CLIENT_ID in _entries(f))
    window = LogWindow(server)

    old.answer_pings = False
    new = joined(server, room, token)
    new.send_binary(awareness([(CLIENT_ID, clock_on_reconnect, state)]))
    old_closed = connection_closed_pattern(old)
    wait_reading(lambda: bool(window.matching(old_closed)), [watcher, new])
    newcomer = joined(server, room, token)

    welcome = [frame for frame in newcomer.frames if is_awareness(frame)]
    assert welcome, "the newcomer was sent no awareness states"
    assert _entries(welcome[0]).get(CLIENT_ID, (0, None))[1] == state
    assert not watcher.eof and not new.eof
    watcher.read_available()
    removals = [
        frame
        for frame in watcher.frames
        if is_awareness(frame) and _entries(frame).get(CLIENT_ID, (0, 0))[1] is None
    ]
    assert not removals, "the watcher was told the reconnected client left"
    for client in (watcher, old, new, newcomer):
        client.drop()


@pytest.fixture
def rate_limited(tmp_path: Path) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that reads at most 100 messages a second from a connection.
    """
    args = ["--max-messages-per-second", "100"]
    with started_kraken(tmp_path / "data", args) as server:
        yield server, server.register_app(APP)


def test_awareness_flood_is_slowed_like_any_other_message(
    rate_limited: tuple[KrakenProcess, str],
) -> None:
    """
    400 awareness updates sent at once, four times the rate, reach another
    client over at least about three seconds; the sender stays open and one
    warning is logged.
    """
    server, token = rate_limited
    window = LogWindow(server)
    frames = [awareness([(7, clock, {"n": clock})]) for clock in range(1, 401)]

    flooder, elapsed = flood(server, token, "presence-flood", frames, is_awareness)

    assert elapsed > 2.5, f"400 messages at 100/s relayed in {elapsed:.2f} s"
    assert not flooder.closed_frame
    assert_one_warning(window, "max-messages-per-second", "presence-flood")
    flooder.drop()
