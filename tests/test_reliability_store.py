"""
Store faults: a real full disk under a twistd Kraken (a small tmpfs), and
faults injected through the store interface of an in-process Kraken for what
a real file system cannot show.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from pycrdt import Doc, Text
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, fail

from bench.crash import integrity
from bench.harness import joined, started_kraken, wait_until
from bench.wsraw import OP_BINARY, Frame, sync_payload, sync_update
from kraken.store import AppendListener, StoredDocument, StoreError
from kraken.sync import AwarenessMessage
from tests import wsclients
from tests.interop.yclients import NodeDriver
from tests.server import KrakenProcess
from tests.wsclients import APP_ID, ROOM, Kraken, Start, SyncClient, within

#: The in-process Kraken fixture of the WebSocket tests.
in_process_kraken = wsclients.start_kraken

#: Seconds any single condition may take.
DEADLINE = 10.0

#: The tmpfs size: room for the database, not for the filler.
DISK_SIZE = "2m"

#: Text written while the disk is full.
MARKER = "written-while-the-disk-is-full"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """
    A 2 MiB tmpfs mounted for this test, unmounted afterwards.
    """
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        unmounted = subprocess.run(
            ["umount", str(mount_point)], capture_output=True, check=False
        )
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path, limit: int = 64 * 2**20) -> int:
    """
    Write zeros to C{path} until the file system is full; return the bytes
    written.
    """
    written = 0
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as filler:
        while written < limit:
            try:
                written += filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
        with contextlib.suppress(OSError):
            os.fsync(filler.fileno())
    return written


def text_of(frames: list[Frame]) -> str:
    """
    The text of the document that the step 2 messages among C{frames} carry.
    """
    doc: Doc[Text] = Doc()
    for frame in frames:
        payload = sync_payload(frame.payload)
        if payload is not None and payload[0] == 1:
            doc.apply_update(payload[1])
    return str(doc.get("text", type=Text))


def health(server: KrakenProcess) -> tuple[int, dict[str, str], object]:
    """
    The status, headers and JSON body of C{GET /health}.
    """
    answer = server.request("GET", "/health", token=None)
    return answer.status, answer.headers, answer.json


def test_full_disk_refuses_updates_and_recovers_without_restart(
    small_disk: Path, driver: NodeDriver
) -> None:
    """
    On a full disk an update is not forwarded, its room's connections are
    closed with 1011 and /health answers 503 with the reason; once space is
    freed /health is 200 again, the stock clients reconnect and converge
    without a restart, and what was stored before is intact.
    """
    with started_kraken(small_disk / "data") as server:
        assert server.process is not None
        pid = server.process.pid
        token = server.register_app("disk")
        alice, bob = (
            driver.client(
                name, url=server.ws_url, room="notes", token=token, maxBackoffTime=300
            )
            for name in ("alice", "bob")
        )
        for client in (alice, bob):
            client.wait_synced()
        alice.insert(0, "stored before;")
        bob.wait_text("stored before;")
        watcher = joined(server, "notes", token)
        filler = small_disk / "filler"

        assert fill(filler) > 0
        alice.insert(len("stored before;"), MARKER)

        alice.wait_close(1011, timeout=DEADLINE)
        bob.wait_close(1011, timeout=DEADLINE)
        assert watcher.wait_close() == 1011
        server.wait_for_log("Store write of")
        assert not [f for f in watcher.frames if MARKER.encode() in f.payload]
        assert MARKER not in bob.text()
        status, headers, body = health(server)
        assert status == 503, body
        assert headers.get("Retry-After", "").isdigit(), headers
        assert isinstance(body, dict) and body["status"] == "unavailable", body
        assert "full" in str(body["store"]).lower(), body
        assert MARKER not in bob.text()

        filler.unlink()
        wait_until(lambda: health(server)[0] == 200, DEADLINE, step=0.1)
        bob.wait_text("stored before;" + MARKER, timeout=DEADLINE)

        assert server.process is not None and server.process.pid == pid
        assert integrity(small_disk / "data" / "kraken.sqlite3") == "ok"
        fresh = driver.client("fresh", url=server.ws_url, room="notes", token=token)
        fresh.wait_synced()
        assert fresh.text() == "stored before;" + MARKER
        watcher.drop()


def test_full_disk_keeps_stored_documents_loadable_and_damages_nothing(
    small_disk: Path,
) -> None:
    """
    While the disk is full, documents stored before load and sync in full for
    new clients, and the database passes SQLite's integrity check after.
    """
    with started_kraken(small_disk / "data") as server:
        token = server.register_app("disk")
        writer = joined(server, "kept", token)
        reader = joined(server, "kept", token)
        doc: Doc[Text] = Doc()
        text = doc.get("text", type=Text)
        text.insert(0, "kept text")
        writer.send_binary(sync_update(doc.get_update()))
        reader.wait_for(lambda f: f.opcode == OP_BINARY and b"kept text" in f.payload)
        for client in (writer, reader):
            client.send_close()
            client.wait_close()
            client.drop()
        fill(small_disk / "filler")

        late = joined(server, "kept", token)

        assert text_of(late.frames) == "kept text"
        late.drop()
        (small_disk / "filler").unlink()
        assert integrity(small_disk / "data" / "kraken.sqlite3") == "ok"


async def open_client(kraken: Kraken, room: str = ROOM) -> SyncClient:
    """
    A connection that is open but has not waited for the server's welcome.
    """
    return await kraken.open(f"/doc/{room}?token={kraken.token}", SyncClient)


async def eventually(condition: Callable[[], bool]) -> None:
    """
    Wait until C{condition} holds, polling the reactor's clock.
    """
    for _ in range(int(DEADLINE / 0.02)):
        if condition():
            return
        await task.deferLater(reactor, 0.02, lambda: None)
    raise TimeoutError("condition not met in time")


async def leave(*clients: SyncClient) -> None:
    """
    Close C{clients} and wait until each has closed.
    """
    for client in clients:
        client.sendClose()
        await within(client.closed)


async def stored_room(kraken: Kraken, text: str) -> None:
    """
    Store C{text} in the room and wait until the room has left memory.
    """
    writer, reader = await kraken.synced(), await kraken.synced()
    writer.insert(text)
    await reader.wait_text(text)
    await leave(writer, reader)
    await eventually(lambda: kraken.service.rooms.get(f"{APP_ID}:{ROOM}") is None)


def stored_rows(kraken: Kraken) -> list[bytes]:
    """
    The stored update rows of the test room, read from the SQLite file.
    """
    path = kraken.service.store.path
    connection = sqlite3.connect(path, timeout=10)
    try:
        rows = connection.execute(
            "SELECT data FROM updates JOIN rooms USING (room_key) "
            "WHERE app_id = ? AND room = ? ORDER BY id",
            (APP_ID, ROOM),
        ).fetchall()
    finally:
        connection.close()
    return [bytes(row[0]) for row in rows]


@pytest_twisted.ensureDeferred
async def test_room_that_cannot_be_loaded_closes_1011_and_writes_nothing(
    in_process_kraken: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    When the store cannot load a room, its connection is closed with 1011,
    an update it sends is not stored, and the stored document is intact once
    loading works again.
    """
    kraken = await in_process_kraken()
    await stored_room(kraken, "stored text")
    rows_before = stored_rows(kraken)
    store = kraken.service.store
    appended: list[str] = []
    original_append = store.append

    def recording_append(
        app_id: str, room: str, update: bytes, listener: AppendListener
    ) -> None:
        appended.append(room)
        original_append(app_id, room, update, listener)

    def failing_load(app_id: str, room: str) -> Deferred[StoredDocument]:
        return fail(StoreError("disk I/O error"))

    monkeypatch.setattr(store, "append", recording_append)
    monkeypatch.setattr(store, "load", failing_load)

    client = await open_client(kraken)
    client.insert("overwrite")
    code = await within(client.closed)

    assert code == 1011
    assert appended == []
    assert stored_rows(kraken) == rows_before
    monkeypatch.undo()
    again = await kraken.synced()
    assert str(again.text) == "stored text"


