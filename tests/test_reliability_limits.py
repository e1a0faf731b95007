"""
Every limit of SPEC.md's "Limits" table, hit at a small configured value on
a real twistd Kraken: the answer the table gives, and one warning log line
that names the app, the room and the limit.

(The 1002 cases and the effect of 1009 and 4413 on the other clients of a
room are covered in-process by tests/test_websocket.py.)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from bench.harness import (
    LogWindow,
    connection_closed_pattern,
    joined,
    started_kraken,
    wait_reading,
    wait_until,
)
from bench.slow_reader import burst
from bench.wsraw import (
    OP_BINARY,
    OP_TEXT,
    Frame,
    RawWebSocket,
    Refused,
    awareness,
    decode_awareness,
    frame_bytes,
    sync_payload,
    sync_update,
)
from tests.server import KrakenProcess

APP = "limits"

#: Seconds any single condition may take.
DEADLINE = 10.0

#: Seconds to wait, after a warning is seen, for a second one that must not
#: come.
LOG_SETTLE = 0.3


def text_update(size: int) -> bytes:
    """
    A valid update inserting C{size} characters into a fresh document.
    """
    doc: Doc[Text] = Doc()
    doc.get("text", type=Text).insert(0, "x" * size)
    return doc.get_update()


def map_updates(count: int, prefix: str) -> list[bytes]:
    """
    C{count} small updates, each setting one new key of the map C{map}.
    """
    doc: Doc[Map[int]] = Doc()
    entries: Map[int] = doc.get("map", type=Map)
    updates = []
    for index in range(count):
        before = doc.get_state()
        entries[f"{prefix}{index}"] = index
        updates.append(doc.get_update(before))
    return updates


def signal(payload: dict[str, object]) -> str:
    """
    A signaling envelope around C{payload}, as JSON text.
    """
    return json.dumps({"kraken": "signal", "signal": payload})


def is_update(frame: Frame) -> bool:
    """
    Whether C{frame} is a sync update message.
    """
    return frame.opcode == OP_BINARY and frame.payload[:2] == b"\x00\x02"


def is_awareness(frame: Frame) -> bool:
    """
    Whether C{frame} is an awareness message.
    """
    return frame.opcode == OP_BINARY and frame.payload[:1] == b"\x01"


def assert_one_warning(window: LogWindow, limit: str | None, room: str) -> None:
    """
    Kraken logged exactly one warning line, and it names the app, C{room}
    and (unless C{None}) C{limit}.
    """

    def kraken_warnings() -> list[str]:
        return [line for line in window.warnings() if "[kraken." in line]

    # The server's log reaches us through a pipe read by another thread, so
    # it can trail the frames the client has already received: wait for the
    # line, then give a second one the time to show up too.
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: bool(kraken_warnings()), DEADLINE)
    time.sleep(LOG_SETTLE)
    lines = kraken_warnings()
    assert len(lines) == 1, "\n".join(window.warnings())
    assert f"app {APP}" in lines[0], lines[0]
    assert f"room {room}" in lines[0], lines[0]
    if limit is not None:
        assert limit in lines[0].replace(f"room {room}", ""), lines[0]


def server_with(tmp_path: Path, *args: str) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A twistd Kraken started with C{args}, and the token of its one app.
    """
    with started_kraken(tmp_path / "data", list(args)) as server:
        yield server, server.register_app(APP)


@pytest.fixture(scope="module")
def small_sizes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken whose message and document limits are a few KiB.
    """
    yield from server_with(
        tmp_path_factory.mktemp("sizes"),
        "--max-message-bytes",
        "4096",
        "--max-document-bytes",
        "2048",
    )


@pytest.mark.parametrize(
    ("limit", "characters", "code"),
    [("max-message-bytes", 6000, 1009), ("max-document-bytes", 3000, 4413)],
)
def test_size_limit_closes_with_its_code_and_one_warning(
    small_sizes: tuple[KrakenProcess, str], limit: str, characters: int, code: int
) -> None:
    """
    An update over a size limit set with its twistd option closes that
    connection with the limit's code and logs one warning naming it.
    """
    server, token = small_sizes
    room = f"size-{code}"
    client = joined(server, room, token)
    window = LogWindow(server)

    client.send_binary(sync_update(text_update(characters)))

    assert client.wait_close() == code
    window.wait_for(connection_closed_pattern(client))
    assert_one_warning(window, limit, room)
    fresh = joined(server, room, token)
    fresh.drop()


@pytest.fixture
def slow_reader_kraken(tmp_path: Path) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that lets a client fall 2 MiB behind.
    """
    yield from server_with(
        tmp_path,
        "--max-queued-bytes",
        str(2 * 2**20),
        "--max-document-bytes",
        str(2**40),
        "--compact-after-rows",
        "1000000",
    )


