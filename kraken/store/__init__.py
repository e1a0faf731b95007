"""
Where documents and apps are kept.

The rest of Kraken talks to storage only through L{DocumentStore} and
L{AppStore}, so that another backend (PostgreSQL for several processes) is an
addition, not a rewrite.  The embedded default is L{kraken.store.sqlite}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from kraken.apps import App


class StoreError(Exception):
    """
    The store could not do what was asked; the reason is in the message.
    """


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """
    A room's document as read from the store.

    @ivar update: every stored update merged into one, or C{None} for a room
        that has never been written.
    @ivar rows: how many update rows the room has (compaction makes it one).
    @ivar size: the number of stored bytes.
    """

    update: bytes | None
    rows: int
    size: int


class AppendListener(Protocol):
    """
    Who hears how a room's appends went: a room, which forwards its updates
    only once they are committed.

    A store tells a listener once per transaction, not once per update, so
    that a busy room pays for one notification per commit.
    """

    def appends_committed(self, count: int) -> None:
        """
        The next C{count} appends of this listener, in the order they were
        asked for, are committed.
        """

    def appends_failed(self, reason: str) -> None:
        """
        Appends of this listener could not be written, and none of the
        transaction they were in was stored.
        """


class DocumentStore(Protocol):
    """
    An append-only log of document updates per room, with compaction.

    Rooms are named by app and room name separately, so that no room name can
    reach into another app's documents.
    """

    def load(self, app_id: str, room: str) -> Deferred[StoredDocument]:
        """
        Read a room's document.
        """

    def append(
        self, app_id: str, room: str, update: bytes, listener: AppendListener
    ) -> None:
        """
        Durably add an update to a room; C{listener} hears once it is
        committed, or that it failed.
        """

    def compact(self, app_id: str, room: str, snapshot: bytes) -> Deferred[None]:
        """
        Replace every row of a room appended before this call with
        C{snapshot}, a single update holding all of them, in one
        transaction; rows appended after the call stay after it.
        """

    def check(self) -> Deferred[None]:
        """
        Fail unless the store can be read and written right now.
        """


class AppStore(Protocol):
    """
    The registered apps.
    """

    def insert_app(self, app: App, token_hash: str) -> Deferred[None]:
        """
        Add a new app with the hash of its token.
        """

    def set_token_hash(self, app_id: str, token_hash: str) -> Deferred[None]:
        """
        Replace the hash of an app's token.
        """

    def update_app(self, app: App) -> Deferred[None]:
        """
        Replace the stored fields of an existing app.
        """

    def delete_app(self, app_id: str) -> Deferred[None]:
        """
        Remove an app and every document of it in one transaction.
        """


class _OneAppend:
    """
    The listener of a single append, as a Deferred.
    """

    def __init__(self) -> None:
        self.committed: Deferred[None] = Deferred()

    def appends_committed(self, count: int) -> None:
        self.committed.callback(None)

    def appends_failed(self, reason: str) -> None:
        self.committed.errback(StoreError(reason))


def appended(
    store: DocumentStore, app_id: str, room: str, update: bytes
) -> Deferred[None]:
    """
    Append one update to C{store}; a Deferred that fires once it is
    committed, for callers that wait on single appends (tools and tests;
    rooms listen to their appends themselves).
    """
    one = _OneAppend()
    store.append(app_id, room, update, one)
    return one.committed
