"""
Rooms: one Yjs document, its awareness states and its members.

A room applies what its members send, commits every document change to the
store, and only then forwards it.  Frames that depend on a change (forwarded
updates and the step 2 answers built from the in-memory document) wait in an
ordered outbox until the store has committed that change, so no client ever
receives an update that a crash could still take away.

A room is loaded when its first member joins and dropped from memory once its
last member has left and its writes are committed.  If a room cannot be
loaded, or a write fails, the room is closed (members get 1011 and retry)
and nothing is written over what is stored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from pycrdt import Doc, TransactionEvent
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.awareness import (
    AwarenessEntry,
    AwarenessStates,
    decode_awareness_update,
    encode_awareness_update,
)
from kraken.config import Limits
from kraken.errors import CloseCode
from kraken.signaling import Delivery, PeerDirectory
from kraken.store import DocumentStore, StoredDocument
from kraken.sync import (
    AwarenessMessage,
    Message,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    encode_sync_update,
)

#: Seconds after which an awareness state that was not renewed is removed.
AWARENESS_TIMEOUT = 30.0

#: Bytes of updates stored after a room's snapshot after which it is
#: compacted even with fewer than C{compact_after_rows} rows, so that a few
#: big pastes that were deleted again do not stay on disk.
COMPACT_AFTER_BYTES = 8 * 1024 * 1024

#: The state vector of a client that holds nothing yet.
_EMPTY_STATE_VECTOR = b"\x00"


class Member(Protocol):
    """
    A connection in a room, as the room sees it.
    """

    def __hash__(self) -> int:
        """
        Members are kept in sets and as dictionary keys.
        """

    def send(self, frame: bytes) -> None:
        """
        Send one binary frame.
        """

    def send_signal(self, message: dict[str, Any]) -> None:
        """
        Send one signaling message as a JSON text frame.
        """

    def close(self, code: CloseCode, reason: str) -> None:
        """
        Close the connection with a code from SPEC.md's list.
        """


class DocumentTooLarge(Exception):
    """
    An update would grow the document past C{max_document_bytes}.

    @ivar size: the size, in bytes, the document could have grown to.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes would exceed {limit}")
        self.size = size


class RoomUnavailable(Exception):
    """
    The room could not be loaded or has failed; try again later.
    """


class _State(Enum):
    LOADING = "loading"
    READY = "ready"
    CLOSED = "closed"


@dataclass(slots=True)
class _Membership:
    syncing: bool = False
    client_ids: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """
    A frame waiting for the commit of change C{seq}; sent to C{only} if set,
    else to every syncing member but C{exclude}.
    """

    seq: int
    frame: bytes
    only: Member | None = None
    exclude: Member | None = None


