"""
The thin Autobahn adapter: frames in, frames out, closes with the right code.

The handshake has already been checked in the resource tree (see
L{kraken.site}) by the time a L{RoomProtocol} exists; it knows its
L{Admission} from the start.  Everything the protocol does with a frame is
decode it (L{kraken.sync}) and hand it to its room (L{kraken.rooms}); every
error a client can cause ends in one warning log line and a close of that one
connection.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.apps import Admission
from kraken.awareness import AwarenessTooLarge
from kraken.config import Limits
from kraken.errors import CloseCode
from kraken.rooms import DocumentTooLarge, Room, RoomRegistry
from kraken.signaling import SignalError, error_message, parse_signal
from kraken.sync import (
    ProtocolError,
    SyncStep2,
    SyncUpdate,
    UnsupportedMessage,
    decode_message,
    encode_permission_denied,
)
from kraken.wire import binary_frame, buffered_bytes, held_writes, read_binary_frame

#: Bad messages (oversized awareness states and the like) a connection may
#: send before it is closed with 1008.
GARBAGE_BUDGET = 20

#: Messages up to this size are kept, framed, for the next member of a
#: broadcast; larger ones (a step 2 of a big document) are not held on to.
_FRAMED_CACHE_BYTES = 64 * 1024

#: The code RFC 6455 (section 7.1.5) reports for a close frame without a
#: status code, which the stock client sends when it is destroyed.
_NO_STATUS_RECEIVED = 1005

#: Autobahn's state of an open connection.
_OPEN = WebSocketProtocol.STATE_OPEN

#: The traffic counter all connections share (see L{RoomProtocol}).
_UNREAD_TRAFFIC_STATS = TrafficStats()

#: The signaling errors that are limits, by the option that sets them.
_SIGNAL_LIMITS = {
    "too-large": "max-signal-bytes",
    "rate-limited": "max-signals-per-second",
    "room-full": "max-peers-per-room",
}

#: Codes after which the stock client stops reconnecting; it is also sent
#: the y-protocols "permission denied" message with the reason.
_DENIALS = {CloseCode.TOKEN_REPLACED, CloseCode.FORBIDDEN}


class Connections:
    """
    Every open room connection, by app and by room, for the caps and for
    closing the ones an admin change affects.
    """

    def __init__(self) -> None:
        self._by_app: dict[str, set[RoomProtocol]] = defaultdict(set)
        self._per_room: dict[str, int] = defaultdict(int)

    def add(self, connection: RoomProtocol) -> None:
        admission = connection.admission
        self._by_app[admission.app_id].add(connection)
        self._per_room[admission.key] += 1

    def discard(self, connection: RoomProtocol) -> None:
        admission = connection.admission
        app_connections = self._by_app.get(admission.app_id)
        if app_connections is None or connection not in app_connections:
            return
        app_connections.remove(connection)
        if not app_connections:
            del self._by_app[admission.app_id]
        self._per_room[admission.key] -= 1
        if not self._per_room[admission.key]:
            del self._per_room[admission.key]

    def count_app(self, app_id: str) -> int:
        """
        Connections of an app, handshakes in progress included.
        """
        return len(self._by_app.get(app_id, ()))

    def count_room(self, key: str) -> int:
        """
        Connections of one internal room, handshakes in progress included.
        """
        return self._per_room.get(key, 0)

    def all(self) -> list[RoomProtocol]:
        """
        Every connection.
        """
        return [c for connections in self._by_app.values() for c in connections]

    def close_app_token_users(self, app_id: str) -> None:
        """
        Close, with 4401, the connections an app's replaced token admitted.
        """
        for connection in list(self._by_app.get(app_id, ())):
            if connection.admission.by_app_token:
                connection.close(CloseCode.TOKEN_REPLACED, "the app token was replaced")

    def close_origins(self, app_id: str, origins: set[str]) -> None:
        """
        Close, with 4403, the connections admitted from origins an app no
        longer allows.
        """
        for connection in list(self._by_app.get(app_id, ())):
            if connection.admission.origin in origins:
                connection.close(CloseCode.FORBIDDEN, "the origin is no longer allowed")

    def close_app(self, app_id: str) -> None:
        """
        Close, with 4403, every connection of a deleted app.
        """
        for connection in list(self._by_app.get(app_id, ())):
            connection.close(CloseCode.FORBIDDEN, "the app was deleted")

    def close_all(self, code: CloseCode, reason: str) -> None:
        """
        Close every connection (at shutdown).
        """
        for connection in self.all():
            connection.close(code, reason)


class RoomProtocol(WebSocketServerProtocol):
    """
    One client connection to one room.

    @ivar admission: who the connection is, set before the handshake.
    """

    # Autobahn's own logger is self.log; Kraken's events go through _log.
    _log = Logger()
    factory: RoomFactory
    admission: Admission

    def __init__(self) -> None:
        super().__init__()
        self._room: Room | None = None
        # Messages waiting for the room to load or the rate limit; None
        # while there are none (an empty deque takes 0.6 KB per connection).
        self._inbox: deque[tuple[bytes, bool]] | None = None
        self._drain_call: IDelayedCall | None = None
        self._flooding = False
        self._opened_at = 0.0
        self._closing = False
        self._garbage = 0
        self._allowance = 0.0
        self._allowance_at = 0.0
        self._reads_paused = False
        self._signal_allowance = 0.0
        self._signal_allowance_at = 0.0
        self._rate_limited_logged = False
        # Document updates read from the socket in the current read, applied
        # together at its end; None outside a read.
        self._gathered: list[bytes] | None = None

    @property
    def _limits(self) -> Limits:
        return self.factory.limits

    def _now(self) -> float:
        return self.factory.clock.seconds()

    def _connectionMade(self) -> None:
        super()._connectionMade()
        # Autobahn counts each connection's traffic in an object of its own,
        # which Kraken never reads; one shared counter saves it per connection.
        self.trafficStats = _UNREAD_TRAFFIC_STATS

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """
        Accept the handshake (Kraken checked it already) and the first
        subprotocol the client offers, as the stock server does.
        """
        return request.protocols[0] if request.protocols else None

    def onOpen(self) -> None:
        self._opened_at = self._now()
        self._allowance = float(self._limits.max_messages_per_second)
        self._allowance_at = self._opened_at
        self._signal_allowance = float(self._limits.max_signals_per_second)
        self._signal_allowance_at = self._opened_at

        self._pause_reads()
        joined = self.factory.rooms.join(
            self.admission.app_id, self.admission.room, self
        )
        joined.addCallbacks(self._joined, self._join_failed)

    def _joined(self, room: Room) -> None:
        if self._closing:
            room.leave(self, self._now())
            return
        self._room = room
        self._drain()

    def _join_failed(self, failure: Failure) -> None:
        self.close(CloseCode.SERVER_ERROR, "the room could not be loaded")

    def _dataReceived(self, data: bytes) -> None:
        """
        Take the common frames (see L{read_binary_frame}) straight to
        L{onMessage}, and give Autobahn the rest, from the first frame that
        is not one of them: control frames, text, fragments, a partial frame
        or anything to check.

        The document updates among the frames of one read are gathered and
        applied together (see L{Room.receive_updates}) before anything after
        them is handled.
        """
        if (
            self.state != _OPEN
            or self.data
            or self.current_frame is not None
            or self.inside_message
            or self.failedByMe
            or self._perMessageCompress is not None
        ):
            super()._dataReceived(data)
            return

        position = 0
        limit = self._limits.max_message_bytes
        self._gathered = []
        try:
            while self.state == _OPEN:
                frame = read_binary_frame(data, position, limit)
                if frame is None:
                    break
                payload, position = frame
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()
                self.onMessage(payload, True)
        finally:
            self._apply_gathered_safely()

        if position < len(data):
            super()._dataReceived(data[position:] if position else data)

    def onMessageFrameBegin(self, length: int) -> None:
        """
        Refuse an oversized message as soon as its size is known, before its
        bytes are buffered.
        """
        super().onMessageFrameBegin(length)
        limit = self._limits.max_message_bytes
        if self.message_data_total_length > limit and not self.failedByMe:
            self._warn_limit("max-message-bytes", self.message_data_total_length)
            # Marking the connection as failed makes Autobahn discard the rest
            # of the message instead of buffering it.
            self.wasMaxMessagePayloadSizeExceeded = True
            self.failedByMe = True
            self.close(CloseCode.MESSAGE_TOO_BIG, f"message over {limit} bytes")

    def onMessageEnd(self) -> None:
        """
        Hand a complete message to L{onMessage}.  Autobahn's own version also
        fires a C{message} event for listeners, which costs a Deferred per
        message; Kraken registers none.
        """
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._inbox is None:
            if self._room is not None and not self._closing and self._take_allowance():
                self._receive(payload, isBinary)
                return
            self._inbox = deque()
        self._inbox.append((payload, isBinary))
        if len(self._inbox) == 1:
            self._drain()

    def _drain(self) -> None:
        """
        Handle the queued messages, as far as the room is loaded and the
        client's message rate allows; the rest wait, with reads paused.
        """
        self._drain_call = None
        inbox = self._inbox
        while inbox and self._room is not None and not self._closing:
            if not self._take_allowance():
                self._hold()
                return
            payload, is_binary = inbox.popleft()
            self._receive(payload, is_binary)

        if self._closing:
            self._inbox = None
        elif not inbox and self._room is not None:
            self._inbox = None
            self._flooding = False
            self._resume_reads()

    def _take_allowance(self) -> bool:
        """
        Spend one message of the allowance of C{max_messages_per_second},
        which refills continuously.
        """
        rate = self._limits.max_messages_per_second
        now = self._now()
        elapsed = now - self._allowance_at
        self._allowance = min(float(rate), self._allowance + elapsed * rate)
        self._allowance_at = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True

    def _hold(self) -> None:
        """
        Stop reading from a client that sends too fast, and come back to its
        messages once the allowance has refilled; it is slowed, not closed.
        """
        rate = self._limits.max_messages_per_second
        if not self._flooding:
            self._flooding = True
            self._warn_limit("max-messages-per-second", rate)
        self._pause_reads()
        if self._drain_call is None:
            delay = (1.0 - self._allowance) / rate
            self._drain_call = self.factory.clock.callLater(delay, self._drain)

    def _receive(self, payload: bytes, is_binary: bool) -> None:
        try:
            if is_binary:
                self._receive_sync(payload)
            else:
                self._apply_gathered()
                self._receive_text(payload)
        except Exception:
            self._unexpected_error()

    def _unexpected_error(self) -> None:
        """
        Log a bug met while handling a message, and close only this
        connection (1011).
        """
        self._log.failure(
            "Unexpected error handling a message: app {app}, room {room}",
            app=self.admission.app_id,
            room=self.admission.room,
        )
        self.close(CloseCode.SERVER_ERROR, "internal error")

    def _receive_sync(self, payload: bytes) -> None:
        assert self._room is not None
        try:
            message = decode_message(payload)
            if self._gathered is not None and isinstance(
                message, (SyncUpdate, SyncStep2)
            ):
                self._gathered.append(message.update)
                return
            self._apply_gathered()
            self._room.receive(self, message, self._now())
        except AwarenessTooLarge:
            self._warn_limit("max-awareness-bytes", len(payload))
            self._count_garbage()
        except (ProtocolError, DocumentTooLarge) as error:
            # Updates gathered before a bad message are applied first, as if
            # each had come alone; if one of them is refused, that refusal
            # is the one the client gets.
            self._refuse_sync(self._apply_gathered_before_refusal() or error)

    def _apply_gathered_before_refusal(self) -> ProtocolError | DocumentTooLarge | None:
        """
        Apply the updates gathered before a refused message; the refusal of
        one of them, if any, which comes first.
        """
        try:
            self._apply_gathered()
        except (ProtocolError, DocumentTooLarge) as error:
            return error
        return None

    def _apply_gathered(self) -> None:
        """
        Apply the document updates gathered so far in this read, before a
        message that must come after them.
        """
        gathered = self._gathered
        if not gathered:
            return
        self._gathered = []
        if self._room is not None and not self._closing:
            self._room.receive_updates(self, gathered)

    def _apply_gathered_safely(self) -> None:
        """
        Apply what the read gathered, at its end, and stop gathering.
        """
        try:
            refused = self._apply_gathered_before_refusal()
            if refused is not None:
                self._refuse_sync(refused)
        except Exception:
            self._unexpected_error()
        finally:
            self._gathered = None

    def _refuse_sync(self, error: ProtocolError | DocumentTooLarge) -> None:
        """
        Close the connection for a refused sync message, with its code and
        one warning line.
        """
        if isinstance(error, UnsupportedMessage):
            self._refuse(CloseCode.PROTOCOL_ERROR, "unsupported-message", str(error))
        elif isinstance(error, ProtocolError):
            self._refuse(CloseCode.PROTOCOL_ERROR, "malformed-message", str(error))
        else:
            # The size logged is what the document would have grown to.
            self._warn_limit("max-document-bytes", error.size)
            self.close(CloseCode.DOCUMENT_TOO_LARGE, "document too large")

    def _receive_text(self, payload: bytes) -> None:
        """
        Text frames carry signaling; a refused signal is answered with an
        error message and the connection stays open.
        """
        assert self._room is not None
        try:
            if len(payload) > self._limits.max_signal_bytes:
                raise SignalError(
                    "too-large",
                    f"Signals are at most {self._limits.max_signal_bytes} bytes.",
                    garbage=True,
                )
            self._spend_signal_allowance()
            self._room.receive_signal(self, parse_signal(payload))
        except SignalError as error:
            self._signal_refused(error, len(payload))

    def _spend_signal_allowance(self) -> None:
        rate = self._limits.max_signals_per_second
        now = self._now()
        elapsed = now - self._signal_allowance_at
        self._signal_allowance = min(
            float(rate), self._signal_allowance + elapsed * rate
        )
        self._signal_allowance_at = now
        if self._signal_allowance < 1.0:
            raise SignalError(
                "rate-limited", f"At most {rate} signals per second; slow down."
            )
        self._signal_allowance -= 1.0
        self._rate_limited_logged = False

    def _signal_refused(self, error: SignalError, size: int) -> None:
        limit = _SIGNAL_LIMITS.get(error.code)
        if limit is not None:
            if error.code != "rate-limited" or not self._rate_limited_logged:
                self._warn_limit(limit, size)
        else:
            self._log.warn(
                "Signal refused ({code}): app {app}, room {room}, peer {peer}",
                code=error.code,
                app=self.admission.app_id,
                room=self.admission.room,
                peer=self.peer,
            )
        self._rate_limited_logged = error.code == "rate-limited"
        self.send_signal(error_message(error.code, error.message))
        if error.garbage:
            self._count_garbage()

    def _count_garbage(self) -> None:
        self._garbage += 1
        if self._garbage > GARBAGE_BUDGET:
            self._refuse(
                CloseCode.POLICY_VIOLATION,
                "garbage-budget",
                f"more than {GARBAGE_BUDGET} invalid messages",
            )

    def _refuse(self, code: CloseCode, kind: str, detail: str) -> None:
        self._log.warn(
            "Closing connection ({kind}): app {app}, room {room}, peer {peer}, "
            "code {code}: {detail}",
            kind=kind,
            app=self.admission.app_id,
            room=self.admission.room,
            peer=self.peer,
            code=int(code),
            detail=detail,
        )
        self.close(code, kind)

    def _warn_limit(self, limit: str, size: int) -> None:
        self._log.warn(
            "Limit {limit} hit: app {app}, room {room}, peer {peer}, size {size}",
            limit=limit,
            app=self.admission.app_id,
            room=self.admission.room,
            peer=self.peer,
            size=size,
        )

    def _pause_reads(self) -> None:
        if not self._reads_paused and self.transport is not None:
            self._reads_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def _resume_reads(self) -> None:
        if self._reads_paused and self.transport is not None:
            self._reads_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def onAutoPingTimeout(self) -> None:
        """
        The client did not answer a ping in time: its connection is dropped
        (and so its awareness removed and its peer reported left).
        """
        self._warn_limit("ping-timeout", int(self._limits.ping_timeout))
        super().onAutoPingTimeout()

    # Member, as rooms see it

    def send(self, frame: bytes) -> None:
        """
        Send one binary frame; close the connection if the client has fallen
        more than C{max_queued_bytes} behind.
        """
        if self.state != WebSocketProtocol.STATE_OPEN or self._closing:
            return
        framed = self.factory.framed(frame)
        if self.send_queue:
            # Autobahn is still writing a chopped or synchronous send.
            held_writes.release(self.transport)
            self.sendData(framed)
        else:
            held_writes.write(self.transport, framed)
        self._check_queue()

    def _check_queue(self) -> None:
        queued = buffered_bytes(self.transport)
        if queued > self._limits.max_queued_bytes:
            self._warn_limit("max-queued-bytes", queued)
            self.close(CloseCode.TRY_AGAIN_LATER, "too far behind; resync")

    def send_signal(self, message: dict[str, Any]) -> None:
        """
        Send one signaling message as a JSON text frame.
        """
        if self.state != WebSocketProtocol.STATE_OPEN or self._closing:
            return
        held_writes.release(self.transport)
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)
        self._check_queue()

    def close(self, code: CloseCode, reason: str) -> None:
        """
        Close with any code of SPEC.md's list (Autobahn's C{sendClose} refuses
        the 10xx ones, so the close frame is sent directly).
        """
        if self._closing or self.state != WebSocketProtocol.STATE_OPEN:
            return
        self._closing = True
        self._leave_room()
        held_writes.release(self.transport)
        if code in _DENIALS:
            self.sendMessage(encode_permission_denied(reason), isBinary=True)
        reason_bytes = reason.encode("utf-8")[:123]
        self.sendCloseFrame(code=int(code), reasonUtf8=reason_bytes, isReply=False)

    def _leave_room(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.leave(self, self._now())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self._opened_at:
            return
        self._closing = True
        self._leave_room()
        held_writes.release(self.transport)
        if self.closedByMe and self.localCloseCode is not None:
            code = self.localCloseCode
        if code is None:
            code = _NO_STATUS_RECEIVED
        self._log.info(
            "Connection closed: app {app}, room {room}, peer {peer}, code {code}, "
            "{duration:.1f} s",
            app=self.admission.app_id,
            room=self.admission.room,
            peer=self.peer,
            code=code,
            duration=self._now() - self._opened_at,
        )

    def _connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """
        Tear the connection down as Autobahn's server protocol does, without
        its debug line, whose arguments Autobahn formats eagerly: the text
        of C{reason}, a traceback, on every closed connection.
        """
        WebSocketProtocol._connectionLost(self, reason)  # type: ignore[arg-type]
        self.factory.countConnections -= 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.connections.discard(self)


class RoomFactory(WebSocketServerFactory):
    """
    Builds L{RoomProtocol}s and holds what they share.
    """

    protocol = RoomProtocol  # type: ignore[assignment]

    def __init__(
        self,
        rooms: RoomRegistry,
        connections: Connections,
        limits: Limits,
        clock: IReactorTime,
        reactor: Any = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self.rooms = rooms
        self.connections = connections
        self.limits = limits
        self.clock = clock
        self._framed_message: bytes | None = None
        self._framed: bytes | None = None
        self.setProtocolOptions(
            webStatus=False,
            allowedOrigins=["*"],
            allowNullOrigin=True,
            failByDrop=False,
            maxMessagePayloadSize=0,
            maxFramePayloadSize=0,
            autoPingInterval=limits.ping_interval,
            # Autobahn's batched timers fire up to a second early.
            autoPingTimeout=limits.ping_timeout + 1,
            # The handshake is answered as soon as it arrives (the request
            # was read by twisted.web, whose idle timeout covers a slow
            # one), so its timer would only cost each connection a timer.
            openHandshakeTimeout=0,
            closeHandshakeTimeout=2,
        )
        # Autobahn copies every option from the factory into each new
        # connection's __dict__ unless the protocol class already has it;
        # a class per factory that carries them saves that per connection.
        options: dict[str, Any] = {
            name: _as_class_attribute(getattr(self, name))
            for name in RoomProtocol.CONFIG_ATTRS
        }
        # With nothing left to copy, Autobahn also skips building (and
        # pretty-printing, for a debug line) the list of copied options.
        options["CONFIG_ATTRS"] = ()
        protocol: Any = type("RoomProtocol", (RoomProtocol,), options)
        self.protocol = protocol

    def framed(self, message: bytes) -> bytes:
        """
        The binary frame around C{message}, built once for all the members a
        room broadcasts the same message to (rooms send the same object to
        each of them in turn).
        """
        if message is self._framed_message and self._framed is not None:
            return self._framed
        framed = binary_frame(message)
        if len(message) <= _FRAMED_CACHE_BYTES:
            self._framed_message = message
            self._framed = framed
        return framed

    def admit(self, admission: Admission, address: IAddress) -> RoomProtocol:
        """
        Build the protocol for an admitted handshake and count it.
        """
        protocol = self.buildProtocol(address)
        assert isinstance(protocol, RoomProtocol)
        protocol.admission = admission
        self.connections.add(protocol)
        return protocol


def _as_class_attribute(value: Any) -> Any:
    """
    A value that reads the same from an instance as from a class: functions
    (such as Autobahn's compression callbacks) must not become methods.
    """
    return staticmethod(value) if callable(value) else value


class AdmittedFactory:
    """
    What L{autobahn.twisted.resource.WebSocketResource} needs of a factory
    for one request: a C{buildProtocol} that yields the admitted protocol.
    """

    def __init__(self, factory: RoomFactory, admission: Admission) -> None:
        self._factory = factory
        self._admission = admission
        self.built: RoomProtocol | None = None

    def buildProtocol(self, address: IAddress) -> RoomProtocol:
        self.built = self._factory.admit(self._admission, address)
        return self.built
