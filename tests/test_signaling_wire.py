"""
Signaling on the wire: an in-process Kraken on 127.0.0.1 and Autobahn
clients that announce, call each other and misbehave, beside sync.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import LogEvent, formatEvent

from kraken.config import Limits
from kraken.signaling import SignalType
from kraken.sync import SyncUpdate
from kraken.websocket import GARBAGE_BUDGET
from tests import wsclients
from tests.wsclients import InProcessKraken, SyncClient, in_process_krakens, warnings

APP_ID = "calls"
OTHER_APP_ID = "other-calls"
ROOM = "standup"
SECRET = "reconnect-secret-0123456789"
SDP = {"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"}
ANSWER_SDP = {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
CANDIDATE = {
    "candidate": "candidate:842163049 1 udp 1677729535 192.0.2.3 46154 typ srflx",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}

#: Seconds a dropped peer may take beyond ping interval plus timeout to be
#: reported: Autobahn's timers run on whole seconds, and Kraken waits up to
#: one second more than the timeout so that they never fire early.
PING_SLACK = 1.5

PEER_LIST = int(SignalType.PEER_LIST)
PEER_JOINED = int(SignalType.PEER_JOINED)
PEER_LEFT = int(SignalType.PEER_LEFT)


class SignalClient(SyncClient):
    """
    A y-websocket client that also speaks Kraken's signaling in text frames.
    """

    def __init__(self) -> None:
        super().__init__()
        self.close_code: int | None = None
        self.pings = 0

    def onPing(self, payload: bytes) -> None:
        self.pings += 1
        super().onPing(payload)
        self._check_waiters()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        super().onClose(wasClean, code, reason)

    @property
    def has_closed(self) -> bool:
        """
        Whether the connection has closed.
        """
        return self.closed.called

    def texts(self) -> list[dict[str, Any]]:
        """
        Every text frame received, parsed.
        """
        return [json.loads(frame) for frame, binary in self.frames if not binary]

    def signals(self, kind: int | None = None) -> list[dict[str, Any]]:
        """
        The signals received, all of them or those of one type.
        """
        found = [t["signal"] for t in self.texts() if t["kraken"] == "signal"]
        return [s for s in found if kind is None or s["type"] == kind]

    def errors(self, code: str | None = None) -> list[dict[str, Any]]:
        """
        The errors received, all of them or those with one code.
        """
        found = [t["error"] for t in self.texts() if t["kraken"] == "error"]
        return [e for e in found if code is None or e["code"] == code]

    def send_signal(self, signal: dict[str, Any]) -> None:
        """
        Send one signal in the envelope.
        """
        text = json.dumps({"kraken": "signal", "signal": signal})
        self.send(text.encode("utf-8"), binary=False)

    async def wait_signals(self, kind: int, count: int = 1) -> list[dict[str, Any]]:
        """
        Wait until C{count} signals of type C{kind} have arrived; return all
        of that type.
        """
        await self.wait_until(lambda: len(self.signals(kind)) >= count)
        return self.signals(kind)

    async def wait_errors(self, code: str, count: int = 1) -> list[dict[str, Any]]:
        """
        Wait until C{count} errors with C{code} have arrived; return them.
        """
        await self.wait_until(lambda: len(self.errors(code)) >= count)
        return self.errors(code)

    async def announce(
        self, peer_id: str, name: str = "", **extra: Any
    ) -> list[dict[str, Any]]:
        """
        Announce as C{peer_id} and return the peers of the PeerList answer.
        """
        seen = len(self.signals(PEER_LIST))
        self.send_signal({"type": 0, "from": peer_id, "name": name, **extra})
        lists = await self.wait_signals(PEER_LIST, seen + 1)
        peers: list[dict[str, Any]] = lists[seen]["peers"]
        return peers

    async def refused(self, signal: Any, code: str) -> dict[str, Any]:
        """
        Send C{signal} and return the error it earns, which must be C{code}.
        """
        seen = len(self.errors())
        if isinstance(signal, bytes):
            self.send(signal, binary=False)
        else:
            self.send_signal(signal)
        await self.wait_until(lambda: len(self.errors()) > seen)
        error = self.errors()[seen]
        assert error["code"] == code, error
        assert isinstance(error["message"], str) and error["message"]
        return error

    async def wait_closed(self) -> int | None:
        """
        Wait until the connection has closed; return the close code.
        """
        await self.wait_until(lambda: self.has_closed)
        return self.close_code


def peer(peer_id: str, name: str = "", meta: Any = None) -> dict[str, Any]:
    """
    The PEER object of SPEC.md.
    """
    return {"peerId": peer_id, "name": name, "meta": meta}


def offer(to: str, **extra: Any) -> dict[str, Any]:
    """
    An Offer to C{to}.
    """
    return {"type": 1, "to": to, "sdp": SDP, **extra}


class Kraken(InProcessKraken):
    """
    A running in-process Kraken with two registered apps.
    """

    async def connect(
        self, room: str = ROOM, app_id: str = APP_ID, bare: bool = False
    ) -> SignalClient:
        """
        Open a connection to C{room} of C{app_id} and wait for the server's
        first frame; C{bare} uses the stock client's C{/{room}} URL form.
        """
        path = f"/{room}" if bare else f"/doc/{room}"
        client = await self.open(f"{path}?token={self.tokens[app_id]}", SignalClient)
        await client.wait_until(lambda: bool(client.frames) or client.has_closed)
        return client

    async def peers(self, *peer_ids: str) -> list[SignalClient]:
        """
        One connection per id, each announced in order, named as its id.
        """
        clients = []
        for peer_id in peer_ids:
            client = await self.connect()
            await client.announce(peer_id, name=peer_id)
            clients.append(client)
        return clients


Start = Callable[..., Awaitable[Kraken]]


@pytest_twisted.async_yield_fixture
async def start_kraken(tmp_path: Path) -> AsyncIterator[Start]:
    """
    Start Kraken with the given limits; everything is stopped at the end, and
    a client that the stop does not close in time is aborted.
    """
    apps = {APP_ID: APP_ID, OTHER_APP_ID: OTHER_APP_ID}
    async with in_process_krakens(tmp_path, Kraken, apps, abort_unclosed=True) as start:
        yield start


log_events = wsclients.log_events


def envelope(signal: Any) -> bytes:
    """
    A text frame carrying C{signal} in the signaling envelope.
    """
    return json.dumps({"kraken": "signal", "signal": signal}).encode("utf-8")


# Announce, PeerList, PeerJoined, PeerLeft


@pytest_twisted.ensureDeferred
async def test_peers_learn_of_each_other_in_order(start_kraken: Start) -> None:
    """
    A announces, then B: A gets PeerJoined(B), B gets PeerList([A]); when B
    closes, A gets PeerLeft(B), and nothing else arrives in between.
    """
    kraken = await start_kraken()
    first, second = await kraken.connect(), await kraken.connect()

    assert await first.announce("a", name="Ann", meta={"mic": True}) == []
    assert await second.announce("b", name="Bob") == [peer("a", "Ann", {"mic": True})]
    await first.wait_signals(PEER_JOINED)
    second.sendClose(1000)
    await first.wait_signals(PEER_LEFT)

    assert first.signals() == [
        {"type": PEER_LIST, "peers": []},
        {"type": PEER_JOINED, "peer": peer("b", "Bob")},
        {"type": PEER_LEFT, "peer": peer("b", "Bob")},
    ]
    assert second.signals() == [
        {"type": PEER_LIST, "peers": [peer("a", "Ann", {"mic": True})]}
    ]


@pytest_twisted.ensureDeferred
async def test_offer_answer_candidate_and_hangup_reach_only_the_named_peer(
    start_kraken: Start,
) -> None:
    """
    A call between A and B is relayed with C{from} set and every other field
    untouched, and the third peer of the room receives none of it.
    """
    kraken = await start_kraken()
    caller, callee, bystander = await kraken.peers("a", "b", "c")

    caller.send_signal(offer("b", custom={"video": True}))
    callee.send_signal({"type": 2, "to": "a", "sdp": ANSWER_SDP})
    caller.send_signal({"type": 3, "to": "b", "candidate": CANDIDATE})
    callee.send_signal({"type": 3, "to": "a", "candidate": CANDIDATE})
    caller.send_signal({"type": 4, "to": "b", "reason": "rejected"})
    await callee.wait_signals(4)
    await caller.wait_signals(3)
    bystander.send_signal({"type": 4, "to": "a"})
    await caller.wait_signals(4)

    assert callee.signals(1) == [
        {"type": 1, "to": "b", "sdp": SDP, "custom": {"video": True}, "from": "a"}
    ]
    assert callee.signals(3) == [
        {"type": 3, "to": "b", "candidate": CANDIDATE, "from": "a"}
    ]
    assert callee.signals(4) == [
        {"type": 4, "to": "b", "reason": "rejected", "from": "a"}
    ]
    assert caller.signals(2) == [{"type": 2, "to": "a", "sdp": ANSWER_SDP, "from": "b"}]
    assert caller.signals(3) == [
        {"type": 3, "to": "a", "candidate": CANDIDATE, "from": "b"}
    ]
    assert [s["type"] for s in bystander.signals()] == [PEER_LIST]
    assert caller.errors() == callee.errors() == bystander.errors() == []


@pytest_twisted.ensureDeferred
async def test_hangup_without_to_reaches_every_other_peer(start_kraken: Start) -> None:
    """
    A Hangup with no C{to} goes to every other announced peer of the room.
    """
    kraken = await start_kraken()
    leaving, second, third = await kraken.peers("a", "b", "c")

    leaving.send_signal({"type": 4, "reason": "bye"})

    for client in (second, third):
        hangups = await client.wait_signals(4)
        assert hangups == [{"type": 4, "reason": "bye", "from": "a"}]
    assert leaving.signals(4) == []


@pytest_twisted.ensureDeferred
async def test_spoofed_from_is_refused_and_reaches_nobody(start_kraken: Start) -> None:
    """
    An Offer claiming another peer's id gets not-your-peer-id, is not sent,
    and the connection stays open.
    """
    kraken = await start_kraken()
    spoofer, victim, target = await kraken.peers("a", "b", "c")

    await spoofer.refused(offer("c", **{"from": "b"}), "not-your-peer-id")
    spoofer.send_signal(offer("c"))
    offers = await target.wait_signals(1)

    assert [o["from"] for o in offers] == ["a"]
    assert victim.errors() == []
    assert not spoofer.has_closed


@pytest_twisted.ensureDeferred
async def test_offer_to_an_unknown_peer_is_refused(start_kraken: Start) -> None:
    """
    An Offer whose C{to} names nobody in the room gets unknown-peer.
    """
    kraken = await start_kraken()
    (caller,) = await kraken.peers("a")

    await caller.refused(offer("nobody"), "unknown-peer")

    assert not caller.has_closed


@pytest_twisted.ensureDeferred
async def test_signal_before_announce_is_refused(start_kraken: Start) -> None:
    """
    An Offer from a connection that has not announced gets not-announced.
    """
    kraken = await start_kraken()
    await kraken.peers("b")
    stranger = await kraken.connect()

    await stranger.refused(offer("b"), "not-announced")


@pytest_twisted.ensureDeferred
async def test_duplicate_peer_id_is_refused_and_not_announced(
    start_kraken: Start,
) -> None:
    """
    A second connection announcing a taken id gets peer-id-taken, the others
    hear nothing, and the id still reaches its first connection.
    """
    kraken = await start_kraken()
    owner, witness = await kraken.peers("a", "w")
    impostor = await kraken.connect()

    await impostor.refused({"type": 0, "from": "a", "name": "evil"}, "peer-id-taken")
    witness.send_signal(offer("a"))
    await owner.wait_signals(1)

    assert witness.signals(PEER_JOINED) == []
    assert impostor.signals() == []
    assert await impostor.announce("a2") == [peer("a", "a"), peer("w", "w")]


@pytest_twisted.ensureDeferred
async def test_second_announce_with_another_id_is_already_announced(
    start_kraken: Start,
) -> None:
    """
    A connection announced as one peer cannot announce as another.
    """
    kraken = await start_kraken()
    (client,) = await kraken.peers("a")

    await client.refused({"type": 0, "from": "b", "name": ""}, "already-announced")


@pytest_twisted.ensureDeferred
async def test_takeover_with_the_secret_closes_the_old_socket_with_4409(
    start_kraken: Start,
) -> None:
    """
    A reconnecting peer with the right secret takes its id over: the old
    socket is closed with 4409 and the other peer sees no PeerLeft or
    PeerJoined, while signals to the id reach the new socket.
    """
    kraken = await start_kraken()
    old = await kraken.connect()
    await old.announce("a", name="Ann", secret=SECRET)
    (other,) = await kraken.peers("c")
    new = await kraken.connect()

    assert await new.announce("a", name="Ann", secret=SECRET) == [peer("c", "c")]
    assert await old.wait_closed() == 4409
    new.send_signal({"type": 4, "to": "c"})
    other.send_signal(offer("a"))
    await other.wait_signals(4)
    await new.wait_signals(1)

    assert [s["type"] for s in other.signals()] == [PEER_LIST, 4]
    assert old.signals(1) == []


@pytest_twisted.ensureDeferred
async def test_takeover_with_a_changed_name_tells_the_others(
    start_kraken: Start,
) -> None:
    """
    A takeover that changes the name sends one PeerJoined and no PeerLeft.
    """
    kraken = await start_kraken()
    old = await kraken.connect()
    await old.announce("a", name="Ann", secret=SECRET)
    (other,) = await kraken.peers("c")
    new = await kraken.connect()

    await new.announce("a", name="Ann (phone)", secret=SECRET)
    joined = await other.wait_signals(PEER_JOINED)

    assert joined == [{"type": PEER_JOINED, "peer": peer("a", "Ann (phone)")}]
    assert await old.wait_closed() == 4409
    assert other.signals(PEER_LEFT) == []


@pytest_twisted.ensureDeferred
async def test_takeover_with_a_wrong_secret_is_refused(start_kraken: Start) -> None:
    """
    A wrong secret earns peer-id-taken and the old socket keeps the id.
    """
    kraken = await start_kraken()
    old = await kraken.connect()
    await old.announce("a", secret=SECRET)
    (other,) = await kraken.peers("c")
    thief = await kraken.connect()

    await thief.refused(
        {"type": 0, "from": "a", "name": "", "secret": "x" * 32}, "peer-id-taken"
    )
    other.send_signal(offer("a"))
    await old.wait_signals(1)

    assert not old.has_closed
    assert other.signals(PEER_JOINED) == other.signals(PEER_LEFT) == []


@pytest_twisted.ensureDeferred
async def test_secret_with_lone_surrogates_does_not_close_the_connection(
    start_kraken: Start,
) -> None:
    """
    A takeover with a secret of lone UTF-16 surrogates (valid JSON) is
    answered, not turned into an internal error that closes the socket.
    """
    kraken = await start_kraken()
    old, new = await kraken.connect(), await kraken.connect()
    announce = (
        b'{"kraken": "signal", "signal": {"type": 0, "from": "a", "name": "", '
        b'"secret": "' + b"\\ud800" * 16 + b'"}}'
    )
    old.send(announce, binary=False)
    await old.wait_until(lambda: bool(old.texts()))

    new.send(announce, binary=False)
    await new.wait_until(lambda: bool(new.texts()) or new.has_closed)

    assert new.close_code != 1011
    assert new.texts()


@pytest_twisted.ensureDeferred
async def test_peers_of_another_app_in_a_room_of_the_same_name_are_apart(
    start_kraken: Start,
) -> None:
    """
    Another app's room of the same name has its own peers: none is listed,
    joined, left or reachable across the two, and ids do not collide.
    """
    kraken = await start_kraken()
    (mine,) = await kraken.peers("shared")
    theirs = await kraken.connect(app_id=OTHER_APP_ID)
    newcomer = await kraken.connect(app_id=OTHER_APP_ID)

    assert await theirs.announce("shared", name="same id") == []
    assert await newcomer.announce("x") == [peer("shared", "same id")]
    newcomer.sendClose(1000)
    await theirs.wait_signals(PEER_LEFT)
    await mine.refused(offer("x"), "unknown-peer")

    assert mine.signals() == [{"type": PEER_LIST, "peers": []}]


@pytest_twisted.ensureDeferred
async def test_connection_that_never_sent_text_receives_only_binary_frames(
    start_kraken: Start,
) -> None:
    """
    A syncing connection that never sent a text frame gets updates but not
    one text frame while peers announce, call, hang up and leave around it.
    """
    kraken = await start_kraken()
    silent = await kraken.connect()
    await silent.sync()
    writer = await kraken.connect()
    await writer.sync()
    first, second = await kraken.peers("a", "b")

    first.send_signal(offer("b"))
    await second.wait_signals(1)
    second.send_signal({"type": 4})
    await first.wait_signals(4)
    await first.refused(offer("nobody"), "unknown-peer")
    second.sendClose(1000)
    await first.wait_signals(PEER_LEFT)
    writer.insert("after the call")
    await silent.wait_text("after the call")

    assert all(binary for _, binary in silent.frames)
    assert all(binary for _, binary in writer.frames)


@pytest_twisted.ensureDeferred
async def test_sync_and_signaling_share_one_connection(start_kraken: Start) -> None:
    """
    Two connections that both sync and signal get each other's updates and
    signals, interleaved, with nothing lost.
    """
    kraken = await start_kraken()
    first, second = await kraken.connect(), await kraken.connect(bare=True)
    await first.sync()
    await second.sync()
    await first.announce("a")
    await second.announce("b")

    first.insert("one ")
    first.send_signal(offer("b"))
    first.insert("two ")
    await second.wait_text("one two ")
    await second.wait_signals(1)
    second.send_signal({"type": 2, "to": "a", "sdp": ANSWER_SDP})
    second.insert("three")
    await first.wait_signals(2)
    await first.wait_text("one two three")

    assert any(isinstance(m, SyncUpdate) for m in second.messages())
    assert first.errors() == second.errors() == []


# Garbage and limits


GARBAGE = {
    "not-json": (b"{nope", "bad-json"),
    "nan": (b'{"kraken": "signal", "signal": {"type": 4, "x": NaN}}', "bad-json"),
    "deep-nesting": (b"[" * 20_000 + b"]" * 20_000, "bad-json"),
    "not-an-envelope": (b'{"kraken": "hello"}', "bad-envelope"),
    "announce-without-from": (envelope({"type": 0, "name": "x"}), "bad-envelope"),
    "meta-over-1-kib": (
        envelope({"type": 0, "from": "a", "name": "", "meta": {"k": "x" * 1100}}),
        "bad-envelope",
    ),
    "short-secret": (
        envelope({"type": 0, "from": "a", "name": "", "secret": "short"}),
        "bad-envelope",
    ),
    "peer-list-from-a-client": (envelope({"type": 5, "peers": []}), "unknown-type"),
    "peer-joined-from-a-client": (envelope({"type": 6}), "unknown-type"),
    "peer-left-from-a-client": (envelope({"type": 7}), "unknown-type"),
    "boolean-type": (envelope({"type": True}), "unknown-type"),
    "type-99": (envelope({"type": 99}), "unknown-type"),
}


@pytest.mark.parametrize(("payload", "code"), list(GARBAGE.values()), ids=list(GARBAGE))
@pytest_twisted.ensureDeferred
async def test_garbage_text_is_answered_with_an_error_and_the_connection_stays_open(
    start_kraken: Start, log_events: list[LogEvent], payload: bytes, code: str
) -> None:
    """
    Malformed signaling is answered with its error code and one warning, and
    the connection goes on signaling.
    """
    kraken = await start_kraken()
    client = await kraken.connect()
    log_events.clear()

    await client.refused(payload, code)

    assert await client.announce("a") == []
    assert not client.has_closed
    assert len(warnings(log_events)) == 1


@pytest_twisted.ensureDeferred
async def test_text_that_is_not_utf8_closes_with_1007(start_kraken: Start) -> None:
    """
    A text frame that is not UTF-8 closes that connection with 1007, and the
    other peer hears PeerLeft.
    """
    kraken = await start_kraken()
    bad, other = await kraken.peers("a", "b")

    bad.send(b'{"kraken": "signal", "signal": {"type": 4, "x": "\xff\xfe"}}', False)

    assert await bad.wait_closed() == 1007
    assert await other.wait_signals(PEER_LEFT) == [
        {"type": PEER_LEFT, "peer": peer("a", "a")}
    ]


@pytest_twisted.ensureDeferred
async def test_text_over_max_signal_bytes_is_too_large_and_stays_open(
    start_kraken: Start,
) -> None:
    """
    A text frame above the signaling limit but below the message limit gets
    too-large and the connection goes on.
    """
    kraken = await start_kraken(Limits(max_signal_bytes=1024, max_message_bytes=8192))
    sender, receiver = await kraken.peers("a", "b")
    padding = "x" * 2000

    await sender.refused(envelope(offer("b", padding=padding)), "too-large")
    sender.send_signal(offer("b"))

    assert await receiver.wait_signals(1) == [{**offer("b"), "from": "a"}]


@pytest_twisted.ensureDeferred
async def test_text_over_max_message_bytes_closes_with_1009(
    start_kraken: Start,
) -> None:
    """
    A text frame above the message limit closes the connection with 1009
    like any oversized message.
    """
    kraken = await start_kraken(Limits(max_signal_bytes=1024, max_message_bytes=8192))
    sender, receiver = await kraken.peers("a", "b")

    sender.send(envelope(offer("b", padding="x" * 10_000)), binary=False)

    assert await sender.wait_closed() == 1009
    await receiver.wait_signals(PEER_LEFT)
    assert receiver.signals(1) == []


@pytest_twisted.ensureDeferred
async def test_signals_past_the_rate_limit_are_rate_limited_and_stay_open(
    start_kraken: Start,
) -> None:
    """
    Signals beyond max-signals-per-second get rate-limited, are not relayed,
    do not spend the garbage budget, and the connection stays open.
    """
    kraken = await start_kraken(Limits(max_signals_per_second=2))
    sender, receiver = await kraken.peers("a", "b")
    count = GARBAGE_BUDGET + 10

    for index in range(count):
        sender.send_signal({"type": 4, "to": "b", "index": index})
    await sender.sync()
    limited = sender.errors("rate-limited")
    relayed = await receiver.wait_signals(4, count - len(limited))

    assert 1 <= len(relayed) <= 3
    assert len(limited) + len(relayed) == count
    assert sender.errors() == limited
    assert not sender.has_closed


@pytest_twisted.ensureDeferred
async def test_announce_into_a_full_room_is_room_full(start_kraken: Start) -> None:
    """
    Past max-peers-per-room an Announce gets room-full; once a peer leaves,
    the next one gets in.
    """
    kraken = await start_kraken(Limits(max_peers_per_room=2))
    first, second = await kraken.peers("a", "b")
    late = await kraken.connect()

    await late.refused({"type": 0, "from": "c", "name": ""}, "room-full")
    second.sendClose(1000)
    await first.wait_signals(PEER_LEFT)

    assert await late.announce("c") == [peer("a", "a")]


LIMIT_HITS = {
    "max-signal-bytes": (
        Limits(max_signal_bytes=1024),
        [envelope(offer("a", padding="x" * 2000))],
        "too-large",
    ),
    "max-signals-per-second": (
        Limits(max_signals_per_second=1),
        [envelope({"type": 4}), envelope({"type": 4})],
        "rate-limited",
    ),
    "max-peers-per-room": (
        Limits(max_peers_per_room=1),
        [envelope({"type": 0, "from": "b", "name": ""})],
        "room-full",
    ),
}


@pytest.mark.parametrize(
    ("limit", "limits", "frames", "code"),
    [(name, *case) for name, case in LIMIT_HITS.items()],
    ids=list(LIMIT_HITS),
)
@pytest_twisted.ensureDeferred
async def test_signaling_limit_hit_writes_one_warning_naming_the_limit(
    start_kraken: Start,
    log_events: list[LogEvent],
    limit: str,
    limits: Limits,
    frames: list[bytes],
    code: str,
) -> None:
    """
    One hit of a signaling limit writes one warning line with app, room and
    the limit's option name, as SPEC.md's "Limits" asks of every limit.
    """
    kraken = await start_kraken(limits)
    await kraken.peers("a")
    sender = await kraken.connect()
    log_events.clear()

    for frame in frames:
        sender.send(frame, binary=False)
    await sender.wait_errors(code)

    lines = [formatEvent(event) for event in warnings(log_events)]
    naming = [line for line in lines if limit in line]
    assert len(naming) == 1, lines
    assert APP_ID in naming[0] and ROOM in naming[0]


@pytest_twisted.ensureDeferred
async def test_garbage_past_the_budget_closes_with_1008(start_kraken: Start) -> None:
    """
    A connection that keeps sending garbage gets an error for each frame and
    is closed with 1008 once past the budget.
    """
    kraken = await start_kraken()
    bad, other = await kraken.peers("a", "b")

    for _ in range(GARBAGE_BUDGET + 1):
        bad.send(b"not json", binary=False)

    assert await bad.wait_closed() == 1008
    assert len(bad.errors("bad-json")) == GARBAGE_BUDGET + 1
    await other.wait_signals(PEER_LEFT)


@pytest_twisted.ensureDeferred
async def test_refusals_a_client_can_run_into_do_not_spend_the_budget(
    start_kraken: Start,
) -> None:
    """
    Signals to a peer that is gone are refused without closing the sender,
    however many there are.
    """
    kraken = await start_kraken(Limits(max_signals_per_second=1000))
    (caller,) = await kraken.peers("a")

    for _ in range(GARBAGE_BUDGET * 2):
        caller.send_signal(offer("gone"))
    await caller.wait_errors("unknown-peer", GARBAGE_BUDGET * 2)

    assert not caller.has_closed


@pytest_twisted.ensureDeferred
async def test_peer_whose_connection_vanishes_is_reported_left_after_the_ping_timeout(
    start_kraken: Start,
) -> None:
    """
    A peer that stops answering without a close frame (its socket silent) is
    dropped after the ping timeout and the others get PeerLeft in time.
    """
    limits = Limits(ping_interval=0.5, ping_timeout=0.5)
    kraken = await start_kraken(limits)
    staying, vanishing = await kraken.peers("a", "b")

    vanishing.transport.pauseProducing()
    started = time.monotonic()
    try:
        left = await staying.wait_signals(PEER_LEFT)
    finally:
        vanishing.transport.abortConnection()
    elapsed = time.monotonic() - started

    assert left == [{"type": PEER_LEFT, "peer": peer("b", "b")}]
    assert elapsed < limits.ping_interval + limits.ping_timeout + PING_SLACK
    assert not staying.has_closed


@pytest_twisted.ensureDeferred
async def test_peer_that_answers_pings_stays_with_a_short_ping_timeout(
    start_kraken: Start,
) -> None:
    """
    With sub-second ping settings a peer that answers every ping promptly
    keeps its connection over several seconds of pings.
    """
    kraken = await start_kraken(Limits(ping_interval=0.5, ping_timeout=0.5))
    client = await kraken.connect()
    started = time.monotonic()

    await client.wait_until(
        lambda: (
            client.has_closed
            or (client.pings >= 4 and time.monotonic() - started >= 2.0)
        )
    )

    assert client.close_code is None


@pytest_twisted.ensureDeferred
async def test_peer_whose_connection_resets_is_reported_left(
    start_kraken: Start,
) -> None:
    """
    A peer whose TCP connection is aborted (no close frame) leaves at once.
    """
    kraken = await start_kraken()
    staying, vanishing = await kraken.peers("a", "b")

    vanishing.transport.abortConnection()

    assert await staying.wait_signals(PEER_LEFT) == [
        {"type": PEER_LEFT, "peer": peer("b", "b")}
    ]


@pytest_twisted.ensureDeferred
async def test_deeply_nested_sdp_is_relayed_or_refused_never_an_internal_error(
    start_kraken: Start,
) -> None:
    """
    An sdp object nested as deep as the parser allows is relayed or refused
    with an error; it never closes the sender with 1011.
    """
    kraken = await start_kraken()
    sender, receiver = await kraken.peers("a", "b")
    depths = list(range(900, 1000, 5))

    for depth in depths:
        nested = b"[" * depth + b"]" * depth
        sender.send(
            b'{"kraken": "signal", "signal": {"type": 1, "to": "b", "sdp": {"x": '
            + nested
            + b"}}}",
            binary=False,
        )
    sender.send_signal(offer("nobody"))
    await sender.wait_until(
        lambda: bool(sender.errors("unknown-peer")) or sender.has_closed
    )

    assert sender.close_code is None
    await receiver.wait_until(
        lambda: len(receiver.signals(1)) + len(sender.errors()) == len(depths) + 1
    )
