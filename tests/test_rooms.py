"""
Rooms: the welcome, commit-before-forward, awareness relay, failures, and
when a room leaves memory; driven with a store whose Deferreds the tests fire.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

import kraken.rooms
from kraken.awareness import (
    AwarenessEntry,
    decode_awareness_update,
    encode_awareness_update,
)
from kraken.config import Limits
from kraken.errors import CloseCode
from kraken.rooms import DocumentTooLarge, Room, RoomRegistry, RoomUnavailable
from kraken.store import AppendListener, StoredDocument, StoreError
from kraken.sync import (
    AwarenessMessage,
    Message,
    ProtocolError,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode_message,
)

APP = "notes"
ROOM = "readme"
KEY = f"{APP}:{ROOM}"
EMPTY = StoredDocument(None, 0, 0)


@dataclass
class Append:
    """
    One append the room asked for, and a Deferred the test fires to tell the
    room's listener that it committed (or errs, that it failed).
    """

    app_id: str
    room: str
    update: bytes
    committed: Deferred[None]


@dataclass
class FakeDocumentStore:
    """
    A DocumentStore whose every answer is a Deferred the test fires by hand.
    """

    loads: list[Deferred[StoredDocument]] = field(default_factory=list)
    appends: list[Append] = field(default_factory=list)
    compactions: list[tuple[bytes, Deferred[None]]] = field(default_factory=list)

    def load(self, app_id: str, room: str) -> Deferred[StoredDocument]:
        loaded: Deferred[StoredDocument] = Deferred()
        self.loads.append(loaded)
        return loaded

    def append(
        self, app_id: str, room: str, update: bytes, listener: AppendListener
    ) -> None:
        committed: Deferred[None] = Deferred()
        committed.addCallbacks(
            lambda _: listener.appends_committed(1),
            lambda failure: listener.appends_failed(failure.getErrorMessage()),
        )
        self.appends.append(Append(app_id, room, update, committed))

    def compact(self, app_id: str, room: str, snapshot: bytes) -> Deferred[None]:
        compacted: Deferred[None] = Deferred()
        self.compactions.append((snapshot, compacted))
        return compacted

    def check(self) -> Deferred[None]:
        return succeed(None)

    def commit_all(self) -> None:
        """
        Fire every append not yet fired, oldest first.
        """
        for append in self.appends:
            if not append.committed.called:
                append.committed.callback(None)


class FakeMember:
    """
    A connection as a room sees it, recording the frames and closes it gets.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames: list[bytes] = []
        self.closes: list[tuple[CloseCode, str]] = []

    def __repr__(self) -> str:
        return f"<FakeMember {self.name}>"

    @property
    def peer(self) -> str:
        return f"test:{self.name}"

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: CloseCode, reason: str) -> None:
        self.closes.append((code, reason))

    def messages(self) -> list[Message]:
        """
        Every frame received, decoded.
        """
        return [decode_message(frame) for frame in self.frames]

    def take(self) -> list[Message]:
        """
        The frames received since the last call, decoded.
        """
        messages = self.messages()
        self.frames.clear()
        return messages

    def text(self) -> str:
        """
        The text of a document built from every update and step 2 received.
        """
        doc: Doc[Text] = Doc()
        for message in self.messages():
            if isinstance(message, SyncStep2 | SyncUpdate):
                doc.apply_update(message.update)
        return str(doc.get("text", type=Text))


class Editor:
    """
    A client-side document that produces updates to send.
    """

    def __init__(self) -> None:
        self.doc: Doc[Text] = Doc()
        self.text = self.doc.get("text", type=Text)

    def insert(self, content: str) -> bytes:
        """
        Append C{content} to the text and return the update that does it.
        """
        before = self.doc.get_state()
        self.text.insert(len(self.text), content)
        return self.doc.get_update(before)


def room_text(room: Room) -> str:
    """
    The text of a room's in-memory document.
    """
    return str(room.doc.get("text", type=Text))


def awareness(*entries: tuple[int, int, str]) -> AwarenessMessage:
    """
    An awareness message holding C{(client_id, clock, state)} entries.
    """
    return AwarenessMessage(
        encode_awareness_update([AwarenessEntry(*entry) for entry in entries])
    )


def awareness_entries(messages: list[Message]) -> list[AwarenessEntry]:
    """
    Every awareness entry in C{messages}, in order.
    """
    return [
        entry
        for message in messages
        if isinstance(message, AwarenessMessage)
        for entry in decode_awareness_update(message.payload)
    ]


