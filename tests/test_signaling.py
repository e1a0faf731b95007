"""
Signaling without I/O: parsing text frames, and who a L{PeerDirectory} sends
what, driven with plain calls and strings standing in for connections.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kraken.signaling import (
    MAX_DEPTH,
    MAX_META_BYTES,
    MAX_NAME,
    MAX_PEER_ID,
    Delivery,
    Outcome,
    PeerDirectory,
    SignalError,
    SignalType,
    error_message,
    parse_signal,
    signal_message,
)

SECRET = "s" * 16
SDP = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 1 10.0.0.1 5000 typ host", "sdpMid": "0"}


def envelope(signal: Any) -> bytes:
    """
    A text frame carrying C{signal} in the signaling envelope.
    """
    return json.dumps({"kraken": "signal", "signal": signal}).encode("utf-8")


def announce_signal(peer_id: str, name: str = "", **extra: Any) -> dict[str, Any]:
    """
    An Announce as parse_signal returns it.
    """
    return parse_signal(envelope({"type": 0, "from": peer_id, "name": name, **extra}))


def relay_signal(kind: SignalType, **fields: Any) -> dict[str, Any]:
    """
    An Offer, Answer, IceCandidate or Hangup as parse_signal returns it.
    """
    return parse_signal(envelope({"type": int(kind), **fields}))


def announced(
    directory: PeerDirectory[str], *peers: tuple[str, str]
) -> PeerDirectory[str]:
    """
    C{directory} after each C{(member, peer_id)} announced itself as C{peer_id}.
    """
    for member, peer_id in peers:
        directory.handle(member, announce_signal(peer_id, name=peer_id.upper()))
    return directory


def to(
    outcome: Outcome[str] | list[Delivery[str]], member: str
) -> list[dict[str, Any]]:
    """
    The signals an outcome (or a list of deliveries) sends to C{member}.
    """
    deliveries = outcome.deliveries if isinstance(outcome, Outcome) else outcome
    found = []
    for delivery in deliveries:
        if delivery.member == member:
            assert delivery.message["kraken"] == "signal"
            found.append(delivery.message["signal"])
    return found


def recipients(outcome: Outcome[str] | list[Delivery[str]]) -> list[str]:
    """
    Every member an outcome sends something to, in order.
    """
    deliveries = outcome.deliveries if isinstance(outcome, Outcome) else outcome
    return [delivery.member for delivery in deliveries]


def refusal(directory: PeerDirectory[str], member: str, signal: Any) -> SignalError:
    """
    The error C{directory} raises for C{signal} from C{member}.
    """
    with pytest.raises(SignalError) as raised:
        directory.handle(member, signal)
    return raised.value


def peer(peer_id: str, name: str, meta: Any = None) -> dict[str, Any]:
    """
    The PEER object of SPEC.md.
    """
    return {"peerId": peer_id, "name": name, "meta": meta}


# Parsing text frames


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
def test_envelope_of_a_client_type_yields_its_signal(kind: int) -> None:
    """
    The signal of an envelope with a type clients may send comes back intact.
    """
    signal = {"type": kind, "from": "a", "to": "b", "extra": {"x": [1, None]}}

    assert parse_signal(envelope(signal)) == signal


NOT_JSON = {
    "empty": b"",
    "truncated": b'{"kraken": "signal", "signal": {',
    "trailing-garbage": envelope({"type": 4}) + b"x",
    "nan": b'{"kraken": "signal", "signal": {"type": 4, "x": NaN}}',
    "infinity": b'{"kraken": "signal", "signal": {"type": 4, "x": Infinity}}',
    "minus-infinity": b'{"kraken": "signal", "signal": {"type": 4, "x": -Infinity}}',
    "bare-nan": b"NaN",
    "single-quotes": b"{'kraken': 'signal'}",
    "not-utf8": b'{"kraken": "signal", "signal": {"type": 4, "x": "\xff"}}',
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep-nesting-inside-signal": (
        b'{"kraken": "signal", "signal": {"type": 4, "x": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}}"
    ),
}


@pytest.mark.parametrize("payload", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_text_that_is_not_json_is_bad_json(payload: bytes) -> None:
    """
    Text that JavaScript's JSON.parse would refuse is refused as bad-json and
    counts as garbage.
    """
    with pytest.raises(SignalError) as raised:
        parse_signal(payload)

    assert raised.value.code == "bad-json"
    assert raised.value.garbage


NOT_ENVELOPES = {
    "array": [],
    "string": "signal",
    "number": 1,
    "null": None,
    "empty-object": {},
    "no-kraken-field": {"signal": {"type": 1}},
    "other-kraken-kind": {"kraken": "error", "signal": {"type": 1}},
    "kraken-not-a-string": {"kraken": 1, "signal": {"type": 1}},
    "no-signal": {"kraken": "signal"},
    "signal-null": {"kraken": "signal", "signal": None},
    "signal-array": {"kraken": "signal", "signal": [0]},
    "signal-string": {"kraken": "signal", "signal": "offer"},
}


@pytest.mark.parametrize(
    "document", list(NOT_ENVELOPES.values()), ids=list(NOT_ENVELOPES)
)
def test_json_that_is_not_an_envelope_is_bad_envelope(document: Any) -> None:
    """
    JSON without C{"kraken": "signal"} and a signal object is refused as
    bad-envelope and counts as garbage.
    """
    with pytest.raises(SignalError) as raised:
        parse_signal(json.dumps(document).encode("utf-8"))

    assert raised.value.code == "bad-envelope"
    assert raised.value.garbage


UNKNOWN_TYPES = {
    "peer-list": 5,
    "peer-joined": 6,
    "peer-left": 7,
    "eight": 8,
    "negative": -1,
    "huge": 2**70,
    "true": True,
    "false": False,
    "string": "1",
    "null": None,
    "object": {"type": 1},
}


@pytest.mark.parametrize("kind", list(UNKNOWN_TYPES.values()), ids=list(UNKNOWN_TYPES))
def test_type_a_client_may_not_send_is_unknown_type(kind: Any) -> None:
    """
    Server-only types, unknown numbers, booleans and non-numbers are refused
    as unknown-type and count as garbage.
    """
    with pytest.raises(SignalError) as raised:
        parse_signal(envelope({"type": kind, "from": "a", "to": "b"}))

    assert raised.value.code == "unknown-type"
    assert raised.value.garbage


def nested(levels: int) -> Any:
    """
    JSON data of C{levels} nested containers, objects and arrays in turn.
    """
    value: Any = "leaf"
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


def test_signal_nested_max_depth_levels_deep_is_accepted() -> None:
    """
    A signal whose containers, itself included, nest MAX_DEPTH levels deep
    parses.
    """
    signal = {"type": 1, "to": "b", "sdp": nested(MAX_DEPTH - 1)}

    assert parse_signal(envelope(signal)) == signal


def test_signal_nested_deeper_than_max_depth_is_bad_envelope() -> None:
    """
    One level more is refused as bad-envelope before anything is relayed, so
    encoding it again for the receiver cannot exhaust the stack.
    """
    signal = {"type": 1, "to": "b", "sdp": nested(MAX_DEPTH)}

    with pytest.raises(SignalError) as raised:
        parse_signal(envelope(signal))

    assert raised.value.code == "bad-envelope"
    assert raised.value.garbage


def test_signal_without_a_type_is_unknown_type() -> None:
    """
    A signal with no type field at all is refused as unknown-type.
    """
    with pytest.raises(SignalError) as raised:
        parse_signal(envelope({"from": "a"}))

    assert raised.value.code == "unknown-type"


def test_error_and_signal_envelopes_have_the_documented_shape() -> None:
    """
    Errors and signals are wrapped in the envelopes the README documents.
    """
    assert error_message("bad-json", "No.") == {
        "kraken": "error",
        "error": {"code": "bad-json", "message": "No."},
    }
    assert signal_message({"type": 7}) == {"kraken": "signal", "signal": {"type": 7}}


# Announce, PeerList and PeerJoined


def test_first_peer_of_a_room_gets_an_empty_peer_list_and_nobody_else_hears() -> None:
    """
    The first Announce of a room is answered with an empty PeerList only.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)

    outcome = directory.handle("m1", announce_signal("a", name="Ann"))

    assert recipients(outcome) == ["m1"]
    assert to(outcome, "m1") == [{"type": SignalType.PEER_LIST, "peers": []}]
    assert outcome.replaced is None
    assert len(directory) == 1