def test_client_that_stops_reading_is_closed_1013_and_memory_stays_bounded(
    slow_reader_kraken: tuple[KrakenProcess, str],
) -> None:
    """
    A client that stops reading while another writes 32 MiB into its room is
    closed with 1013 after one warning, the server's RSS grows by far less
    than the burst, and the client resyncs on a new connection.
    """
    server, token = slow_reader_kraken
    window = LogWindow(server)

    report = burst(server, token, megabytes=32, room="burst")

    assert report.delivered == report.updates
    assert report.slow_close_code == 1013, report
    assert report.growth_kib < 16 * 1024, report
    assert_one_warning(window, "max-queued-bytes", "burst")
    again = joined(server, "burst", token)
    again.drop()


@pytest.fixture
def rate_limited(tmp_path: Path) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that reads at most 100 messages a second from a connection.
    """
    yield from server_with(tmp_path, "--max-messages-per-second", "100")


class MapEntriesSeen:
    """
    Counts the map entries that sync updates bring to a document; Kraken
    may forward several updates that arrived together as one.
    """

    def __init__(self) -> None:
        self.doc: Doc[Map[int]] = Doc()
        self.entries: Map[int] = self.doc.get("map", type=Map)

    def __call__(self, frame: Frame) -> int:
        if not is_update(frame):
            return 0
        synced = sync_payload(frame.payload)
        assert synced is not None
        before = len(self.entries)
        self.doc.apply_update(synced[1])
        return len(self.entries) - before


def flood(
    server: KrakenProcess,
    token: str,
    room: str,
    frames: list[bytes],
    carried: Callable[[Frame], int],
) -> tuple[RawWebSocket, float]:
    """
    Send C{frames} as fast as possible from one client; return it and the
    seconds until another client of the room has received all of them
    (C{carried} tells how many of them a frame it receives holds).
    """
    flooder = joined(server, room, token)
    reader = joined(server, room, token)
    reader.frames.clear()
    started = time.monotonic()

    flooder.send_raw(b"".join(frame_bytes(OP_BINARY, frame) for frame in frames))
    deadline = started + 3 * DEADLINE
    received = 0
    while received < len(frames):
        frame = reader.receive(deadline)
        assert frame is not None, f"reader closed after {received} frames"
        flooder.read_available()
        assert not flooder.closed_frame, f"flooder closed: {flooder.close_code}"
        received += carried(frame)
    elapsed = time.monotonic() - started
    reader.drop()
    return flooder, elapsed


def test_flooding_client_is_slowed_not_closed(
    rate_limited: tuple[KrakenProcess, str],
) -> None:
    """
    A client that sends 400 updates at once, four times its rate, has them
    all forwarded over at least about three seconds, stays open, and earns
    one warning.
    """
    server, token = rate_limited
    window = LogWindow(server)
    updates = [sync_update(update) for update in map_updates(400, "flood-")]

    flooder, elapsed = flood(server, token, "flood", updates, MapEntriesSeen())

    assert elapsed > 2.5, f"400 messages at 100/s forwarded in {elapsed:.2f} s"
    assert_one_warning(window, "max-messages-per-second", "flood")
    assert flooder.sync()
    assert not flooder.closed_frame
    flooder.drop()


@pytest.fixture
def small_awareness(tmp_path: Path) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that takes awareness states of at most 256 bytes.
    """
    yield from server_with(tmp_path, "--max-awareness-bytes", "256")


def test_oversized_awareness_is_dropped_and_spends_the_garbage_budget(
    small_awareness: tuple[KrakenProcess, str],
) -> None:
    """
    An awareness state over the limit is not relayed and logs one warning;
    the connection stays open through 20 of them and is closed with 1008 at
    the 21st.
    """
    server, token = small_awareness
    room = "presence"
    sender = joined(server, room, token)
    watcher = joined(server, room, token)
    big = {"name": "x" * 1000}
    window = LogWindow(server)

    sender.send_binary(awareness([(9001, 1, big)]))
    sender.send_binary(awareness([(9001, 2, {"name": "small"})]))
    frame = watcher.wait_for(is_awareness)

    assert decode_awareness(frame.payload) == {9001: (2, {"name": "small"})}
    assert_one_warning(window, "max-awareness-bytes", room)

    for clock in range(3, 22):
        sender.send_binary(awareness([(9001, clock, big)]))
    sender.send_binary(awareness([(9001, 22, {"name": "still here"})]))
    frame = watcher.wait_for(is_awareness)
    assert decode_awareness(frame.payload) == {9001: (22, {"name": "still here"})}

    sender.send_binary(awareness([(9001, 23, big)]))
    assert sender.wait_close() == 1008
    window.wait_for(connection_closed_pattern(sender))
    assert len(window.matching("Limit max-awareness-bytes hit")) == 21
    assert len(window.matching(r"garbage-budget")) == 1
    watcher.drop()