def joined(deferred: Deferred[Room]) -> Room:
    """
    The room a join Deferred has already fired with.
    """
    results: list[Room | Failure] = []
    deferred.addBoth(results.append)
    assert results, "the join has not fired"
    result = results[0]
    assert isinstance(result, Room), result
    return result


class World:
    """
    A registry on a fake store, with helpers to join members and send.
    """

    def __init__(self, limits: Limits | None = None, compact_after_rows: int = 500):
        self.store = FakeDocumentStore()
        self.registry = RoomRegistry(self.store, limits or Limits(), compact_after_rows)
        self.now = 0.0

    def join(self, name: str, stored: StoredDocument = EMPTY) -> FakeMember:
        """
        A member joined to the room, the room loaded from C{stored} if new.
        """
        member = FakeMember(name)
        pending = self.registry.join(APP, ROOM, member)
        if not pending.called:
            self.store.loads[-1].callback(stored)
        joined(pending)
        return member

    @property
    def room(self) -> Room:
        room = self.registry.get(KEY)
        assert room is not None, "the room is not in memory"
        return room

    def receive(self, member: FakeMember, message: Message) -> None:
        self.room.receive(member, message, self.now)

    def syncing(self, name: str) -> FakeMember:
        """
        A member that joined and sent its step 1, with its frames cleared.
        """
        member = self.join(name)
        self.receive(member, SyncStep1(b"\x00"))
        member.frames.clear()
        return member


# The welcome


def test_joiner_of_an_empty_room_gets_step1() -> None:
    """
    A member joining a room with no awareness states gets only the server's
    step 1, for an empty document.
    """
    world = World()

    member = world.join("a")

    assert member.frames == [b"\x00\x00\x01\x00"]


def test_joiner_gets_step1_then_the_awareness_states() -> None:
    """
    A joiner gets the server's step 1 and then one awareness message with
    every present state.
    """
    world = World()
    first = world.syncing("a")
    world.receive(first, awareness((7, 1, '{"name":"Ann"}'), (8, 2, "{}")))

    second = world.join("b")

    messages = second.messages()
    assert isinstance(messages[0], SyncStep1)
    assert awareness_entries(messages[1:]) == [
        AwarenessEntry(7, 1, '{"name":"Ann"}'),
        AwarenessEntry(8, 2, "{}"),
    ]
    assert len(messages) == 2


def test_joiner_step1_carries_the_loaded_document_state() -> None:
    """
    The step 1 of a room loaded from the store carries that document's
    state vector.
    """
    editor = Editor()
    update = editor.insert("stored")
    world = World()

    member = world.join("a", StoredDocument(update, 1, len(update)))

    assert member.messages() == [SyncStep1(editor.doc.get_state())]
    assert room_text(world.room) == "stored"


def test_members_joining_while_loading_are_welcomed_once_loaded() -> None:
    """
    Members that join while the room loads wait, and are welcomed in order
    once the document is in.
    """
    world = World()
    first, second = FakeMember("a"), FakeMember("b")
    first_joined = world.registry.join(APP, ROOM, first)
    second_joined = world.registry.join(APP, ROOM, second)
    assert len(world.store.loads) == 1
    assert not first_joined.called and first.frames == []

    world.store.loads[0].callback(EMPTY)

    assert joined(first_joined) is joined(second_joined)
    assert first.frames == second.frames == [b"\x00\x00\x01\x00"]


def test_step1_is_answered_with_step2() -> None:
    """
    A step 1 with no pending commit is answered at once with the update the
    member lacks.
    """
    world = World()
    world.join("a", StoredDocument(Editor().insert("hello"), 1, 20))
    member = world.join("b")
    member.frames.clear()

    world.receive(member, SyncStep1(b"\x00"))

    assert [type(m) for m in member.messages()] == [SyncStep2]
    assert member.text() == "hello"


def test_fresh_joiners_share_one_encoding_of_the_whole_document() -> None:
    """
    Clients that hold nothing get the whole document, encoded once while it
    does not change.
    """
    world = World()
    world.join("a", StoredDocument(Editor().insert("hello"), 1, 20))
    first, second = world.join("b"), world.join("c")
    first.frames.clear()
    second.frames.clear()

    world.receive(first, SyncStep1(b"\x00"))
    world.receive(second, SyncStep1(b"\x00"))

    assert first.frames[0] is second.frames[0]
    assert second.text() == "hello"