def test_announce_sends_peer_list_to_the_sender_and_peer_joined_to_the_others() -> None:
    """
    A new peer gets every other peer in announce order; each of them gets one
    PeerJoined describing the new peer.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))
    meta = {"avatar": "https://example.com/c.png", "tags": ["x", 1, None, True]}

    outcome = directory.handle("m3", announce_signal("c", name="Cid", meta=meta))

    assert to(outcome, "m3") == [
        {"type": SignalType.PEER_LIST, "peers": [peer("a", "A"), peer("b", "B")]}
    ]
    joined = {"type": SignalType.PEER_JOINED, "peer": peer("c", "Cid", meta)}
    assert to(outcome, "m1") == [joined]
    assert to(outcome, "m2") == [joined]
    assert sorted(recipients(outcome)) == ["m1", "m2", "m3"]


def test_peer_list_and_peer_joined_serialize_with_numeric_types() -> None:
    """
    The messages of an Announce serialize to JSON with the type as a number.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    outcome = directory.handle("m2", announce_signal("b", name="Bo"))

    texts = sorted(json.dumps(d.message, sort_keys=True) for d in outcome.deliveries)
    assert texts == sorted(
        [
            json.dumps(
                {
                    "kraken": "signal",
                    "signal": {"type": 5, "peers": [peer("a", "A")]},
                },
                sort_keys=True,
            ),
            json.dumps(
                {"kraken": "signal", "signal": {"type": 6, "peer": peer("b", "Bo")}},
                sort_keys=True,
            ),
        ]
    )