@pytest_twisted.ensureDeferred
async def test_stored_document_that_cannot_be_read_is_never_overwritten(
    in_process_kraken: Start,
) -> None:
    """
    A damaged stored row makes the room fail to load with 1011 every time,
    and no update of a client replaces or joins the stored rows.
    """
    kraken = await in_process_kraken()
    await stored_room(kraken, "stored text")
    connection = sqlite3.connect(kraken.service.store.path, timeout=10)
    with connection:
        connection.execute(
            "INSERT INTO updates (room_key, data) SELECT room_key, ? FROM rooms "
            "WHERE app_id = ? AND room = ?",
            (b"\x01\x02garbage", APP_ID, ROOM),
        )
    connection.close()
    rows_before = stored_rows(kraken)

    for _ in range(2):
        client = await open_client(kraken)
        client.insert("overwrite")
        assert await within(client.closed) == 1011

    assert stored_rows(kraken) == rows_before


@pytest_twisted.ensureDeferred
async def test_update_whose_commit_fails_reaches_no_one(
    in_process_kraken: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An update whose commit is pending is held from the others, from a
    newcomer's step 2 too; when the commit fails, every member is closed
    with 1011 and none has seen it, and the store keeps what it had.
    """
    kraken = await in_process_kraken()
    writer, reader = await kraken.synced(), await kraken.synced()
    writer.insert("kept")
    await reader.wait_text("kept")
    held: list[AppendListener] = []

    def held_append(
        app_id: str, room: str, update: bytes, listener: AppendListener
    ) -> None:
        held.append(listener)

    monkeypatch.setattr(kraken.service.store, "append", held_append)
    writer.insert(" lost")
    await eventually(lambda: bool(held))
    newcomer = await kraken.connect()
    newcomer.send(b"\x00\x00\x01\x00")
    newcomer.send(b"\x03")
    await newcomer.wait_until(
        lambda: any(isinstance(m, AwarenessMessage) for m in newcomer.messages())
    )

    held[0].appends_failed("database or disk is full")
    codes = [await within(client.closed) for client in (writer, reader, newcomer)]

    assert codes == [1011, 1011, 1011]
    assert str(reader.text) == "kept"
    assert "lost" not in str(newcomer.text)
    monkeypatch.undo()
    assert await kraken.stored_text() == "kept"
    fresh = await kraken.synced()
    assert str(fresh.text) == "kept"