def test_fresh_joiner_after_a_change_gets_the_changed_document() -> None:
    """
    The kept encoding of the whole document is dropped when the document
    changes: the next client that holds nothing gets the change too.
    """
    world = World()
    editor = Editor()
    writer = world.join("a", StoredDocument(editor.insert("hello"), 1, 20))
    early = world.join("b")
    world.receive(early, SyncStep1(b"\x00"))
    world.receive(writer, SyncUpdate(editor.insert(" world")))
    world.store.commit_all()

    late = world.join("c")
    late.frames.clear()
    world.receive(late, SyncStep1(b"\x00"))

    assert late.text() == "hello world"


def test_invalid_state_vector_raises_protocol_error() -> None:
    """
    A step 1 whose state vector cannot be decoded is bad input.
    """
    world = World()
    member = world.join("a")

    with pytest.raises(ProtocolError):
        world.receive(member, SyncStep1(b"\xff\xff"))


# Commit before forward


def test_update_is_forwarded_only_after_its_commit() -> None:
    """
    An update reaches other syncing members only once its append has fired.
    """
    world = World()
    sender, receiver = world.syncing("a"), world.syncing("b")

    world.receive(sender, SyncUpdate(Editor().insert("hello")))

    assert len(world.store.appends) == 1
    assert receiver.frames == []
    assert room_text(world.room) == "hello"

    world.store.appends[0].committed.callback(None)

    assert [type(m) for m in receiver.messages()] == [SyncUpdate]
    assert receiver.text() == "hello"


def test_appended_update_is_the_change() -> None:
    """
    The store is asked to append the room's key parts and the change.
    """
    world = World()
    sender = world.syncing("a")

    world.receive(sender, SyncUpdate(Editor().insert("hello")))

    append = world.store.appends[0]
    assert (append.app_id, append.room) == (APP, ROOM)
    doc: Doc[Text] = Doc()
    doc.apply_update(append.update)
    assert str(doc.get("text", type=Text)) == "hello"


def test_step2_from_a_client_is_committed_and_forwarded() -> None:
    """
    A client's step 2 is applied, committed and forwarded like an update.
    """
    world = World()
    sender, receiver = world.syncing("a"), world.syncing("b")

    world.receive(sender, SyncStep2(Editor().insert("offline edit")))
    assert receiver.frames == []
    world.store.commit_all()

    assert receiver.text() == "offline edit"


def test_step2_answer_waits_for_a_pending_commit() -> None:
    """
    A step 1 answered while a commit is pending is held until that commit
    fires, so the step 2 cannot carry an uncommitted update.
    """
    world = World()
    sender = world.syncing("a")
    world.receive(sender, SyncUpdate(Editor().insert("pending")))
    joiner = world.join("c")
    joiner.frames.clear()

    world.receive(joiner, SyncStep1(b"\x00"))

    assert joiner.frames == []

    world.store.appends[0].committed.callback(None)

    assert SyncStep2 in [type(m) for m in joiner.messages()]
    assert joiner.text() == "pending"


def test_step2_answer_waits_for_every_commit_pending_when_asked() -> None:
    """
    A step 2 held for several pending commits leaves only after the last of
    them, not after the first.
    """
    world = World()
    editor = Editor()
    sender = world.syncing("a")
    world.receive(sender, SyncUpdate(editor.insert("one ")))
    world.receive(sender, SyncUpdate(editor.insert("two")))
    joiner = world.join("c")
    joiner.frames.clear()
    world.receive(joiner, SyncStep1(b"\x00"))

    world.store.appends[0].committed.callback(None)

    assert SyncStep2 not in [type(m) for m in joiner.messages()]

    world.store.appends[1].committed.callback(None)

    assert SyncStep2 in [type(m) for m in joiner.messages()]
    assert joiner.text() == "one two"


def test_forwarding_preserves_order_across_pending_commits() -> None:
    """
    Updates committed one by one are forwarded one by one, in the order they
    were received.
    """
    world = World()
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    updates = [editor.insert(word) for word in ("one ", "two ", "three")]
    for update in updates:
        world.receive(sender, SyncUpdate(update))
    assert receiver.frames == []

    forwarded: list[list[Message]] = []
    for append in world.store.appends:
        append.committed.callback(None)
        forwarded.append(receiver.take())

    assert forwarded == [[SyncUpdate(u)] for u in updates]