def test_secret_is_never_sent_to_anyone() -> None:
    """
    Neither the PeerList, the PeerJoined nor the PeerLeft carries the secret.
    """
    secret = "very-secret-value-0123456789"
    directory = announced(PeerDirectory(10), ("m1", "a"))

    outcome = directory.handle("m2", announce_signal("b", secret=secret))
    later = directory.handle("m3", announce_signal("c"))
    left = directory.leave("m2")

    for delivery in [*outcome.deliveries, *later.deliveries, *left]:
        assert secret not in json.dumps(delivery.message)


def test_peer_of_returns_the_announced_peer_of_a_connection() -> None:
    """
    A directory knows which peer each announced connection is, and none for
    a connection that did not announce.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    described = directory.peer_of("m1")

    assert described is not None
    assert described.describe() == peer("a", "A")
    assert directory.peer_of("m2") is None


PEER_IDS_REFUSED = {
    "missing": None,
    "empty": "",
    "too-long": "x" * (MAX_PEER_ID + 1),
    "number": 7,
    "object": {"id": "a"},
}


@pytest.mark.parametrize(
    "peer_id", list(PEER_IDS_REFUSED.values()), ids=list(PEER_IDS_REFUSED)
)
def test_announce_with_an_invalid_peer_id_is_bad_envelope(peer_id: Any) -> None:
    """
    A peer id that is not a string of 1 to 128 characters is refused as
    bad-envelope and the connection stays unannounced.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    signal = relay_signal(SignalType.ANNOUNCE, name="x")
    if peer_id is not None:
        signal["from"] = peer_id

    error = refusal(directory, "m1", signal)

    assert error.code == "bad-envelope"
    assert error.garbage
    assert len(directory) == 0


