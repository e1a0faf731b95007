"""
The embedded default store: one SQLite database in the data directory.

Kraken writes on the reactor thread and reads on one worker thread, each over
its own connection to the database:

* every write (appended updates, a compaction's snapshot, apps, the health
  check) is committed inline on the reactor.  In WAL mode with
  C{synchronous=NORMAL} a commit is a few small C{write} calls and no
  C{fsync}, about 16 microseconds, much less than handing the work to a
  thread and back (about 100 microseconds of CPU).  Appends asked for during
  one turn of the reactor are committed together at the start of the next,
  so that under load few, larger transactions are written;
* reads that can take long (loading and merging a room's rows) and WAL
  checkpoints, which call C{fsync}, run on the worker thread, so that a
  slow disk never stalls the reactor.  Readers never block the writer in
  WAL mode.

A committed update survives the server being killed, but the last commits
before a power failure or kernel crash may be lost.  Deleting an app with
many documents is one transaction on the reactor and holds it while SQLite
deletes the rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from pycrdt import merge_updates
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from kraken.apps import App
from kraken.store import AppendListener, StoredDocument, StoreError

#: Version 2 keys updates by a room number instead of the app and room names,
#: without AUTOINCREMENT: a commit then writes smaller index pages and no
#: sqlite_sequence page (about a third less CPU per commit here).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    allowed_origins TEXT NOT NULL,
    description TEXT,
    owner_email TEXT,
    created_at TEXT NOT NULL,
    token_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rooms (
    room_key INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL,
    room TEXT NOT NULL,
    UNIQUE (app_id, room)
);
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY,
    room_key INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_room ON updates (room_key, id);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    checked_at REAL NOT NULL
);
"""

#: From version 1, where updates carried their app and room names: the old
#: table is set aside before L{_SCHEMA} creates the new ones, and every row
#: keeps its id, so each room's updates keep their order.
_SET_VERSION_1_ASIDE = """
DROP INDEX updates_by_room;
ALTER TABLE updates RENAME TO updates_v1;
"""
_FROM_VERSION_1 = """
INSERT INTO rooms (app_id, room) SELECT DISTINCT app_id, room FROM updates_v1;
INSERT INTO updates (id, room_key, data)
    SELECT updates_v1.id, rooms.room_key, updates_v1.data
    FROM updates_v1 JOIN rooms USING (app_id, room);
DROP TABLE updates_v1;
"""

_log = Logger(namespace="kraken.store.sqlite")

#: Rooms whose numbers the writer keeps in memory (about 200 bytes each).
ROOM_KEY_CACHE_SIZE = 65536

#: The rows of a room, oldest first, by app and room name.
_ROOM_ROWS = (
    "SELECT data FROM updates WHERE room_key = "
    "(SELECT room_key FROM rooms WHERE app_id = ? AND room = ?) ORDER BY id"
)

T = TypeVar("T")