def test_one_notification_for_several_appends_forwards_them_in_order() -> None:
    """
    A store tells the room once per transaction how many of its appends
    committed; exactly that many updates are forwarded, oldest first, and
    once all are, the room can leave memory.
    """
    world = World()
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    updates = [editor.insert("one "), editor.insert("two "), editor.insert("three")]
    for update in updates:
        world.receive(sender, SyncUpdate(update))

    world.room.appends_committed(2)

    assert receiver.messages() == [SyncUpdate(updates[0]), SyncUpdate(updates[1])]

    world.room.appends_committed(1)

    assert receiver.messages() == [SyncUpdate(update) for update in updates]
    world.room.leave(sender, world.now)
    world.room.leave(receiver, world.now)
    assert world.registry.get(KEY) is None


def test_sender_does_not_get_its_own_update_back() -> None:
    """
    The member an update came from is not sent it again.
    """
    world = World()
    sender, _ = world.syncing("a"), world.syncing("b")

    world.receive(sender, SyncUpdate(Editor().insert("hello")))
    world.store.commit_all()

    assert sender.frames == []


def test_member_that_has_not_sent_step1_gets_no_updates() -> None:
    """
    A member that never sent a step 1 (one that only signals) is not sent
    updates.
    """
    world = World()
    sender = world.syncing("a")
    silent = world.join("b")
    silent.frames.clear()

    world.receive(sender, SyncUpdate(Editor().insert("hello")))
    world.store.commit_all()

    assert silent.frames == []


def test_duplicate_update_is_not_stored_again() -> None:
    """
    An update the document already holds is neither appended nor forwarded
    again.
    """
    world = World()
    sender, receiver = world.syncing("a"), world.syncing("b")
    update = Editor().insert("hello")
    world.receive(sender, SyncUpdate(update))
    world.store.commit_all()
    receiver.frames.clear()

    world.receive(sender, SyncUpdate(update))
    world.receive(receiver, SyncStep2(update))

    assert len(world.store.appends) == 1
    assert receiver.frames == sender.frames == []


def test_empty_update_is_not_stored() -> None:
    """
    The empty update a fresh client sends as its step 2 is not appended.
    """
    world = World()
    member = world.syncing("a")

    world.receive(member, SyncStep2(b"\x00\x00"))

    assert world.store.appends == []


@pytest.mark.parametrize(
    "update", [b"", b"\x00", b"garbage", b"\x01\x02garbage", b"\xff" * 12]
)
def test_malformed_update_raises_protocol_error_and_changes_nothing(
    update: bytes,
) -> None:
    """
    An update pycrdt cannot decode is bad input: the document, the store and
    the other members are untouched.
    """
    world = World()
    world.join("a", StoredDocument(Editor().insert("kept"), 1, 20))
    sender, receiver = world.syncing("b"), world.syncing("c")
    state = world.room.doc.get_state()

    with pytest.raises(ProtocolError):
        world.receive(sender, SyncUpdate(update))

    assert world.room.doc.get_state() == state
    assert room_text(world.room) == "kept"
    assert world.store.appends == []
    assert receiver.frames == []
    assert not world.room.closed


def _truncations() -> st.SearchStrategy[bytes]:
    editor = Editor()
    editor.insert("hello")
    editor.text.insert(2, "XYZ")
    del editor.text[1:4]
    update = editor.doc.get_update()
    return st.builds(
        lambda cut, flips: bytes(
            b ^ flips.get(i, 0) for i, b in enumerate(update[:cut])
        ),
        st.integers(min_value=0, max_value=len(update)),
        st.dictionaries(
            st.integers(min_value=0, max_value=len(update) - 1),
            st.integers(min_value=1, max_value=255),
            max_size=3,
        ),
    )


@given(st.one_of(st.binary(max_size=64), _truncations()))
@settings(max_examples=300, deadline=None)
def test_any_update_is_applied_or_raises_protocol_error(update: bytes) -> None:
    """
    Whatever bytes a client sends as an update, the room applies them or
    raises ProtocolError, never anything else, and stays open.
    """
    world = World()
    member = world.syncing("a")

    with contextlib.suppress(ProtocolError):
        world.receive(member, SyncUpdate(update))

    assert not world.room.closed
    world.room.doc.get_state()


