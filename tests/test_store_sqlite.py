"""
The SQLite store on a real database file under the real reactor: appends
committed inline once per reactor turn, loads on the store thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import pytest_twisted
from pycrdt import Doc, Text
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from kraken.store import appended
from kraken.store import sqlite as sqlite_store
from kraken.store.sqlite import SQLiteStore


def text_updates(*parts: str) -> list[bytes]:
    """
    One update per part, each appending it to the text of one document.
    """
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    updates = []
    for part in parts:
        before = doc.get_state()
        text.insert(len(text), part)
        updates.append(doc.get_update(before))
    return updates


def text_of(update: bytes | None) -> str:
    doc: Doc[Text] = Doc()
    if update is not None:
        doc.apply_update(update)
    return str(doc.get("text", type=Text))


def stored_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT count(*) FROM updates").fetchone()
    return int(count)


@pytest_twisted.async_yield_fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(reactor, tmp_path)
    opened.start()
    yield opened
    await opened.stop()


@pytest_twisted.ensureDeferred
async def test_appends_of_one_turn_share_one_transaction_and_are_readable(
    tmp_path: Path,
) -> None:
    """
    Appends asked for in one reactor turn are committed together, their
    notifications run inside the store's C{around_commits} context, and a
    fresh connection (another process) sees them once they have fired.
    """
    seen: list[str] = []

    @contextmanager
    def around() -> Iterator[None]:
        seen.append("enter")
        yield
        seen.append("exit")

    store = SQLiteStore(reactor, tmp_path, around_commits=around)
    store.start()
    try:
        committed = [
            appended(store, "app", "room", update).addCallback(
                lambda _, n=n: seen.append(f"commit {n}")
            )
            for n, update in enumerate(text_updates("a", "b", "c"))
        ]
        assert stored_rows(store.path) == 0

        await DeferredList(committed, fireOnOneErrback=True)
        await deferLater(reactor, 0, lambda: None)

        assert seen == ["enter", "commit 0", "commit 1", "commit 2", "exit"]
        assert stored_rows(store.path) == 3
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_load_reads_every_committed_append(store: SQLiteStore) -> None:
    """
    A load on the store thread's connection sees what the reactor's
    connection committed.
    """
    await DeferredList(
        [appended(store, "app", "room", u) for u in text_updates("hello ", "world")],
        fireOnOneErrback=True,
    )

    loaded = await store.load("app", "room")

    assert loaded.rows == 2
    assert text_of(loaded.update) == "hello world"


@pytest_twisted.ensureDeferred
async def test_compaction_replaces_the_rows_before_it_and_keeps_later_ones(
    store: SQLiteStore,
) -> None:
    """
    A compaction commits the appends asked for before it, replaces every
    row of the room with the snapshot, keeps appends made after it, and
    touches no other room.
    """
    doc: Doc[Text] = Doc()
    text = doc.get("text", type=Text)
    text += "one "
    one = doc.get_update()
    before = doc.get_state()
    text += "two "
    two = doc.get_update(before)
    snapshot = doc.get_update()
    before = doc.get_state()
    text += "three"
    three = doc.get_update(before)
    written = DeferredList(
        [appended(store, "app", "room", u) for u in (one, two)]
        + [appended(store, "app", "other", u) for u in text_updates("x", "y")],
        fireOnOneErrback=True,
    )

    await store.compact("app", "room", snapshot)
    await written
    await appended(store, "app", "room", three)
    loaded = await store.load("app", "room")

    assert loaded.rows == 2
    assert text_of(loaded.update) == "one two three"
    assert (await store.load("app", "other")).rows == 2


@pytest_twisted.ensureDeferred
async def test_failed_commit_fails_every_append_of_its_transaction(
    store: SQLiteStore,
) -> None:
    """
    When the transaction cannot be written, every append in it fails and
    nothing of it is stored.
    """
    store._writer.close()
    updates = text_updates("lost", "too")

    results = await DeferredList(
        [appended(store, "app", "room", u) for u in updates], consumeErrors=True
    )

    assert [ok for ok, _ in results] == [False, False]
    assert stored_rows(store.path) == 0
    store._writer = type(store._writer)(store.path, writer=True)


class CountingListener:
    """
    An append listener that keeps what it was told.
    """

    def __init__(self) -> None:
        self.told: list[int | str] = []

    def appends_committed(self, count: int) -> None:
        self.told.append(count)

    def appends_failed(self, reason: str) -> None:
        self.told.append(reason)


@pytest_twisted.ensureDeferred
async def test_a_listener_hears_once_per_transaction(store: SQLiteStore) -> None:
    """
    A room's appends of one reactor turn are committed in one transaction,
    and its listener is told once, with their number; another room's
    listener hears of its own appends only.
    """
    busy, quiet = CountingListener(), CountingListener()
    for update in text_updates("a", "b", "c"):
        store.append("app", "busy", update, busy)
    store.append("app", "quiet", text_updates("x")[0], quiet)

    await deferLater(reactor, 0, lambda: None)
    await deferLater(reactor, 0, lambda: None)

    assert (busy.told, quiet.told) == ([3], [1])
    assert stored_rows(store.path) == 4


@pytest_twisted.ensureDeferred
async def test_appends_after_stop_fail_at_once(tmp_path: Path) -> None:
    """
    An append to a stopped store is refused to its listener straight away
    and writes nothing.
    """
    stopped = SQLiteStore(reactor, tmp_path)
    stopped.start()
    await stopped.stop()
    listener = CountingListener()

    stopped.append("app", "room", text_updates("late")[0], listener)

    assert listener.told == ["the store is closed"]
    assert stored_rows(stopped.path) == 0


VERSION_1_SCHEMA = """
CREATE TABLE apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    allowed_origins TEXT NOT NULL,
    description TEXT,
    owner_email TEXT,
    created_at TEXT NOT NULL,
    token_hash TEXT NOT NULL
);
CREATE TABLE updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    room TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX updates_by_room ON updates (app_id, room, id);
CREATE TABLE health (id INTEGER PRIMARY KEY, checked_at REAL NOT NULL);
PRAGMA user_version = 1;
"""


@pytest_twisted.ensureDeferred
async def test_a_version_1_database_is_migrated_with_its_rows_in_order(
    tmp_path: Path,
) -> None:
    """
    A database of schema version 1 (updates keyed by app and room names)
    is migrated on start: every room loads the same text, with its rows in
    their order, new appends land after them, and deleting an app removes
    its rooms only.
    """
    path = tmp_path / "kraken.sqlite3"
    one, two = text_updates("alpha ", "beta"), text_updates("other")
    with sqlite3.connect(path) as old:
        old.executescript(VERSION_1_SCHEMA)
        old.executemany(
            "INSERT INTO updates (app_id, room, data) VALUES (?, ?, ?)",
            [("a", "r", one[0]), ("b", "r", two[0]), ("a", "r", one[1])],
        )
    old.close()

    migrated = SQLiteStore(reactor, tmp_path)
    migrated.start()
    try:
        first = await migrated.load("a", "r")
        assert (text_of(first.update), first.rows) == ("alpha beta", 2)
        assert text_of((await migrated.load("b", "r")).update) == "other"
        doc: Doc[Text] = Doc()
        doc.apply_update(first.update or b"")
        before = doc.get_state()
        doc.get("text", type=Text).insert(len("alpha beta"), "!")
        await appended(migrated, "a", "r", doc.get_update(before))
        assert text_of((await migrated.load("a", "r")).update) == "alpha beta!"

        await migrated._inline(migrated._writer.delete_app, "a")

        assert (await migrated.load("a", "r")).rows == 0
        assert text_of((await migrated.load("b", "r")).update) == "other"
    finally:
        await migrated.stop()
    with sqlite3.connect(path) as check:
        (version,) = check.execute("PRAGMA user_version").fetchone()
    check.close()
    assert version == 2


@pytest_twisted.ensureDeferred
async def test_a_room_of_a_deleted_app_starts_empty_when_written_again(
    store: SQLiteStore,
) -> None:
    """
    After an app is deleted, a room of the same name (the app registered
    again) holds only what is written after, and other apps keep theirs.
    """
    await appended(store, "gone", "room", text_updates("old")[0])
    await appended(store, "kept", "room", text_updates("kept")[0])

    await store.delete_app("gone")
    await appended(store, "gone", "room", text_updates("new")[0])

    assert text_of((await store.load("gone", "room")).update) == "new"
    assert text_of((await store.load("kept", "room")).update) == "kept"


@pytest_twisted.ensureDeferred
async def test_a_room_first_written_in_a_failed_transaction_is_written_later(
    store: SQLiteStore,
) -> None:
    """
    When the transaction that first wrote a room fails, nothing of it stays,
    and a later write to that room is stored and loads.
    """
    bad: bytes = None  # type: ignore[assignment]
    results = await DeferredList(
        [appended(store, "app", "fresh", bad)], consumeErrors=True
    )
    assert [ok for ok, _ in results] == [False]

    await appended(store, "app", "fresh", text_updates("stored")[0])

    assert text_of((await store.load("app", "fresh")).update) == "stored"


def test_a_migration_that_fails_leaves_the_version_1_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The migration and the new schema version are one transaction: when its
    last step fails, the database is still the version 1 database, and the
    next start migrates it.
    """
    path = tmp_path / "kraken.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(VERSION_1_SCHEMA)
        old.execute(
            "INSERT INTO updates (app_id, room, data) VALUES (?, ?, ?)",
            ("a", "r", text_updates("kept")[0]),
        )
    old.close()
    monkeypatch.setattr(sqlite_store, "_SCHEMA", sqlite_store._SCHEMA + "SELECT nope;")

    with pytest.raises(sqlite3.OperationalError):
        SQLiteStore(reactor, tmp_path)

    with sqlite3.connect(path) as check:
        (version,) = check.execute("PRAGMA user_version").fetchone()
        columns = {row[1] for row in check.execute("PRAGMA table_info(updates)")}
        tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    check.close()
    assert (version, "app_id" in columns, "rooms" in tables) == (1, True, False)
    monkeypatch.undo()
    reopened = SQLiteStore(reactor, tmp_path)
    assert text_of(reopened._reader.load("a", "r").update) == "kept"
    reopened._writer.close()
    reopened._reader.close()


@pytest_twisted.ensureDeferred
async def test_the_cache_of_room_numbers_is_bounded(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The writer remembers at most C{ROOM_KEY_CACHE_SIZE} room numbers, and
    rooms written after it started over are stored and load as before.
    """
    monkeypatch.setattr(sqlite_store, "ROOM_KEY_CACHE_SIZE", 4)

    for index in range(10):
        await appended(store, "app", f"room-{index}", text_updates(f"t{index}")[0])

    assert len(store._writer._room_keys) <= 4
    for index in range(10):
        loaded = await store.load("app", f"room-{index}")
        assert text_of(loaded.update) == f"t{index}"