class Room:
    """
    One internal room, C{{app_id}}:{{name}}.

    @ivar doc: the document, touched only on the reactor thread.
    """

    log = Logger()

    def __init__(
        self,
        app_id: str,
        name: str,
        store: DocumentStore,
        limits: Limits,
        compact_after_rows: int,
        on_idle: Callable[[Room], None],
    ) -> None:
        self.app_id = app_id
        self.name = name
        self.doc: Doc[Any] = Doc()
        self.awareness = AwarenessStates(limits.max_awareness_bytes)
        self._store = store
        self._limits = limits
        self._compact_after_rows = compact_after_rows
        self._on_idle = on_idle
        self._state = _State.LOADING
        self._members: dict[Member, _Membership] = {}
        self._joining: list[tuple[Member, Deferred[Room]]] = []
        self._owners: dict[int, Member] = {}
        self.peers: PeerDirectory[Member] = PeerDirectory(limits.max_peers_per_room)
        self._applied = 0
        self._committed = 0
        self._outbox: deque[_Outgoing] = deque()
        self._size = 0
        self._unmeasured = 0
        self._stored_rows = 0
        self._bytes_since_snapshot = 0
        self._compacting = False
        self._changes: list[bytes] = []
        self._whole_document: bytes | None = None
        self.doc.observe(self._on_transaction)

    @property
    def key(self) -> str:
        """
        The internal key, C{{app_id}}:{{name}}.
        """
        return f"{self.app_id}:{self.name}"

    @property
    def size(self) -> int:
        """
        About how many bytes the document takes when stored.
        """
        return self._size

    def __len__(self) -> int:
        return len(self._members) + len(self._joining)

    def is_idle(self) -> bool:
        """
        Whether the room is loaded, has no members and nothing left to commit.
        """
        return (
            self._state is _State.READY
            and not self
            and self._committed == self._applied
        )

    @property
    def closed(self) -> bool:
        """
        Whether the room was closed (deleted app, store fault, load failure).
        """
        return self._state is _State.CLOSED

    # Loading and membership

    def load(self) -> None:
        """
        Read the document from the store; members join once it is in.
        """
        loaded = self._store.load(self.app_id, self.name)
        loaded.addCallbacks(self._loaded, self._load_failed)

    def _loaded(self, stored: StoredDocument) -> None:
        if self._state is not _State.LOADING:
            return
        try:
            if stored.update is not None:
                self.doc.apply_update(stored.update)
        except Exception as error:
            self._load_failed(Failure(error))
            return
        self._changes.clear()
        self._size = stored.size
        self._unmeasured = stored.size
        self._stored_rows = stored.rows
        # A room stored as one row is a snapshot; more rows are history.
        self._bytes_since_snapshot = stored.size if stored.rows > 1 else 0
        self._state = _State.READY

        joining, self._joining = self._joining, []
        for member, joined in joining:
            self._welcome(member)
            joined.callback(self)
        if self.is_idle():
            self._on_idle(self)

    def _load_failed(self, failure: Failure) -> None:
        self.log.error(
            "Room {app}:{room} could not be loaded: {reason}",
            app=self.app_id,
            room=self.name,
            reason=failure.getErrorMessage(),
        )
        self._state = _State.CLOSED
        joining, self._joining = self._joining, []
        for _, joined in joining:
            joined.errback(RoomUnavailable("the room could not be loaded"))
        self._on_idle(self)

    def join(self, member: Member) -> Deferred[Room]:
        """
        Add a member; fires once the room is loaded and the member welcomed.
        """
        if self._state is _State.READY:
            self._welcome(member)
            return succeed(self)
        joined: Deferred[Room] = Deferred()
        if self._state is _State.CLOSED:
            joined.errback(RoomUnavailable("the room is closed"))
        else:
            self._joining.append((member, joined))
        return joined

    def _welcome(self, member: Member) -> None:
        self._members[member] = _Membership()
        member.send(encode_sync_step1(self.doc.get_state()))
        if len(self.awareness):
            entries = self.awareness.all_entries()
            member.send(encode_awareness(encode_awareness_update(entries)))

    def leave(self, member: Member, now: float) -> None:
        """
        Remove a member and the awareness states it controlled.
        """
        self._joining = [(m, d) for m, d in self._joining if m is not member]
        membership = self._members.pop(member, None)

        if membership is not None:
            for client_id in membership.client_ids:
                self._owners.pop(client_id, None)
            removed = self.awareness.remove(membership.client_ids)
            self._broadcast_awareness(removed)
            _deliver(self.peers.leave(member))

        if self.is_idle():
            self._on_idle(self)

    # Messages

    def receive(self, member: Member, message: Message, now: float) -> None:
        """
        Handle one decoded message from a member.

        @raise ProtocolError: the message is invalid; the caller closes the
            member's connection with 1002.
        @raise DocumentTooLarge: the update would grow the document too much.
        """
        membership = self._members.get(member)
        if membership is None or self._state is not _State.READY:
            return

        if isinstance(message, SyncStep1):
            self._answer_step1(member, membership, message.state_vector)
        elif isinstance(message, (SyncStep2, SyncUpdate)):
            self._apply_updates(member, [message.update])
        elif isinstance(message, AwarenessMessage):
            self._apply_awareness(member, membership, message.payload, now)
        elif isinstance(message, QueryAwareness):
            entries = self.awareness.all_entries()
            member.send(encode_awareness(encode_awareness_update(entries)))

    def receive_signal(self, member: Member, signal: dict[str, Any]) -> None:
        """
        Handle one parsed signaling message from a member.

        @raise kraken.signaling.SignalError: the signal is refused; the caller
            tells the sender.
        """
        if member not in self._members or self._state is not _State.READY:
            return
        outcome = self.peers.handle(member, signal)
        _deliver(outcome.deliveries)
        if outcome.replaced is not None:
            self.log.info(
                "Peer {peer_id} of {app}:{room} taken over by a new connection",
                peer_id=signal.get("from"),
                app=self.app_id,
                room=self.name,
            )
            outcome.replaced.close(
                CloseCode.PEER_TAKEN_OVER, "the peer reconnected on another socket"
            )

    def _answer_step1(
        self, member: Member, membership: _Membership, state_vector: bytes
    ) -> None:
        frame = self._step2_for(state_vector)
        membership.syncing = True

        if self._committed == self._applied:
            member.send(frame)
        else:
            self._outbox.append(_Outgoing(self._applied, frame, only=member))

    def _step2_for(self, state_vector: bytes) -> bytes:
        """
        The step 2 answering C{state_vector}.  The answer to a client that
        has nothing (a fresh page) is the whole document; it is kept until
        the document changes, so that many clients opening a big document
        have it encoded once.
        """
        fresh = state_vector == _EMPTY_STATE_VECTOR
        if fresh and self._whole_document is not None:
            return self._whole_document
        try:
            update = self.doc.get_update(state_vector)
        except Exception:
            raise ProtocolError("invalid state vector") from None
        frame = encode_sync_step2(update)
        if fresh:
            self._whole_document = frame
        return frame

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._whole_document = None
        self._changes.append(event.update)

    def receive_updates(self, member: Member, updates: list[bytes]) -> None:
        """
        Apply document updates a member sent together (one read of its
        socket) in one transaction, so that they are stored as one row and
        forwarded as one message: under load a client's updates arrive
        several at a time.  If one is refused, the ones before it are kept
        and forwarded, as if each had come alone.

        @raise ProtocolError: an update is invalid.
        @raise DocumentTooLarge: an update would grow the document too much.
        """
        if member not in self._members or self._state is not _State.READY:
            return
        self._apply_updates(member, updates)

    def _apply_updates(self, member: Member, updates: list[bytes]) -> None:
        incoming = sum(map(len, updates))
        if len(updates) > 1 and self._size + incoming > self._limits.max_document_bytes:
            # Near the size limit each update is checked on its own.
            for update in updates:
                self._apply_updates(member, [update])
            return
        self._check_size(incoming)

        self._changes.clear()
        try:
            with self.doc.transaction():
                for update in updates:
                    self._apply(update)
        finally:
            changes, self._changes = self._changes, []
            if self._state is not _State.CLOSED:
                for change in changes:
                    self._record(change, exclude=member)

    def _apply(self, update: bytes) -> None:
        try:
            self.doc.apply_update(update)
        except Exception as error:
            raise ProtocolError(f"update rejected: {error}") from None
        except BaseException as error:
            # pycrdt turns a panic of the Rust library into an exception that
            # derives from BaseException; it must not take the server down.
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            self._check_document()
            raise ProtocolError(f"update rejected: {type(error).__name__}") from None

    def _check_size(self, incoming: int) -> None:
        """
        Refuse an update that could grow the document past
        C{max_document_bytes}.

        The size is an estimate that only grows: the document's encoded size
        when last measured, plus every change since.  Deleted text is
        dropped from the document but not from the estimate, so before
        refusing, the document is measured again, once at least a sixteenth
        of the limit has been added since the last measurement (measuring
        encodes the whole document).

        @raise DocumentTooLarge: the update is refused.
        """
        limit = self._limits.max_document_bytes
        if self._size + incoming > limit and self._unmeasured >= limit // 16:
            self._size = len(self.doc.get_update())
            self._unmeasured = 0
        if self._size + incoming > limit:
            raise DocumentTooLarge(self._size + incoming, limit)

    def _check_document(self) -> None:
        """
        After a panic in the CRDT library, make sure the document still
        works; if not, close the room so that it reloads from the store.
        """
        try:
            self.doc.get_state()
        except BaseException:
            self.fail("the document was damaged by a rejected update")

    def _record(self, change: bytes, exclude: Member | None) -> None:
        self._applied += 1
        self._size += len(change)
        self._unmeasured += len(change)
        self._bytes_since_snapshot += len(change)
        self._outbox.append(
            _Outgoing(self._applied, encode_sync_update(change), exclude=exclude)
        )
        self._store.append(self.app_id, self.name, change, self)

    def appends_committed(self, count: int) -> None:
        """
        Forward what the store has committed (the room is the
        L{kraken.store.AppendListener} of its appends, which are committed
        in order).
        """
        if self._state is _State.CLOSED:
            return
        self._stored_rows += count
        self._committed += count
        self._send_committed()
        self._maybe_compact()
        if self.is_idle():
            self._on_idle(self)

    def appends_failed(self, reason: str) -> None:
        self.fail(f"an update could not be stored: {reason}")

    def _send_committed(self) -> None:
        outbox = self._outbox
        while outbox and outbox[0].seq <= self._committed:
            outgoing = outbox.popleft()
            if outgoing.only is not None:
                if outgoing.only in self._members:
                    outgoing.only.send(outgoing.frame)
                continue
            for member, membership in list(self._members.items()):
                if membership.syncing and member is not outgoing.exclude:
                    member.send(outgoing.frame)

    def _maybe_compact(self) -> None:
        """
        Replace the room's stored log with one snapshot of the document once
        it has C{compact_after_rows} rows or L{COMPACT_AFTER_BYTES} bytes of
        updates after its last snapshot, and every change is committed.

        The snapshot is the in-memory document, whose deleted text pycrdt
        has already dropped, so the stored size follows the document's size
        and not the length of its history.
        """
        if (
            self._compacting
            or (
                self._stored_rows < self._compact_after_rows
                and self._bytes_since_snapshot < COMPACT_AFTER_BYTES
            )
            or self._committed != self._applied
        ):
            return
        snapshot = self.doc.get_update()
        self._compacting = True
        self._size = len(snapshot)
        self._unmeasured = 0
        rows_before = self._stored_rows
        self._bytes_since_snapshot = 0
        compacted = self._store.compact(self.app_id, self.name, snapshot)
        compacted.addCallbacks(
            self._compacted, self._compaction_failed, callbackArgs=(rows_before,)
        )

    def _compacted(self, _: None, rows_before: int) -> None:
        self._compacting = False
        self._stored_rows = max(1, self._stored_rows - rows_before + 1)
        self.log.debug(
            "Room {app}:{room} compacted to {size} bytes",
            app=self.app_id,
            room=self.name,
            size=self._size,
        )

    def _compaction_failed(self, failure: Failure) -> None:
        self._compacting = False
        self.log.error(
            "Room {app}:{room} could not be compacted: {reason}",
            app=self.app_id,
            room=self.name,
            reason=failure.getErrorMessage(),
        )

    def _apply_awareness(
        self, member: Member, membership: _Membership, payload: bytes, now: float
    ) -> None:
        entries = decode_awareness_update(payload)
        accepted = self.awareness.apply(entries, now)
        for entry in entries:
            if entry in accepted or self.awareness.holds(entry):
                self._claim(member, membership, entry)
        self._broadcast_awareness(accepted)

    def _claim(
        self, member: Member, membership: _Membership, entry: AwarenessEntry
    ) -> None:
        """
        Record which member controls a client id, so that its state is
        removed when that member leaves; a client that reconnected on a new
        socket moves to it.
        """
        previous = self._owners.pop(entry.client_id, None)
        if previous is not None and previous in self._members:
            self._members[previous].client_ids.discard(entry.client_id)
        if entry.removed:
            return
        self._owners[entry.client_id] = member
        membership.client_ids.add(entry.client_id)

    def _broadcast_awareness(self, entries: list[AwarenessEntry]) -> None:
        if not entries:
            return
        frame = encode_awareness(encode_awareness_update(entries))
        for member, membership in list(self._members.items()):
            if membership.syncing:
                member.send(frame)

    def expire_awareness(self, now: float) -> None:
        """
        Remove the states that were not renewed in time, and say so.
        """
        outdated = self.awareness.outdated(now, AWARENESS_TIMEOUT)
        if not outdated:
            return
        for client_id in outdated:
            owner = self._owners.pop(client_id, None)
            if owner is not None and owner in self._members:
                self._members[owner].client_ids.discard(client_id)
        self._broadcast_awareness(self.awareness.remove(outdated))

    # Ending

    def close(self, code: CloseCode, reason: str) -> None:
        """
        Close every member's connection and stop using the room.
        """
        self._state = _State.CLOSED
        self._outbox.clear()
        members = list(self._members)
        self._members.clear()
        joining, self._joining = self._joining, []
        for _, joined in joining:
            joined.errback(RoomUnavailable(reason))
        for member in members:
            member.close(code, reason)
        self._on_idle(self)

    def fail(self, reason: str) -> None:
        """
        Close the room after a store or document fault; members get 1011 and
        reconnect to a freshly loaded room.
        """
        if self._state is _State.CLOSED:
            return
        self.log.error(
            "Room {app}:{room} closed: {reason}",
            app=self.app_id,
            room=self.name,
            reason=reason,
        )
        self.close(CloseCode.SERVER_ERROR, "try again later")