def test_update_over_max_document_bytes_raises_and_is_not_applied() -> None:
    """
    An update that would grow the document past the limit is refused before
    it is applied or stored.
    """
    world = World(Limits(max_document_bytes=200))
    sender, receiver = world.syncing("a"), world.syncing("b")
    editor = Editor()
    world.receive(sender, SyncUpdate(editor.insert("small")))
    world.store.commit_all()
    receiver.frames.clear()

    with pytest.raises(DocumentTooLarge):
        world.receive(sender, SyncUpdate(editor.insert("x" * 300)))

    assert room_text(world.room) == "small"
    assert len(world.store.appends) == 1
    assert receiver.frames == []


def test_max_document_bytes_counts_the_stored_document() -> None:
    """
    The size of the document loaded from the store counts against the limit.
    """
    stored = Editor().insert("s" * 150)
    world = World(Limits(max_document_bytes=200))
    member = world.join("a", StoredDocument(stored, 1, len(stored)))

    with pytest.raises(DocumentTooLarge):
        world.receive(member, SyncUpdate(Editor().insert("y" * 60)))


# Awareness


def test_awareness_goes_to_every_syncing_member_including_the_sender() -> None:
    """
    An accepted awareness update is sent to every syncing member, the sender
    included, and to no member that has not sent step 1.
    """
    world = World()
    sender, other = world.syncing("a"), world.syncing("b")
    silent = world.join("c")
    silent.frames.clear()

    world.receive(sender, awareness((7, 1, '{"name":"Ann"}')))

    expected = [AwarenessEntry(7, 1, '{"name":"Ann"}')]
    assert awareness_entries(sender.messages()) == expected
    assert awareness_entries(other.messages()) == expected
    assert silent.frames == []


def test_awareness_is_not_held_for_pending_commits() -> None:
    """
    Awareness is relayed at once even while a document commit is pending.
    """
    world = World()
    sender, other = world.syncing("a"), world.syncing("b")
    world.receive(sender, SyncUpdate(Editor().insert("pending")))

    world.receive(sender, awareness((7, 1, "{}")))

    assert awareness_entries(other.messages()) == [AwarenessEntry(7, 1, "{}")]


def test_rejected_awareness_is_not_relayed() -> None:
    """
    An awareness entry that the acceptance rules reject is sent to no one.
    """
    world = World()
    sender, other = world.syncing("a"), world.syncing("b")
    world.receive(sender, awareness((7, 2, "{}")))
    sender.frames.clear()
    other.frames.clear()

    world.receive(sender, awareness((7, 1, '{"old":true}')))

    assert sender.frames == other.frames == []


def test_query_awareness_is_answered_with_every_state() -> None:
    """
    A query is answered, to the asker only, with one message of every state.
    """
    world = World()
    first, asker = world.syncing("a"), world.syncing("b")
    world.receive(first, awareness((7, 1, "{}"), (8, 1, '{"x":1}')))
    first.frames.clear()
    asker.frames.clear()

    world.receive(asker, QueryAwareness())

    assert len(asker.frames) == 1
    assert awareness_entries(asker.messages()) == [
        AwarenessEntry(7, 1, "{}"),
        AwarenessEntry(8, 1, '{"x":1}'),
    ]
    assert first.frames == []


def test_leaving_removes_the_members_awareness_and_broadcasts_it() -> None:
    """
    When a member leaves, the states it set are removed and the others get
    a null for each at the same clock.
    """
    world = World()
    leaver, stayer = world.syncing("a"), world.syncing("b")
    world.receive(leaver, awareness((7, 3, '{"name":"Ann"}')))
    world.receive(stayer, awareness((8, 1, '{"name":"Bob"}')))
    stayer.frames.clear()

    world.room.leave(leaver, world.now)

    assert awareness_entries(stayer.messages()) == [AwarenessEntry(7, 3, "null")]
    assert world.room.awareness.all_entries() == [
        AwarenessEntry(8, 1, '{"name":"Bob"}')
    ]
    newcomer = world.join("c")
    assert awareness_entries(newcomer.messages()) == [
        AwarenessEntry(8, 1, '{"name":"Bob"}')
    ]


def test_state_removed_by_its_client_is_not_removed_again_on_leave() -> None:
    """
    A state the client removed itself is not broadcast again when it leaves.
    """
    world = World()
    leaver, stayer = world.syncing("a"), world.syncing("b")
    world.receive(leaver, awareness((7, 3, "{}")))
    world.receive(leaver, awareness((7, 3, "null")))
    stayer.frames.clear()

    world.room.leave(leaver, world.now)

    assert stayer.frames == []