def test_peer_id_of_128_characters_is_accepted() -> None:
    """
    The longest peer id announces like any other.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)

    directory.handle("m1", announce_signal("x" * MAX_PEER_ID))

    assert len(directory) == 1


@pytest.mark.parametrize(
    "name",
    [None, 3, ["a"], "n" * (MAX_NAME + 1)],
    ids=["missing", "number", "list", "too-long"],
)
def test_announce_with_an_invalid_name_is_bad_envelope(name: Any) -> None:
    """
    A name that is not a string of at most 256 characters is refused.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    signal = relay_signal(SignalType.ANNOUNCE, **{"from": "a"})
    if name is not None:
        signal["name"] = name

    assert refusal(directory, "m1", signal).code == "bad-envelope"
    assert len(directory) == 0


def test_empty_name_and_null_meta_are_accepted() -> None:
    """
    An empty name and a null meta are a valid Announce; meta is then null.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    outcome = directory.handle("m2", announce_signal("b", name="", meta=None))

    assert to(outcome, "m1") == [
        {"type": SignalType.PEER_JOINED, "peer": peer("b", "", None)}
    ]


def meta_of_json_size(size: int, fill: str = "x") -> dict[str, str]:
    """
    A meta object whose compact JSON, in UTF-8, is exactly C{size} bytes.
    """
    overhead = len(b'{"k":""}')
    width = len(fill.encode("utf-8"))
    assert (size - overhead) % width == 0
    meta = {"k": fill * ((size - overhead) // width)}
    text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    assert len(text.encode("utf-8")) == size
    return meta


def test_meta_of_one_kib_is_passed_on_untouched() -> None:
    """
    A meta object of exactly 1 KiB of JSON reaches the others unchanged.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))
    meta = meta_of_json_size(MAX_META_BYTES)

    outcome = directory.handle("m2", announce_signal("b", meta=meta))

    assert to(outcome, "m1")[0]["peer"]["meta"] == meta


def test_meta_one_byte_over_one_kib_is_bad_envelope() -> None:
    """
    A meta object of 1 KiB of JSON plus one byte is refused as bad-envelope.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))
    signal = announce_signal("b", meta=meta_of_json_size(MAX_META_BYTES + 1))

    error = refusal(directory, "m2", signal)

    assert error.code == "bad-envelope"
    assert error.garbage
    assert len(directory) == 1


def test_meta_size_counts_the_utf8_bytes_of_its_json() -> None:
    """
    Non-ASCII text in meta counts with its UTF-8 size, as a client measuring
    JSON.stringify in bytes sees it, so 1 KiB of such JSON is accepted.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))
    meta = meta_of_json_size(MAX_META_BYTES, fill="é")

    outcome = directory.handle("m2", announce_signal("b", meta=meta))

    assert to(outcome, "m1")[0]["peer"]["meta"] == meta


@pytest.mark.parametrize(
    "meta", [[1, 2], "text", 5, True], ids=["array", "string", "number", "boolean"]
)
def test_meta_that_is_not_an_object_is_bad_envelope(meta: Any) -> None:
    """
    A meta that is not a JSON object is refused.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)

    assert refusal(directory, "m1", announce_signal("a", meta=meta)).code == (
        "bad-envelope"
    )


@pytest.mark.parametrize("length", [16, 64, 128])
def test_secret_of_16_to_128_characters_is_accepted(length: int) -> None:
    """
    Secrets of the allowed lengths announce normally.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)

    directory.handle("m1", announce_signal("a", secret="k" * length))

    assert len(directory) == 1