def _deliver(deliveries: list[Delivery[Member]]) -> None:
    for delivery in deliveries:
        delivery.member.send_signal(delivery.message)


class RoomRegistry:
    """
    The rooms held in memory, by internal key.
    """

    log = Logger()

    def __init__(
        self, store: DocumentStore, limits: Limits, compact_after_rows: int
    ) -> None:
        self._store = store
        self._limits = limits
        self._compact_after_rows = compact_after_rows
        self._rooms: dict[str, Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, key: str) -> Room | None:
        """
        The room held under C{key}, if it is in memory.
        """
        return self._rooms.get(key)

    def join(self, app_id: str, name: str, member: Member) -> Deferred[Room]:
        """
        Add a member to a room, loading the room first if needed.
        """
        key = f"{app_id}:{name}"
        room = self._rooms.get(key)
        if room is None:
            room = Room(
                app_id,
                name,
                self._store,
                self._limits,
                self._compact_after_rows,
                self._room_idle,
            )
            self._rooms[key] = room
            room.load()
        return room.join(member)

    def _room_idle(self, room: Room) -> None:
        if self._rooms.get(room.key) is room and (room.closed or room.is_idle()):
            del self._rooms[room.key]

    def rooms(self) -> list[Room]:
        """
        Every room in memory.
        """
        return list(self._rooms.values())

    def close_app(self, app_id: str, code: CloseCode, reason: str) -> None:
        """
        Close every room of an app (it was deleted).
        """
        for room in self.rooms():
            if room.app_id == app_id:
                room.close(code, reason)

    def expire_awareness(self, now: float) -> None:
        """
        Drop outdated awareness states in every room.
        """
        for room in self.rooms():
            room.expire_awareness(now)