class _Database:
    """
    The blocking half: one SQLite connection, used by one thread at a time.

    @param writer: whether this is the connection that writes.  The writer
        creates the schema and never checkpoints on its own (that would call
        C{fsync} on the reactor); the reader's L{checkpoint} does it.
    """

    def __init__(self, path: Path, writer: bool) -> None:
        self.path = path
        if writer:
            # Documents are private: the database, and the journal files
            # SQLite creates with the same mode, are readable by their owner
            # only.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA busy_timeout=5000")
        # The writer's cache of room numbers, by app and room name.
        self._room_keys: dict[tuple[str, str], int] = {}
        if writer:
            # A newer Kraken's database is refused before anything of it,
            # even its journal mode, is changed.
            version = self._schema_version()
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._migrate(version)
            self._connection.execute("PRAGMA wal_autocheckpoint=0")
        self._connection.execute("PRAGMA synchronous=NORMAL")

    def _schema_version(self) -> int:
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            self._connection.close()
            raise StoreError(
                f"{self.path} has schema version {version}; this Kraken knows "
                f"versions up to {SCHEMA_VERSION}"
            )
        return int(version)

    def _migrate(self, version: int) -> None:
        if version == SCHEMA_VERSION:
            return

        def upgrade(connection: sqlite3.Connection) -> None:
            if version == 1:
                _run_script(connection, _SET_VERSION_1_ASIDE)
            _run_script(connection, _SCHEMA)
            if version == 1:
                _run_script(connection, _FROM_VERSION_1)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        if version:
            _log.info(
                "Migrating {path} from schema version {old} to {new}; it needs "
                "free space about the size of the database, and earlier "
                "Kraken versions cannot open it afterwards",
                path=str(self.path),
                old=version,
                new=SCHEMA_VERSION,
            )
        started = time.monotonic()
        # The schema and its version are committed together: a crash leaves
        # either the old database or the new one.
        self._transaction(upgrade)
        if version:
            _log.info(
                "Migrated {path} to schema version {new} in {seconds:.1f} s",
                path=str(self.path),
                new=SCHEMA_VERSION,
                seconds=time.monotonic() - started,
            )

    def close(self) -> None:
        self._connection.close()

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise
        return result

    def _roll_back(self) -> None:
        """
        End a failed transaction, so that the next one can begin; on a full
        disk SQLite may have rolled back already, or fail to.
        """
        if not self._connection.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            self._connection.execute("ROLLBACK")

    def append_rows(self, rows: list[tuple[str, str, bytes]]) -> None:
        new_keys: dict[tuple[str, str], int] = {}

        def insert(connection: sqlite3.Connection) -> None:
            keyed = [
                (self._room_key(connection, app_id, room, new_keys), data)
                for app_id, room, data in rows
            ]
            connection.executemany(
                "INSERT INTO updates (room_key, data) VALUES (?, ?)", keyed
            )

        self._transaction(insert)
        self._remember(new_keys)

    def _remember(self, new_keys: dict[tuple[str, str], int]) -> None:
        """
        Cache room numbers once their transaction has committed; the cache
        starts over past L{ROOM_KEY_CACHE_SIZE} rooms, so that a server that
        sees ever new rooms does not grow with them.
        """
        if len(self._room_keys) + len(new_keys) > ROOM_KEY_CACHE_SIZE:
            self._room_keys.clear()
        self._room_keys.update(new_keys)

    def _room_key(
        self,
        connection: sqlite3.Connection,
        app_id: str,
        room: str,
        new_keys: dict[tuple[str, str], int],
    ) -> int:
        """
        The number of a room, given one in this transaction if it has none.
        """
        name = (app_id, room)
        key = self._room_keys.get(name)
        if key is None:
            key = new_keys.get(name)
        if key is not None:
            return key
        connection.execute(
            "INSERT OR IGNORE INTO rooms (app_id, room) VALUES (?, ?)", name
        )
        (key,) = connection.execute(
            "SELECT room_key FROM rooms WHERE app_id = ? AND room = ?", name
        ).fetchone()
        new_keys[name] = key
        return int(key)

    def load(self, app_id: str, room: str) -> StoredDocument:
        rows = self._connection.execute(_ROOM_ROWS, (app_id, room)).fetchall()
        return _merged(rows)

    def replace_room(self, app_id: str, room: str, snapshot: bytes) -> None:
        """
        Replace every row of a room with one row holding C{snapshot}.
        """
        new_keys: dict[tuple[str, str], int] = {}

        def rewrite(connection: sqlite3.Connection) -> None:
            key = self._room_key(connection, app_id, room, new_keys)
            connection.execute("DELETE FROM updates WHERE room_key = ?", (key,))
            connection.execute(
                "INSERT INTO updates (room_key, data) VALUES (?, ?)", (key, snapshot)
            )

        self._transaction(rewrite)
        self._remember(new_keys)

    def checkpoint(self) -> None:
        """
        Copy the committed WAL into the database file without blocking the
        writer (a passive checkpoint), so that the WAL can start over.
        """
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def check(self) -> None:
        def touch(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
                (time.time(),),
            )

        self._transaction(touch)

    def list_apps(self) -> list[tuple[App, str]]:
        rows = self._connection.execute(
            "SELECT app_id, name, allowed_origins, description, owner_email, "
            "created_at, token_hash FROM apps ORDER BY created_at, app_id"
        ).fetchall()
        return [
            (
                App(
                    app_id=row[0],
                    name=row[1],
                    allowed_origins=tuple(json.loads(row[2])),
                    description=row[3],
                    owner_email=row[4],
                    created_at=row[5],
                ),
                row[6],
            )
            for row in rows
        ]

    def insert_app(self, app: App, token_hash: str) -> None:
        def insert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO apps (app_id, name, allowed_origins, description, "
                "owner_email, created_at, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*_app_fields(app), app.created_at, token_hash),
            )

        self._transaction(insert)

    def update_app(self, app: App) -> None:
        def update(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE apps SET name = ?, allowed_origins = ?, description = ?, "
                "owner_email = ? WHERE app_id = ?",
                (*_app_fields(app)[1:], app.app_id),
            )

        self._transaction(update)

    def set_token_hash(self, app_id: str, token_hash: str) -> None:
        def update(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE apps SET token_hash = ? WHERE app_id = ?", (token_hash, app_id)
            )

        self._transaction(update)

    def delete_app(self, app_id: str) -> None:
        def delete(connection: sqlite3.Connection) -> None:
            connection.execute(
                "DELETE FROM updates WHERE room_key IN "
                "(SELECT room_key FROM rooms WHERE app_id = ?)",
                (app_id,),
            )
            connection.execute("DELETE FROM rooms WHERE app_id = ?", (app_id,))
            connection.execute("DELETE FROM apps WHERE app_id = ?", (app_id,))

        self._transaction(delete)
        self._room_keys = {
            name: key for name, key in self._room_keys.items() if name[0] != app_id
        }


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    """
    Run the statements of C{script} one by one, inside the caller's
    transaction (C{executescript} would commit it first).
    """
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def _merged(rows: list[tuple[bytes]]) -> StoredDocument:
    if not rows:
        return StoredDocument(None, 0, 0)
    updates = [row[0] for row in rows]
    merged = updates[0] if len(updates) == 1 else merge_updates(*updates)
    return StoredDocument(merged, len(updates), len(merged))