def test_client_that_moved_to_a_new_connection_keeps_its_state() -> None:
    """
    A client id claimed by a newer connection is not removed when the old
    connection leaves.
    """
    world = World()
    old, new, other = world.syncing("old"), world.syncing("new"), world.syncing("o")
    world.receive(old, awareness((7, 1, "{}")))
    world.receive(new, awareness((7, 2, "{}")))
    other.frames.clear()

    world.room.leave(old, world.now)

    assert other.frames == []
    assert world.room.awareness.all_entries() == [AwarenessEntry(7, 2, "{}")]


def test_outdated_awareness_is_expired_and_broadcast() -> None:
    """
    A state not renewed for 30 seconds is removed and the removal sent.
    """
    world = World()
    member, other = world.syncing("a"), world.syncing("b")
    world.receive(member, awareness((7, 1, "{}")))
    other.frames.clear()

    world.registry.expire_awareness(29.0)
    assert other.frames == []
    world.registry.expire_awareness(30.0)

    assert awareness_entries(other.messages()) == [AwarenessEntry(7, 1, "null")]
    assert len(world.room.awareness) == 0


# Failures


def test_failing_append_closes_every_member_with_1011() -> None:
    """
    An append that fails closes every member with 1011, forwards nothing,
    and takes the room out of the registry so the next join reloads it.
    """
    world = World()
    sender, receiver = world.syncing("a"), world.syncing("b")
    world.receive(sender, SyncUpdate(Editor().insert("lost")))

    world.store.appends[0].committed.errback(StoreError("disk full"))

    assert [code for code, _ in sender.closes] == [CloseCode.SERVER_ERROR]
    assert [code for code, _ in receiver.closes] == [CloseCode.SERVER_ERROR]
    assert receiver.frames == []
    assert world.registry.get(KEY) is None

    world.join("c")
    assert len(world.store.loads) == 2


def test_later_commit_after_a_failed_one_forwards_nothing() -> None:
    """
    Once an append has failed, a later append firing sends nothing.
    """
    world = World()
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    world.receive(sender, SyncUpdate(editor.insert("one")))
    world.receive(sender, SyncUpdate(editor.insert("two")))
    closed_room = world.room

    world.store.appends[0].committed.errback(StoreError("disk full"))
    world.store.appends[1].committed.callback(None)

    assert receiver.frames == []
    assert closed_room.closed


def test_failing_load_fails_every_joiner_and_writes_nothing() -> None:
    """
    When the store cannot load a room, every joiner's join fails with
    RoomUnavailable, nothing is appended, and the room leaves the registry.
    """
    world = World()
    first, second = FakeMember("a"), FakeMember("b")
    first_joined = world.registry.join(APP, ROOM, first)
    second_joined = world.registry.join(APP, ROOM, second)

    world.store.loads[0].errback(StoreError("cannot read"))

    for pending in (first_joined, second_joined):
        failures: list[Failure] = []
        pending.addErrback(failures.append)
        assert failures and failures[0].check(RoomUnavailable)
    assert first.frames == second.frames == []
    assert world.store.appends == []
    assert world.registry.get(KEY) is None


@pytest.mark.parametrize("stored", [b"garbage", b"\x01\x02garbage", b"\xff" * 12])
def test_stored_document_that_cannot_be_applied_fails_the_load(stored: bytes) -> None:
    """
    A stored document pycrdt rejects fails the load (the joiner gets
    RoomUnavailable) instead of serving an empty document that could be
    saved over it.
    """
    world = World()
    member = FakeMember("a")
    pending = world.registry.join(APP, ROOM, member)

    world.store.loads[0].callback(StoredDocument(stored, 1, len(stored)))

    failures: list[Failure] = []
    pending.addErrback(failures.append)
    assert failures and failures[0].check(RoomUnavailable)
    assert world.store.appends == []
    assert world.registry.get(KEY) is None


def test_join_after_failed_load_loads_again() -> None:
    """
    A room whose load failed is retried by the next join.
    """
    world = World()
    first = world.registry.join(APP, ROOM, FakeMember("a"))
    world.store.loads[0].errback(StoreError("cannot read"))
    first.addErrback(lambda _: None)

    member = world.join("b")

    assert len(world.store.loads) == 2
    assert member.frames == [b"\x00\x00\x01\x00"]


# Lifetime


