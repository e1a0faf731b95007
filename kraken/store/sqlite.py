"""
The embedded default store: one SQLite database in the data directory.

SQLite calls block, so they run on one dedicated worker thread, in the order
they were asked for; the reactor only queues work and receives results.
Appends are committed in groups: while one transaction is being written, new
updates collect, and the next transaction takes them all.  Under load that
means few, larger commits; when idle, an update is committed at once.

The database runs in WAL mode with C{synchronous=NORMAL}: a committed update
survives the server being killed, but the last commits before a power
failure or kernel crash may be lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pycrdt import merge_updates
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from kraken.apps import App
from kraken.store import StoredDocument, StoreError

SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_id TEXT NOT NULL,
    room TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_room ON updates (app_id, room, id);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    checked_at REAL NOT NULL
);
"""

T = TypeVar("T")


class _Database:
    """
    The blocking half: one SQLite connection, used only on the worker thread
    (and once at start-up, before that thread exists).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Documents are private: the database, and the journal files SQLite
        # creates with the same mode, are readable by their owner only.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}; this Kraken knows "
                f"versions up to {SCHEMA_VERSION}"
            )
        self._connection.executescript(_SCHEMA)
        self._connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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
        def insert(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "INSERT INTO updates (app_id, room, data) VALUES (?, ?, ?)", rows
            )

        self._transaction(insert)

    def load(self, app_id: str, room: str) -> StoredDocument:
        rows = self._connection.execute(
            "SELECT data FROM updates WHERE app_id = ? AND room = ? ORDER BY id",
            (app_id, room),
        ).fetchall()
        return _merged(rows)

    def compact(self, app_id: str, room: str) -> StoredDocument:
        def rewrite(connection: sqlite3.Connection) -> StoredDocument:
            rows = connection.execute(
                "SELECT id, data FROM updates WHERE app_id = ? AND room = ? "
                "ORDER BY id",
                (app_id, room),
            ).fetchall()
            if len(rows) < 2:
                return _merged([(data,) for _, data in rows])

            last_id = rows[-1][0]
            snapshot = _merged([(data,) for _, data in rows])
            connection.execute(
                "DELETE FROM updates WHERE app_id = ? AND room = ? AND id < ?",
                (app_id, room, last_id),
            )
            connection.execute(
                "UPDATE updates SET data = ? WHERE id = ?", (snapshot.update, last_id)
            )
            return StoredDocument(snapshot.update, 1, snapshot.size)

        return self._transaction(rewrite)

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
            connection.execute("DELETE FROM updates WHERE app_id = ?", (app_id,))
            connection.execute("DELETE FROM apps WHERE app_id = ?", (app_id,))

        self._transaction(delete)


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


@dataclass(slots=True)
class _PendingAppend:
    app_id: str
    room: str
    update: bytes
    committed: Deferred[None]


class SQLiteStore:
    """
    The document and app store on one SQLite file, for the reactor.

    @ivar path: the database file.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFromThreads, data_dir: Path) -> None:
        self.path = data_dir / "kraken.sqlite3"
        self._reactor = reactor
        self._database = _Database(self.path)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="kraken-store")
        self._pending: list[_PendingAppend] = []
        self._writing = False
        self._idle_waiters: list[Deferred[None]] = []

    def start(self) -> None:
        """
        Start the worker thread.
        """
        self._pool.start()

    def stop(self) -> Deferred[None]:
        """
        Finish every write asked for, then close the database and the thread.
        """
        finished = self.wait_for_writes()

        def stop_pool(result: object) -> object:
            self._pool.stop()
            return result

        def close(_: object) -> Deferred[None]:
            closed = self._run(self._database.close)
            closed.addBoth(stop_pool)
            return closed

        finished.addCallback(close)
        return finished

    def wait_for_writes(self) -> Deferred[None]:
        """
        Fire once no append is pending or being written.
        """
        if not self._writing and not self._pending:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def list_apps(self) -> list[tuple[App, str]]:
        """
        Read every app with its token hash, blocking; used once at start-up.
        """
        return self._database.list_apps()

    def _run(self, work: Callable[..., T], *args: object) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def load(self, app_id: str, room: str) -> Deferred[StoredDocument]:
        return self._run(self._database.load, app_id, room)

    def compact(self, app_id: str, room: str) -> Deferred[StoredDocument]:
        return self._run(self._database.compact, app_id, room)

    def check(self) -> Deferred[None]:
        return self._run(self._database.check)

    def append(self, app_id: str, room: str, update: bytes) -> Deferred[None]:
        committed: Deferred[None] = Deferred()
        self._pending.append(_PendingAppend(app_id, room, update, committed))
        if not self._writing:
            self._write_pending()
        return committed

    def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._writing = True
        rows = [(item.app_id, item.room, item.update) for item in batch]
        written = self._run(self._database.append_rows, rows)
        written.addBoth(self._written, batch)

    def _written(self, result: Failure | None, batch: list[_PendingAppend]) -> None:
        self._writing = False
        if isinstance(result, Failure):
            self.log.error(
                "Store write of {count} updates failed: {reason}",
                count=len(batch),
                reason=result.getErrorMessage(),
            )
        for item in batch:
            if isinstance(result, Failure):
                item.committed.errback(StoreError(result.getErrorMessage()))
            else:
                item.committed.callback(None)

        if self._pending:
            self._write_pending()
        else:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def insert_app(self, app: App, token_hash: str) -> Deferred[None]:
        return self._run(self._database.insert_app, app, token_hash)

    def update_app(self, app: App) -> Deferred[None]:
        return self._run(self._database.update_app, app)

    def set_token_hash(self, app_id: str, token_hash: str) -> Deferred[None]:
        return self._run(self._database.set_token_hash, app_id, token_hash)

    def delete_app(self, app_id: str) -> Deferred[None]:
        """
        Delete an app and its documents once the appends asked for before
        are written, so that none of them lands after the deletion.
        """
        written = self.wait_for_writes()
        written.addCallback(lambda _: self._run(self._database.delete_app, app_id))
        return written