#: For each cap at 2: the rooms of the two connections that fill it, the
#: room of the connection refused, and a room still open to newcomers.
CAPS: dict[str, tuple[list[str], str, str | None]] = {
    "max-connections-per-app": (["a", "b"], "c", None),
    "max-connections-per-room": (["r", "r"], "r", "other"),
    "max-rooms": (["a", "b"], "c", "a"),
}


@pytest.mark.parametrize("limit", list(CAPS))
def test_cap_refuses_the_handshake_with_503_retry_after_and_json(
    tmp_path: Path, limit: str
) -> None:
    """
    Past a cap the handshake is answered 503 with Retry-After and a JSON
    error, with one warning; once a holder leaves, the same client gets in.
    """
    held, refused_room, open_room = CAPS[limit]
    with started_kraken(tmp_path / "data", [f"--{limit}", "2"]) as server:
        token = server.register_app(APP)
        clients = [joined(server, room, token) for room in held]
        window = LogWindow(server)

        with pytest.raises(Refused) as refusal:
            RawWebSocket.connect(server.port, f"/{refused_room}?token={token}")

        answer = refusal.value.answer
        assert answer.status == 503
        assert answer.headers.get("retry-after", "").isdigit(), answer.headers
        assert answer.headers.get("content-type") == "application/json"
        assert answer.json["error"]["code"] == "over-capacity", answer.json
        window.wait_for(f"Limit {limit} hit")
        assert_one_warning(window, limit, refused_room)
        if open_room is not None:
            clients.append(joined(server, open_room, token))
            clients.pop().drop()

        leaving = clients.pop()
        leaving.send_close()
        leaving.wait_close()

        def admitted() -> bool:
            try:
                clients.append(joined(server, refused_room, token))
            except Refused:
                return False
            return True

        wait_until(admitted, DEADLINE, step=0.1)
        for client in clients:
            client.drop()


