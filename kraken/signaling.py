"""
WebRTC signaling: peers of a room find each other and exchange SDP offers,
answers and ICE candidates through the server.

Signaling travels in JSON text frames beside the binary sync frames of the
same socket, in the envelope C{{"kraken": "signal", "signal": {...}}}.  This
module validates those messages and decides who receives what; it does no
I/O, so that a broker between several processes could route the same
decisions later.  The WebSocket adapter sends the deliveries it returns.

Peers exist only within one internal room (C{{app_id}}:{{room}}): a
L{PeerDirectory} belongs to one L{kraken.rooms.Room}.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

#: The longest peer id, in characters.
MAX_PEER_ID = 128

#: The longest peer name, in characters.
MAX_NAME = 256

#: The largest C{meta} object, in bytes of compact JSON.
MAX_META_BYTES = 1024

#: How deep a signal's JSON may nest (SDP and ICE objects are shallow).
MAX_DEPTH = 32

#: The bounds of a reconnect secret, in characters.
SECRET_LENGTHS = range(16, 129)


class SignalType(IntEnum):
    """
    The signaling message types of SPEC.md.
    """

    ANNOUNCE = 0
    OFFER = 1
    ANSWER = 2
    ICE_CANDIDATE = 3
    HANGUP = 4
    PEER_LIST = 5
    PEER_JOINED = 6
    PEER_LEFT = 7


#: The types a peer sends to another peer through the server.
_RELAYED = {
    SignalType.OFFER,
    SignalType.ANSWER,
    SignalType.ICE_CANDIDATE,
    SignalType.HANGUP,
}

#: The object field each relayed type must carry.
_PAYLOAD_FIELD = {
    SignalType.OFFER: "sdp",
    SignalType.ANSWER: "sdp",
    SignalType.ICE_CANDIDATE: "candidate",
}


class SignalError(Exception):
    """
    A signaling message is refused; the sender gets an error message and the
    connection stays open.

    @ivar code: the error code clients branch on (C{bad-json}, ...).
    @ivar garbage: whether the message was malformed, which counts against
        the connection's garbage budget; refusals a well-behaved client can
        run into (a peer that just left, say) do not.
    """

    def __init__(self, code: str, message: str, *, garbage: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.garbage = garbage


def error_message(code: str, message: str) -> dict[str, Any]:
    """
    The error envelope sent back to a sender.
    """
    return {"kraken": "error", "error": {"code": code, "message": message}}


def signal_message(signal: dict[str, Any]) -> dict[str, Any]:
    """
    The envelope of a signal sent to a peer.
    """
    return {"kraken": "signal", "signal": signal}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_signal(payload: bytes) -> dict[str, Any]:
    """
    Decode a text frame into the signal it carries.

    @raise SignalError: C{bad-json} for text that is not JSON (as JavaScript
        reads it), C{bad-envelope} for JSON that is not a signal envelope,
        C{unknown-type} for a type clients may not send.
    """
    try:
        envelope = json.loads(payload.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SignalError(
            "bad-json", "The message is not JSON.", garbage=True
        ) from None

    if (
        not isinstance(envelope, dict)
        or envelope.get("kraken") != "signal"
        or not isinstance(envelope.get("signal"), dict)
    ):
        raise SignalError(
            "bad-envelope",
            'Send {"kraken": "signal", "signal": {...}}.',
            garbage=True,
        )
    signal: dict[str, Any] = envelope["signal"]
    if _too_deep(signal):
        raise SignalError(
            "bad-envelope",
            f"Signals nest at most {MAX_DEPTH} levels deep.",
            garbage=True,
        )

    kind = signal.get("type")
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise SignalError(
            "unknown-type", "The signal has no integer type.", garbage=True
        )
    if kind != SignalType.ANNOUNCE and kind not in _RELAYED:
        raise SignalError(
            "unknown-type", f"Clients cannot send signals of type {kind}.", garbage=True
        )
    return signal


def _too_deep(value: object) -> bool:
    """
    Whether JSON data nests deeper than L{MAX_DEPTH} (deep enough to exhaust
    the stack when it is encoded again for the receiver).
    """
    level: list[object] = [value]
    for _ in range(MAX_DEPTH + 1):
        children: list[object] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children:
            return False
        level = children
    return True


@dataclass(slots=True)
class Peer:
    """
    An announced peer.

    @ivar secret: proves a reconnecting connection is the same peer; never
        sent to anyone and never logged.
    """

    peer_id: str
    name: str
    meta: dict[str, Any] | None
    secret: str | None = field(repr=False)

    def describe(self) -> dict[str, Any]:
        """
        The PEER object other peers see.
        """
        return {"peerId": self.peer_id, "name": self.name, "meta": self.meta}


M = TypeVar("M", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Delivery(Generic[M]):
    """
    A message for one member's connection.
    """

    member: M
    message: dict[str, Any]


@dataclass(slots=True)
class Outcome(Generic[M]):
    """
    What handling one signal produced.

    @ivar replaced: a connection whose peer id was taken over by the sender;
        the caller closes it with 4409.
    """

    deliveries: list[Delivery[M]] = field(default_factory=list)
    replaced: M | None = None


def _bad(message: str) -> SignalError:
    return SignalError("bad-envelope", message, garbage=True)


def _announced_fields(
    signal: dict[str, Any],
) -> tuple[str, str, dict[str, Any] | None, str | None]:
    peer_id = signal.get("from")
    if not isinstance(peer_id, str) or not 1 <= len(peer_id) <= MAX_PEER_ID:
        raise _bad(f"from must be a peer id of 1 to {MAX_PEER_ID} characters.")

    name = signal.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise _bad(f"name must be a string of at most {MAX_NAME} characters.")

    meta = signal.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise _bad("meta must be a JSON object.")
        compact = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
        if len(compact.encode("utf-8", "surrogatepass")) > MAX_META_BYTES:
            raise _bad(f"meta must be at most {MAX_META_BYTES} bytes of JSON.")

    secret = signal.get("secret")
    if secret is not None and (
        not isinstance(secret, str) or len(secret) not in SECRET_LENGTHS
    ):
        raise _bad("secret must be a string of 16 to 128 characters.")
    return peer_id, name, meta, secret


class PeerDirectory(Generic[M]):
    """
    The announced peers of one internal room and the connections they use.
    """

    def __init__(self, max_peers: int) -> None:
        self._max_peers = max_peers
        self._peers: dict[str, Peer] = {}
        self._members: dict[str, M] = {}
        self._ids: dict[M, str] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def peer_of(self, member: M) -> Peer | None:
        """
        The peer a connection announced, if any.
        """
        peer_id = self._ids.get(member)
        return self._peers[peer_id] if peer_id is not None else None

    def handle(self, member: M, signal: dict[str, Any]) -> Outcome[M]:
        """
        Act on one parsed signal from C{member}.

        @raise SignalError: the signal is refused.
        """
        if signal["type"] == SignalType.ANNOUNCE:
            return self._announce(member, signal)
        return self._relay(member, signal)

    def _others(self, member: M) -> list[M]:
        return [other for other in self._members.values() if other != member]

    def _peer_list(self, member: M, peer_id: str) -> Delivery[M]:
        peers = [p.describe() for p in self._peers.values() if p.peer_id != peer_id]
        return Delivery(
            member, signal_message({"type": SignalType.PEER_LIST, "peers": peers})
        )

    def _joined(self, peer: Peer, member: M) -> list[Delivery[M]]:
        message = signal_message(
            {"type": SignalType.PEER_JOINED, "peer": peer.describe()}
        )
        return [Delivery(other, message) for other in self._others(member)]

    def _announce(self, member: M, signal: dict[str, Any]) -> Outcome[M]:
        peer_id, name, meta, secret = _announced_fields(signal)
        own = self._ids.get(member)
        if own is not None and own != peer_id:
            raise SignalError(
                "already-announced",
                f"This connection is already announced as {own!r}.",
            )

        existing = self._peers.get(peer_id)
        new = Peer(peer_id, name, meta, secret)
        if existing is None:
            if len(self._peers) >= self._max_peers:
                raise SignalError(
                    "room-full", f"The room has {self._max_peers} peers already."
                )
            self._add(new, member)
            return Outcome(
                [self._peer_list(member, peer_id), *self._joined(new, member)]
            )

        outcome: Outcome[M] = Outcome()
        if own is None:
            if not _same_secret(existing.secret, secret):
                raise SignalError(
                    "peer-id-taken", f"Another connection is peer {peer_id!r}."
                )
            outcome.replaced = self._members[peer_id]
            del self._ids[outcome.replaced]
        else:
            new.secret = existing.secret if secret is None else secret
        self._add(new, member)

        outcome.deliveries.append(self._peer_list(member, peer_id))
        if (existing.name, existing.meta) != (name, meta):
            outcome.deliveries.extend(self._joined(new, member))
        return outcome

    def _add(self, peer: Peer, member: M) -> None:
        self._peers[peer.peer_id] = peer
        self._members[peer.peer_id] = member
        self._ids[member] = peer.peer_id

    def _relay(self, member: M, signal: dict[str, Any]) -> Outcome[M]:
        sender = self._ids.get(member)
        if sender is None:
            raise SignalError("not-announced", "Announce yourself first (type 0).")
        claimed = signal.get("from")
        if claimed is not None and claimed != sender:
            raise SignalError(
                "not-your-peer-id",
                f"This connection is peer {sender!r}.",
                garbage=True,
            )

        kind = SignalType(signal["type"])
        payload_field = _PAYLOAD_FIELD.get(kind)
        if payload_field is not None and not isinstance(
            signal.get(payload_field), dict
        ):
            raise _bad(f"A {kind.name.lower()} carries an object {payload_field!r}.")

        forwarded = {**signal, "from": sender}
        message = signal_message(forwarded)
        target = signal.get("to")
        if target is None and kind == SignalType.HANGUP:
            return Outcome([Delivery(other, message) for other in self._others(member)])
        if not isinstance(target, str):
            raise _bad("to must name a peer.")
        receiver = self._members.get(target)
        if receiver is None:
            raise SignalError("unknown-peer", f"No peer {target[:128]!r} in this room.")
        return Outcome([Delivery(receiver, message)])

    def leave(self, member: M) -> list[Delivery[M]]:
        """
        Forget a closed connection's peer and tell the others it left.
        """
        peer_id = self._ids.pop(member, None)
        if peer_id is None:
            return []
        peer = self._peers.pop(peer_id)
        del self._members[peer_id]
        message = signal_message(
            {"type": SignalType.PEER_LEFT, "peer": peer.describe()}
        )
        return [Delivery(other, message) for other in self._members.values()]


def _same_secret(known: str | None, given: str | None) -> bool:
    if known is None or given is None:
        return False
    # JSON allows lone surrogates in strings, which strict UTF-8 cannot encode.
    return hmac.compare_digest(
        known.encode("utf-8", "surrogatepass"), given.encode("utf-8", "surrogatepass")
    )