def _app_fields(app: App) -> tuple[str, str, str, str | None, str | None]:
    return (
        app.app_id,
        app.name,
        json.dumps(list(app.allowed_origins)),
        app.description,
        app.owner_email,
    )


#: Commits after which the WAL is checkpointed at once rather than after
#: L{CHECKPOINT_DELAY}.
CHECKPOINT_AFTER_COMMITS = 256

#: Seconds after a commit by which it is checkpointed at the latest.
CHECKPOINT_DELAY = 1.0


class SQLiteStore:
    """
    The document and app store on one SQLite file, for the reactor.

    @param reactor: provides C{IReactorTime} and C{IReactorFromThreads}.
    @param around_commits: a context the commit notifications of one
        transaction run in (Kraken holds broadcast writes in it, so that each
        socket gets one write for the whole transaction).
    @ivar path: the database file.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        data_dir: Path,
        around_commits: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.path = data_dir / "kraken.sqlite3"
        self._around_commits = around_commits
        self._reactor = reactor
        self._writer = _Database(self.path, writer=True)
        self._reader = _Database(self.path, writer=False)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="kraken-store")
        # The rows of the next transaction, and how many of them each
        # listener asked for.
        self._pending: list[tuple[str, str, bytes]] = []
        self._listeners: dict[AppendListener, int] = {}
        self._flush_call: IDelayedCall | None = None
        self._uncheckpointed = 0
        self._checkpointing = False
        self._checkpoint_call: IDelayedCall | None = None
        self._closed = False

    def start(self) -> None:
        """
        Start the worker thread.
        """
        self._pool.start()

    def stop(self) -> Deferred[None]:
        """
        Commit every append asked for, then close the reader on its thread,
        the thread, and the writer (SQLite checkpoints as the last
        connection closes).
        """
        self._flush()
        self._closed = True
        if self._checkpoint_call is not None and self._checkpoint_call.active():
            self._checkpoint_call.cancel()
        self._checkpoint_call = None

        def close_writer(result: object) -> object:
            self._pool.stop()
            self._writer.close()
            return result

        closed = self._run(self._reader.close)
        closed.addBoth(close_writer)
        return closed

    def list_apps(self) -> list[tuple[App, str]]:
        """
        Read every app with its token hash, blocking; used once at start-up.
        """
        return self._writer.list_apps()

    def _run(self, work: Callable[..., T], *args: object) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def _inline(self, work: Callable[..., T], *args: object) -> Deferred[T]:
        """
        Do a write on the reactor now; its outcome as a Deferred.
        """
        if self._closed:
            return fail(StoreError("the store is closed"))
        try:
            result = work(*args)
        except Exception as error:
            return fail(StoreError(str(error)))
        self._committed()
        return succeed(result)

    # Documents

    def load(self, app_id: str, room: str) -> Deferred[StoredDocument]:
        return self._run(self._reader.load, app_id, room)

    def compact(self, app_id: str, room: str, snapshot: bytes) -> Deferred[None]:
        """
        Replace a room's rows with C{snapshot}, after committing the appends
        asked for before, so that none of them is lost or lands before it.
        """
        self._flush()
        return self._inline(self._writer.replace_room, app_id, room, snapshot)

    def check(self) -> Deferred[None]:
        return self._inline(self._writer.check)

    def append(
        self, app_id: str, room: str, update: bytes, listener: AppendListener
    ) -> None:
        """
        Queue an update; it is committed with the others of this reactor turn.
        """
        if self._closed:
            listener.appends_failed("the store is closed")
            return
        self._pending.append((app_id, room, update))
        self._listeners[listener] = self._listeners.get(listener, 0) + 1
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        rows, self._pending = self._pending, []
        listeners, self._listeners = self._listeners, {}
        if not rows:
            return

        try:
            self._writer.append_rows(rows)
        except Exception as error:
            self._write_failed(len(rows), listeners, error)
        else:
            self._committed()
            with self._around_commits():
                for listener, count in listeners.items():
                    listener.appends_committed(count)

    def _write_failed(
        self, count: int, listeners: dict[AppendListener, int], error: Exception
    ) -> None:
        self.log.error(
            "Store write of {count} updates failed: {reason}",
            count=count,
            reason=str(error),
        )
        for listener in listeners:
            listener.appends_failed(str(error))

    # Checkpoints

    def _committed(self) -> None:
        """
        Count a commit; checkpoint now if many are waiting, else soon.
        """
        self._uncheckpointed += 1
        if self._uncheckpointed >= CHECKPOINT_AFTER_COMMITS:
            self._checkpoint()
        elif self._checkpoint_call is None:
            self._checkpoint_call = self._reactor.callLater(
                CHECKPOINT_DELAY, self._checkpoint
            )

    def _checkpoint(self) -> None:
        if self._checkpointing or not self._pool.started:
            return
        if self._checkpoint_call is not None and self._checkpoint_call.active():
            self._checkpoint_call.cancel()
        self._checkpoint_call = None
        self._checkpointing = True
        self._uncheckpointed = 0

        done = self._run(self._reader.checkpoint)
        done.addErrback(self._checkpoint_failed)
        done.addBoth(self._checkpoint_done)

    def _checkpoint_failed(self, failure: Failure) -> None:
        self.log.warn(
            "WAL checkpoint failed (retried after the next commits): {reason}",
            reason=failure.getErrorMessage(),
        )

    def _checkpoint_done(self, _: object) -> None:
        self._checkpointing = False

    # Apps

    def insert_app(self, app: App, token_hash: str) -> Deferred[None]:
        return self._inline(self._writer.insert_app, app, token_hash)

    def update_app(self, app: App) -> Deferred[None]:
        return self._inline(self._writer.update_app, app)

    def set_token_hash(self, app_id: str, token_hash: str) -> Deferred[None]:
        return self._inline(self._writer.set_token_hash, app_id, token_hash)

    def delete_app(self, app_id: str) -> Deferred[None]:
        """
        Delete an app and its documents after committing the appends asked
        for before, so that none of them lands after the deletion.
        """
        self._flush()
        return self._inline(self._writer.delete_app, app_id)