@pytest.mark.parametrize(
    "secret",
    ["", "k" * 15, "k" * 129, 12345678901234567890, ["k" * 16]],
    ids=["empty", "15-characters", "129-characters", "number", "list"],
)
def test_secret_outside_the_rules_is_bad_envelope(secret: Any) -> None:
    """
    A secret that is not a string of 16 to 128 characters is refused.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)

    error = refusal(directory, "m1", announce_signal("a", secret=secret))

    assert error.code == "bad-envelope"
    assert len(directory) == 0


def test_taken_peer_id_is_refused_with_peer_id_taken() -> None:
    """
    A second connection announcing a taken id without a secret is refused and
    not announced; the first keeps the id.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))

    error = refusal(directory, "m3", announce_signal("a", name="impostor"))

    assert error.code == "peer-id-taken"
    assert not error.garbage
    assert directory.peer_of("m3") is None
    outcome = directory.handle("m2", relay_signal(SignalType.HANGUP, to="a"))
    assert recipients(outcome) == ["m1"]


def test_announce_as_another_id_on_an_announced_connection_is_already_announced() -> (
    None
):
    """
    A connection cannot announce a second peer id.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    error = refusal(directory, "m1", announce_signal("b"))

    assert error.code == "already-announced"
    assert directory.peer_of("m1") is not None
    assert len(directory) == 1


def test_repeated_announce_with_the_same_name_tells_nobody_else() -> None:
    """
    Announcing again with the same id, name and meta answers a fresh PeerList
    and sends no PeerJoined.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))

    outcome = directory.handle("m1", announce_signal("a", name="A"))

    assert recipients(outcome) == ["m1"]
    assert to(outcome, "m1") == [
        {"type": SignalType.PEER_LIST, "peers": [peer("b", "B")]}
    ]


def test_repeated_announce_with_a_new_name_sends_peer_joined_to_the_others() -> None:
    """
    Announcing again with a changed name tells the others with a PeerJoined.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))

    outcome = directory.handle("m1", announce_signal("a", name="Ada"))

    assert to(outcome, "m2") == [
        {"type": SignalType.PEER_JOINED, "peer": peer("a", "Ada")}
    ]


def test_repeated_announce_without_secret_keeps_the_secret() -> None:
    """
    A repeated Announce that leaves the secret out keeps the one given first,
    so a later reconnect with it still takes the id over.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("m1", announce_signal("a", secret=SECRET))
    directory.handle("m1", announce_signal("a", name="renamed"))

    outcome = directory.handle("m2", announce_signal("a", secret=SECRET))

    assert outcome.replaced == "m1"


def test_room_full_refuses_a_new_peer() -> None:
    """
    Past max_peers a new peer is refused with room-full and not announced.
    """
    directory = announced(PeerDirectory(2), ("m1", "a"), ("m2", "b"))

    error = refusal(directory, "m3", announce_signal("c"))

    assert error.code == "room-full"
    assert not error.garbage
    assert len(directory) == 2
    assert directory.peer_of("m3") is None


def test_peer_that_leaves_a_full_room_makes_place() -> None:
    """
    Once a peer of a full room has left, a new one can announce.
    """
    directory = announced(PeerDirectory(2), ("m1", "a"), ("m2", "b"))
    directory.leave("m2")

    outcome = directory.handle("m3", announce_signal("c"))

    assert to(outcome, "m3") == [
        {"type": SignalType.PEER_LIST, "peers": [peer("a", "A")]}
    ]


# Reconnecting peers