def test_room_is_dropped_when_its_last_member_leaves() -> None:
    """
    A room with nothing to commit leaves memory with its last member.
    """
    world = World()
    first, second = world.join("a"), world.join("b")
    room = world.room

    room.leave(first, world.now)
    assert world.registry.get(KEY) is room
    room.leave(second, world.now)

    assert world.registry.get(KEY) is None
    assert len(world.registry) == 0


def test_room_is_kept_while_a_commit_is_pending() -> None:
    """
    A room whose last member left stays in memory until its commits are
    done, then leaves.
    """
    world = World()
    member = world.syncing("a")
    world.receive(member, SyncUpdate(Editor().insert("pending")))
    room = world.room

    room.leave(member, world.now)

    assert world.registry.get(KEY) is room
    world.store.commit_all()
    assert world.registry.get(KEY) is None


def test_rejoin_while_commit_pending_uses_the_same_room() -> None:
    """
    A member joining a room that is only waiting for commits gets the same
    in-memory document, pending change included.
    """
    world = World()
    member = world.syncing("a")
    world.receive(member, SyncUpdate(Editor().insert("pending")))
    room = world.room
    room.leave(member, world.now)

    world.join("b")

    assert world.registry.get(KEY) is room
    assert len(world.store.loads) == 1
    world.store.commit_all()
    assert world.registry.get(KEY) is room


def test_compaction_is_requested_after_compact_after_rows_commits() -> None:
    """
    Once a room's stored rows reach C{compact_after_rows}, the store is
    asked to compact it, once.
    """
    world = World(compact_after_rows=3)
    editor = Editor()
    member = world.syncing("a")

    for word in ("one", "two"):
        world.receive(member, SyncUpdate(editor.insert(word)))
    world.store.commit_all()
    assert world.store.compactions == []

    world.receive(member, SyncUpdate(editor.insert("three")))
    world.store.commit_all()
    assert len(world.store.compactions) == 1

    world.receive(member, SyncUpdate(editor.insert("four")))
    world.store.commit_all()
    assert len(world.store.compactions) == 1


def test_compaction_is_requested_again_once_the_log_regrows() -> None:
    """
    After a compaction, the count starts again from the one snapshot row.
    """
    world = World(compact_after_rows=3)
    editor = Editor()
    member = world.syncing("a")
    for word in ("one", "two", "three"):
        world.receive(member, SyncUpdate(editor.insert(word)))
    world.store.commit_all()
    world.store.compactions[0][1].callback(None)

    world.receive(member, SyncUpdate(editor.insert("four")))
    world.store.commit_all()
    assert len(world.store.compactions) == 1

    world.receive(member, SyncUpdate(editor.insert("five")))
    world.store.commit_all()
    assert len(world.store.compactions) == 2


def test_compaction_stores_the_document_without_its_deleted_text() -> None:
    """
    The snapshot a compaction stores is the in-memory document: text that
    was inserted and deleted again is not in it.
    """
    world = World(compact_after_rows=2)
    editor = Editor()
    member = world.syncing("a")

    world.receive(member, SyncUpdate(editor.insert("x" * 10_000)))
    before = editor.doc.get_state()
    editor.text.clear()
    world.receive(member, SyncUpdate(editor.doc.get_update(before)))
    world.store.commit_all()

    [(snapshot, _)] = world.store.compactions
    assert len(snapshot) < 200
    assert world.room.size == len(snapshot)


def test_inserting_and_deleting_past_the_limit_is_not_refused() -> None:
    """
    Text inserted and deleted again does not count against
    max_document_bytes: a history longer than the limit is accepted while
    the document itself stays small.
    """
    world = World(Limits(max_document_bytes=50_000), compact_after_rows=10_000)
    editor = Editor()
    member = world.syncing("a")

    for _ in range(20):
        world.receive(member, SyncUpdate(editor.insert("x" * 10_000)))
        before = editor.doc.get_state()
        editor.text.clear()
        world.receive(member, SyncUpdate(editor.doc.get_update(before)))
    world.store.commit_all()
    world.receive(member, SyncUpdate(editor.insert("still here")))

    assert room_text(world.room) == "still here"


def test_measured_document_over_the_limit_is_still_refused() -> None:
    """
    Measuring the document again refuses what really would not fit, and the
    refusal carries the size the document would have grown to.
    """
    world = World(Limits(max_document_bytes=50_000))
    editor = Editor()
    member = world.syncing("a")
    world.receive(member, SyncUpdate(editor.insert("x" * 45_000)))
    world.store.commit_all()

    update = editor.insert("y" * 10_000)

    with pytest.raises(DocumentTooLarge) as refused:
        world.receive(member, SyncUpdate(update))

    # What the warning logs: the size the document would have grown to.
    assert refused.value.size >= 45_000 + len(update)


