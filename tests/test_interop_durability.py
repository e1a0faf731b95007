"""
Whatever a stock client has received from Kraken survives a restart, a
graceful one (SIGTERM) or a crash (SIGKILL), and providers ride through a
graceful restart on their own.

Providers that were connected before a restart are destroyed while the server
is down: on reconnect they would send their state back to the server and hide
any loss.  Only a fresh provider checks what the server kept.
"""

from __future__ import annotations

import signal
import time

from tests.interop.yclients import Client, NodeDriver
from tests.server import KrakenProcess

#: Seconds any single condition in these tests may take.
DEADLINE = 10.0


def fresh_view(
    kraken: KrakenProcess, driver: NodeDriver, room: str, token: str
) -> Client:
    """
    A new provider, synced with the server, to read what the server has.
    """
    client = driver.client("fresh", url=kraken.ws_url, room=room, token=token)
    client.wait_synced(timeout=DEADLINE)
    return client


def synced(driver: NodeDriver, kraken: KrakenProcess, token: str) -> list[Client]:
    """
    A writer and a reader of room "log", both synced, retrying fast.
    """
    clients = [
        driver.client(
            client_id,
            url=kraken.ws_url,
            room="log",
            token=token,
            maxBackoffTime=300,
        )
        for client_id in ("writer", "reader")
    ]
    for client in clients:
        client.wait_synced()
    return clients


def test_received_edits_survive_a_sigterm_restart(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Edits a peer received are all there after the server is stopped with SIGTERM.
    """
    token = kraken.register_app("term-app")
    writer, reader = synced(driver, kraken, token)
    expected = ""
    for index in range(30):
        chunk = f"line {index}\n"
        writer.insert(len(expected), chunk)
        expected += chunk
    writer.map_set("lines", 30)
    reader.delete(0, len("line 0\n"))
    expected = expected[len("line 0\n") :]
    reader.map_set("edited", True)
    reader.wait_map("lines", 30)
    writer.wait_map("edited", True)
    writer.wait_text(expected)

    # twistd ends a SIGTERM shutdown by re-raising the signal on itself.
    assert kraken.stop(signal.SIGTERM) == -signal.SIGTERM
    kraken.wait_for_log(r"Server Shut Down")
    writer.destroy()
    reader.destroy()
    kraken.start()

    fresh = fresh_view(kraken, driver, "log", token)
    assert fresh.text() == expected
    assert fresh.map() == {"lines": 30, "edited": True}


def test_received_edit_survives_a_sigkill_right_after_delivery(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    An edit is kept through a SIGKILL sent the moment a peer has received it.
    """
    token = kraken.register_app("kill-app")
    writer, reader = synced(driver, kraken, token)
    writer.insert(0, "first")
    reader.wait_text("first")
    writer.insert(5, " and last")
    writer.map_set("done", True)
    reader.wait_map("done", True)

    kraken.stop(signal.SIGKILL)
    writer.destroy()
    reader.destroy()
    kraken.start()

    fresh = fresh_view(kraken, driver, "log", token)
    assert fresh.text() == "first and last"
    assert fresh.map() == {"done": True}


def test_everything_a_peer_received_survives_a_sigkill_mid_stream(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A SIGKILL while edits stream in keeps every edit the peer had received.
    """
    token = kraken.register_app("stream-app")
    writer, reader = synced(driver, kraken, token)
    written = ""
    received = ""
    for index in range(400):
        chunk = f"{index:03d},"
        writer.insert(len(written), chunk)
        written += chunk
        received = reader.text()
        if received.count(",") >= 40:
            break
    kraken.stop(signal.SIGKILL)
    assert received.count(",") >= 40, "the reader fell too far behind to test"

    # Whatever reached the reader before the kill; nothing arrives after it.
    received = reader.text()
    writer.destroy()
    reader.destroy()
    kraken.start()

    fresh = fresh_view(kraken, driver, "log", token)
    kept = fresh.text()
    assert kept.startswith(received), (len(kept), len(received))
    assert written.startswith(kept)


def test_graceful_shutdown_closes_with_1001_and_providers_resume_without_duplicates(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    SIGTERM closes connections with 1001; providers reconnect and converge.
    """
    token = kraken.register_app("resume-app")
    writer, reader = synced(driver, kraken, token)
    writer.insert(0, "hello")
    reader.wait_text("hello")

    kraken.stop(signal.SIGTERM)
    writer.wait_close(1001)
    reader.wait_close(1001)
    # An edit made while the server is away is sent once it is back.
    writer.insert(5, " world")

    started = time.monotonic()
    kraken.start()
    for client in (writer, reader):
        client.wait_status("connected", timeout=DEADLINE)
        client.wait_synced(timeout=DEADLINE)
    reader.wait_text("hello world", timeout=DEADLINE)
    reader.insert(11, "!")
    writer.wait_text("hello world!")
    assert time.monotonic() - started < DEADLINE

    fresh = fresh_view(kraken, driver, "log", token)
    assert fresh.text() == "hello world!"
    for client in (writer, reader):
        stats = client.stats()
        assert stats["opens"] == 2, (client.id, stats)
        # The first close is the server's; any others are attempts that found
        # the server still down.
        codes = [close["code"] for close in stats["closes"]]
        assert codes[0] == 1001, stats
        assert codes[1:] == [1006] * stats["connectionErrors"], stats