def test_takeover_with_the_right_secret_replaces_the_old_connection() -> None:
    """
    The same id and secret from a new connection hands back the old one to
    close, answers a PeerList and tells the others nothing.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("old", announce_signal("a", name="A", secret=SECRET))
    announced(directory, ("m2", "b"))

    outcome = directory.handle("new", announce_signal("a", name="A", secret=SECRET))

    assert outcome.replaced == "old"
    assert recipients(outcome) == ["new"]
    assert to(outcome, "new") == [
        {"type": SignalType.PEER_LIST, "peers": [peer("b", "B")]}
    ]
    assert directory.peer_of("old") is None
    assert len(directory) == 2


def test_takeover_with_a_new_name_sends_peer_joined_to_the_others_only() -> None:
    """
    A takeover that changes name or meta sends one PeerJoined to every other
    peer, but none to the new or the replaced connection.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("old", announce_signal("a", name="A", secret=SECRET))
    announced(directory, ("m2", "b"), ("m3", "c"))
    meta = {"camera": False}

    outcome = directory.handle(
        "new", announce_signal("a", name="A2", meta=meta, secret=SECRET)
    )

    joined = [{"type": SignalType.PEER_JOINED, "peer": peer("a", "A2", meta)}]
    assert to(outcome, "m2") == joined
    assert to(outcome, "m3") == joined
    assert to(outcome, "old") == []
    assert [s["type"] for s in to(outcome, "new")] == [SignalType.PEER_LIST]


def test_replaced_connection_leaving_sends_no_peer_left() -> None:
    """
    When the replaced connection closes afterwards, nobody hears of it.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("old", announce_signal("a", secret=SECRET))
    announced(directory, ("m2", "b"))
    directory.handle("new", announce_signal("a", secret=SECRET))

    assert directory.leave("old") == []
    assert len(directory) == 2


def test_signals_to_a_taken_over_id_reach_the_new_connection() -> None:
    """
    After a takeover the peer id routes to the new connection, and the old
    one can no longer relay.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("old", announce_signal("a", secret=SECRET))
    announced(directory, ("m2", "b"))
    directory.handle("new", announce_signal("a", secret=SECRET))

    outcome = directory.handle("m2", relay_signal(SignalType.OFFER, to="a", sdp=SDP))

    assert recipients(outcome) == ["new"]
    assert refusal(directory, "old", relay_signal(SignalType.HANGUP, to="b")).code == (
        "not-announced"
    )


def test_takeover_succeeds_in_a_full_room() -> None:
    """
    Taking an id over does not need a free place: the peer count stays.
    """
    directory: PeerDirectory[str] = PeerDirectory(2)
    directory.handle("old", announce_signal("a", secret=SECRET))
    announced(directory, ("m2", "b"))

    outcome = directory.handle("new", announce_signal("a", secret=SECRET))

    assert outcome.replaced == "old"
    assert len(directory) == 2


def test_takeover_can_happen_again_with_the_same_secret() -> None:
    """
    A peer that reconnects twice takes its id over twice.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("first", announce_signal("a", secret=SECRET))
    directory.handle("second", announce_signal("a", secret=SECRET))

    outcome = directory.handle("third", announce_signal("a", secret=SECRET))

    assert outcome.replaced == "second"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (SECRET, "t" * 16),
        (SECRET, None),
        (None, SECRET),
        (SECRET, SECRET + "x"),
    ],
    ids=["wrong", "missing", "none-was-set", "longer"],
)
def test_takeover_without_the_matching_secret_is_peer_id_taken(
    first: str | None, second: str | None
) -> None:
    """
    A wrong or missing secret, or an id announced without one, cannot be
    taken over; the first connection keeps the id.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    extra = {} if first is None else {"secret": first}
    directory.handle("old", announce_signal("a", **extra))
    extra = {} if second is None else {"secret": second}

    error = refusal(directory, "new", announce_signal("a", **extra))

    assert error.code == "peer-id-taken"
    assert directory.peer_of("old") is not None
    assert directory.peer_of("new") is None