def test_compaction_is_requested_after_compact_after_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A few big updates get a room compacted before it has
    C{compact_after_rows} rows, so that deleted pastes leave the disk.
    """
    monkeypatch.setattr(kraken.rooms, "COMPACT_AFTER_BYTES", 20_000)
    world = World(compact_after_rows=500)
    editor = Editor()
    member = world.syncing("a")

    world.receive(member, SyncUpdate(editor.insert("x" * 15_000)))
    world.store.commit_all()
    assert world.store.compactions == []

    world.receive(member, SyncUpdate(editor.insert("y" * 15_000)))
    world.store.commit_all()
    assert len(world.store.compactions) == 1
    world.store.compactions[0][1].callback(None)

    # The snapshot itself does not count: small updates after it do not
    # compact the room again.
    world.receive(member, SyncUpdate(editor.insert("z")))
    world.store.commit_all()
    assert len(world.store.compactions) == 1


def test_loaded_rows_count_towards_compaction() -> None:
    """
    The rows a room already has in the store count towards the threshold.
    """
    stored = Editor().insert("old")
    world = World(compact_after_rows=3)
    member = world.join("a", StoredDocument(stored, 2, len(stored)))
    world.receive(member, SyncStep1(b"\x00"))

    world.receive(member, SyncUpdate(Editor().insert("new")))
    world.store.commit_all()

    assert len(world.store.compactions) == 1


def test_close_app_closes_its_rooms_only() -> None:
    """
    Closing an app closes its rooms' members and leaves other apps alone.
    """
    world = World()
    member = world.join("a")
    other = FakeMember("other")
    pending = world.registry.join("chat", ROOM, other)
    world.store.loads[-1].callback(EMPTY)
    joined(pending)

    world.registry.close_app(APP, CloseCode.FORBIDDEN, "the app was deleted")

    assert member.closes == [(CloseCode.FORBIDDEN, "the app was deleted")]
    assert other.closes == []
    assert world.registry.get(KEY) is None
    assert world.registry.get(f"chat:{ROOM}") is not None


def test_updates_sent_together_are_stored_and_forwarded_as_one() -> None:
    """
    Updates a member sent together are applied in one transaction: one
    append and one forwarded message carry all of them, and nothing goes
    back to the sender.
    """
    world = World()
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    updates = [editor.insert("one "), editor.insert("two "), editor.insert("three")]

    world.room.receive_updates(sender, updates)
    world.store.commit_all()

    assert len(world.store.appends) == 1
    forwarded = receiver.messages()
    assert len(forwarded) == 1 and isinstance(forwarded[0], SyncUpdate)
    doc: Doc[Text] = Doc()
    doc.apply_update(forwarded[0].update)
    assert str(doc.get("text", type=Text)) == "one two three"
    assert sender.frames == []


def test_a_refused_update_among_several_keeps_the_ones_before_it() -> None:
    """
    When one of several updates sent together is invalid, the ones before
    it are stored and forwarded, the error is raised, and the ones after it
    are not applied.
    """
    world = World()
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    first = editor.insert("kept")
    after = editor.insert(" lost")

    with pytest.raises(ProtocolError):
        world.room.receive_updates(sender, [first, b"garbage", after])
    world.store.commit_all()

    assert room_text(world.room) == "kept"
    assert len(world.store.appends) == 1
    assert receiver.messages() == [SyncUpdate(first)]


def test_updates_together_near_the_size_limit_are_checked_one_by_one() -> None:
    """
    Near C{max_document_bytes}, updates sent together are checked one at a
    time: those that fit are kept, and the one that does not is refused.
    """
    world = World(Limits(max_document_bytes=3000))
    editor = Editor()
    sender, receiver = world.syncing("a"), world.syncing("b")
    fits = [editor.insert("x" * 1000), editor.insert("y" * 1000)]
    too_much = editor.insert("z" * 1500)

    with pytest.raises(DocumentTooLarge):
        world.room.receive_updates(sender, [*fits, too_much])
    world.store.commit_all()

    assert room_text(world.room) == "x" * 1000 + "y" * 1000
    assert receiver.messages() == [SyncUpdate(update) for update in fits]