@pytest.fixture(scope="module")
def small_signals(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken with signals of at most 256 bytes, 5 a second, 2 peers a room.
    """
    yield from server_with(
        tmp_path_factory.mktemp("signals"),
        "--max-signal-bytes",
        "256",
        "--max-signals-per-second",
        "5",
        "--max-peers-per-room",
        "2",
    )


def signal_errors(client: RawWebSocket) -> list[str]:
    """
    The codes of the signaling errors C{client} has received.
    """
    codes = []
    for frame in client.frames:
        if frame.opcode == OP_TEXT:
            message = json.loads(frame.payload)
            if message.get("kraken") == "error":
                codes.append(message["error"]["code"])
    return codes


def provoke_signal_limit(
    server: KrakenProcess, token: str, limit: str, room: str
) -> list[RawWebSocket]:
    """
    Make one client of C{room} hit a signaling limit; return the room's
    clients, the one refused last.
    """
    clients = [joined(server, room, token)]
    client = clients[0]
    if limit == "max-signal-bytes":
        client.send_text(signal({"type": 0, "from": "p", "name": "x" * 400}))
        client.wait_for(lambda f: f.opcode == OP_TEXT)
    elif limit == "max-signals-per-second":
        client.send_text(signal({"type": 0, "from": "chatty", "name": "C"}))
        client.wait_for(lambda f: f.opcode == OP_TEXT)
        for _ in range(20):
            client.send_text(signal({"type": 4, "reason": "bye"}))
        wait_reading(lambda: len(signal_errors(client)) >= 15, [client])
    else:
        clients += [joined(server, room, token) for _ in range(2)]
        for index, peer in enumerate(clients):
            peer.send_text(signal({"type": 0, "from": f"p{index}", "name": "P"}))
            peer.wait_for(lambda f: f.opcode == OP_TEXT)
    return clients


#: The error each signaling limit answers with.
SIGNAL_LIMITS = {
    "max-signal-bytes": "too-large",
    "max-signals-per-second": "rate-limited",
    "max-peers-per-room": "room-full",
}


@pytest.mark.parametrize("limit", list(SIGNAL_LIMITS))
def test_signal_limit_answers_its_error_and_the_connection_stays_open(
    small_signals: tuple[KrakenProcess, str], limit: str
) -> None:
    """
    Past a signaling limit the client gets the limit's error (too-large,
    rate-limited or room-full), its connection stays open and keeps
    syncing, and one warning names the app and the room.
    """
    server, token = small_signals
    room = f"answer-{SIGNAL_LIMITS[limit]}"
    window = LogWindow(server)

    clients = provoke_signal_limit(server, token, limit, room)

    assert set(signal_errors(clients[-1])) == {SIGNAL_LIMITS[limit]}
    assert clients[-1].sync() is not None
    assert_one_warning(window, None, room)
    for client in clients:
        client.drop()


@pytest.mark.parametrize("limit", list(SIGNAL_LIMITS))
def test_signal_limit_warning_names_the_limit_option(
    small_signals: tuple[KrakenProcess, str], limit: str
) -> None:
    """
    The one warning a signaling limit logs names the limit as its twistd
    option, as every other limit's warning does.
    """
    server, token = small_signals
    room = f"warning-{SIGNAL_LIMITS[limit]}"
    window = LogWindow(server)

    clients = provoke_signal_limit(server, token, limit, room)

    assert_one_warning(window, limit, room)
    for client in clients:
        client.drop()


@pytest.fixture(scope="module")
def fast_pings(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KrakenProcess, str]]:
    """
    A Kraken that pings every second and waits two seconds for a pong.
    """
    yield from server_with(
        tmp_path_factory.mktemp("pings"), "--ping-interval", "1", "--ping-timeout", "2"
    )


def test_dead_connection_is_dropped_and_its_presence_removed_for_others(
    fast_pings: tuple[KrakenProcess, str],
) -> None:
    """
    A client that stops answering pings is dropped within the ping interval
    and timeout; the others, which answer, stay and see its awareness state
    removed and its peer leave.
    """
    server, token = fast_pings
    room = "pings"
    dead = joined(server, room, token)
    watcher = joined(server, room, token)
    dead.send_text(signal({"type": 0, "from": "dead-peer", "name": "Dead"}))
    dead.wait_for(lambda f: f.opcode == OP_TEXT)
    watcher.send_text(signal({"type": 0, "from": "watcher", "name": "Watcher"}))
    dead.send_binary(awareness([(5150, 1, {"user": "dead"})]))
    frame = watcher.wait_for(is_awareness)
    assert decode_awareness(frame.payload) == {5150: (1, {"user": "dead"})}
    window = LogWindow(server)

    dead.answer_pings = False
    started = time.monotonic()
    removed = watcher.wait_for(
        lambda f: is_awareness(f) and 5150 in decode_awareness(f.payload)
    )
    left = watcher.wait_for(
        lambda f: f.opcode == OP_TEXT and json.loads(f.payload)["signal"]["type"] == 7
    )

    # Autobahn's timers fire on whole seconds, so allow one more.
    assert time.monotonic() - started < 1 + 2 + 1.5
    assert decode_awareness(removed.payload) == {5150: (1, None)}
    assert json.loads(left.payload)["signal"]["peer"]["peerId"] == "dead-peer"
    window.wait_for(connection_closed_pattern(dead))
    assert watcher.sync() is not None
    dead.drop()
    watcher.drop()


def test_ping_timeout_logs_one_warning_naming_app_room_and_limit(
    fast_pings: tuple[KrakenProcess, str],
) -> None:
    """
    Dropping a connection that did not answer a ping logs one Kraken warning
    with the app, the room and the limit.
    """
    server, token = fast_pings
    room = "silent"
    dead = joined(server, room, token)
    window = LogWindow(server)

    dead.answer_pings = False
    window.wait_for(connection_closed_pattern(dead))

    assert_one_warning(window, "ping-timeout", room)
    dead.drop()


def test_client_answering_pings_survives_a_sub_second_ping_timeout(
    tmp_path: Path,
) -> None:
    """
    With a ping timeout of half a second, a client that answers every ping
    at once is still open two seconds later.
    """
    args = ["--ping-interval", "0.5", "--ping-timeout", "0.5"]
    with started_kraken(tmp_path / "data", args) as server:
        token = server.register_app(APP)
        client = joined(server, "quick", token)
        window = LogWindow(server)
        deadline = time.monotonic() + 2.0

        while time.monotonic() < deadline and not client.eof:
            try:
                client.receive(deadline)
            except TimeoutError:
                break

        assert not client.eof, "\n".join(window.lines())
        assert client.close_code is None
        client.drop()