def test_secret_with_lone_surrogates_is_compared_without_crashing() -> None:
    """
    A secret holding lone UTF-16 surrogates (valid in JSON and JavaScript)
    takes over or is refused with a SignalError, never another exception.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    secret = json.loads('"' + "\\ud800" * 16 + '"')

    try:
        directory.handle("old", announce_signal("a", secret=secret))
        outcome = directory.handle("new", announce_signal("a", secret=secret))
    except SignalError as error:
        assert error.code == "bad-envelope"
    else:
        assert outcome.replaced == "old"


# Offer, Answer, IceCandidate and Hangup


RELAYED = {
    "offer": (SignalType.OFFER, {"sdp": SDP}),
    "answer": (SignalType.ANSWER, {"sdp": {"type": "answer", "sdp": "v=0\r\n"}}),
    "ice-candidate": (SignalType.ICE_CANDIDATE, {"candidate": CANDIDATE}),
    "hangup": (SignalType.HANGUP, {"reason": "rejected"}),
}


@pytest.mark.parametrize(("kind", "payload"), list(RELAYED.values()), ids=list(RELAYED))
def test_relayed_signal_reaches_only_the_named_peer_untouched(
    kind: SignalType, payload: dict[str, Any]
) -> None:
    """
    A signal with C{to} goes to that peer alone, with C{from} set to the
    sender and every other field as it was sent.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"), ("m3", "c"))
    fields = {**payload, "to": "b", "custom": {"nested": [1, "two"]}, "n": 1.5}

    outcome = directory.handle("m1", relay_signal(kind, **fields))

    assert recipients(outcome) == ["m2"]
    assert to(outcome, "m2") == [{"type": int(kind), "from": "a", **fields}]
    assert outcome.replaced is None


@pytest.mark.parametrize(("kind", "payload"), list(RELAYED.values()), ids=list(RELAYED))
def test_matching_from_is_accepted(kind: SignalType, payload: dict[str, Any]) -> None:
    """
    A C{from} equal to the sender's id is accepted as if it were absent.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))
    signal = relay_signal(kind, to="b", **payload)
    signal["from"] = "a"

    outcome = directory.handle("m1", signal)

    assert to(outcome, "m2")[0]["from"] == "a"


@pytest.mark.parametrize(
    "claimed",
    ["b", "c", "", 5, ["a"]],
    ids=["other-peer", "absent-peer", "empty", "number", "list"],
)
def test_from_that_is_not_the_senders_id_is_not_your_peer_id(claimed: Any) -> None:
    """
    A C{from} naming anyone but the sender is refused and counts as garbage.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))
    signal = relay_signal(SignalType.OFFER, to="b", sdp=SDP)
    signal["from"] = claimed

    error = refusal(directory, "m1", signal)

    assert error.code == "not-your-peer-id"
    assert error.garbage


def test_signal_before_announce_is_not_announced() -> None:
    """
    An unannounced connection cannot relay anything.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    for kind, payload in RELAYED.values():
        error = refusal(directory, "m2", relay_signal(kind, to="a", **payload))
        assert error.code == "not-announced"


def test_signal_to_an_absent_peer_is_unknown_peer() -> None:
    """
    A C{to} naming nobody in the room is refused with unknown-peer, which a
    well-behaved client can run into and so is no garbage.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    error = refusal(directory, "m1", relay_signal(SignalType.OFFER, to="zz", sdp=SDP))

    assert error.code == "unknown-peer"
    assert not error.garbage


def test_signal_to_a_peer_that_left_is_unknown_peer() -> None:
    """
    Once a peer has left, signals to it are refused.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))
    directory.leave("m2")

    error = refusal(directory, "m1", relay_signal(SignalType.OFFER, to="b", sdp=SDP))

    assert error.code == "unknown-peer"


def test_peers_of_another_directory_are_unknown() -> None:
    """
    A peer id announced in another room's directory is unknown here.
    """
    here = announced(PeerDirectory(10), ("m1", "a"))
    announced(PeerDirectory(10), ("elsewhere", "b"))

    error = refusal(here, "m1", relay_signal(SignalType.OFFER, to="b", sdp=SDP))

    assert error.code == "unknown-peer"


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (SignalType.OFFER, {"to": "b"}),
        (SignalType.OFFER, {"to": "b", "sdp": "v=0"}),
        (SignalType.ANSWER, {"to": "b", "sdp": None}),
        (SignalType.ICE_CANDIDATE, {"to": "b"}),
        (SignalType.ICE_CANDIDATE, {"to": "b", "candidate": ["c"]}),
        (SignalType.OFFER, {"sdp": SDP}),
        (SignalType.ANSWER, {"to": 5, "sdp": SDP}),
        (SignalType.ICE_CANDIDATE, {"to": ["b"], "candidate": CANDIDATE}),
        (SignalType.HANGUP, {"to": 5}),
    ],
    ids=[
        "offer-without-sdp",
        "offer-sdp-string",
        "answer-sdp-null",
        "ice-without-candidate",
        "ice-candidate-list",
        "offer-without-to",
        "answer-to-number",
        "ice-to-list",
        "hangup-to-number",
    ],
)
def test_relayed_signal_without_its_fields_is_bad_envelope(
    kind: SignalType, fields: dict[str, Any]
) -> None:
    """
    An Offer or Answer without an C{sdp} object, an IceCandidate without a
    C{candidate} object, or a C{to} that is not a string is refused.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))

    error = refusal(directory, "m1", relay_signal(kind, **fields))

    assert error.code == "bad-envelope"
    assert error.garbage


def test_hangup_without_to_goes_to_every_other_peer() -> None:
    """
    A Hangup with no C{to} reaches every other announced peer, not the sender.
    """
    directory = announced(
        PeerDirectory(10), ("m1", "a"), ("m2", "b"), ("m3", "c"), ("m4", "d")
    )

    outcome = directory.handle("m1", relay_signal(SignalType.HANGUP, reason="bye"))

    assert sorted(recipients(outcome)) == ["m2", "m3", "m4"]
    for member in ("m2", "m3", "m4"):
        assert to(outcome, member) == [
            {"type": SignalType.HANGUP, "from": "a", "reason": "bye"}
        ]


def test_hangup_without_to_from_a_lone_peer_goes_nowhere() -> None:
    """
    A Hangup with no C{to} in a room with nobody else sends nothing.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    outcome = directory.handle("m1", relay_signal(SignalType.HANGUP))

    assert outcome.deliveries == []


def test_relayed_signal_does_not_change_the_parsed_signal() -> None:
    """
    Setting C{from} on the forwarded copy leaves the parsed signal as it was.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"))
    signal = relay_signal(SignalType.OFFER, to="b", sdp=SDP)

    directory.handle("m1", signal)

    assert "from" not in signal


# Leaving


def test_leave_sends_peer_left_to_every_remaining_peer() -> None:
    """
    A closed connection's peer is forgotten and every remaining peer gets one
    PeerLeft describing it.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"), ("m2", "b"), ("m3", "c"))

    left = directory.leave("m2")

    assert sorted(recipients(left)) == ["m1", "m3"]
    for member in ("m1", "m3"):
        assert to(left, member) == [
            {"type": SignalType.PEER_LEFT, "peer": peer("b", "B")}
        ]
    assert len(directory) == 2
    assert directory.peer_of("m2") is None


def test_leave_of_an_unannounced_connection_sends_nothing() -> None:
    """
    A connection that never announced leaves silently.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    assert directory.leave("m2") == []
    assert len(directory) == 1


def test_leave_of_the_last_peer_sends_nothing() -> None:
    """
    The last peer of a room leaves without anyone to tell.
    """
    directory = announced(PeerDirectory(10), ("m1", "a"))

    assert directory.leave("m1") == []
    assert len(directory) == 0


def test_id_of_a_peer_that_left_is_free_again() -> None:
    """
    After a peer left, another connection can announce its id without secret.
    """
    directory: PeerDirectory[str] = PeerDirectory(10)
    directory.handle("old", announce_signal("a", secret=SECRET))
    announced(directory, ("m2", "b"))
    directory.leave("old")

    outcome = directory.handle("new", announce_signal("a", name="back"))

    assert outcome.replaced is None
    assert to(outcome, "m2") == [
        {"type": SignalType.PEER_JOINED, "peer": peer("a", "back")}
    ]
