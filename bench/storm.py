"""
Reconnect storm: hundreds of stock y-websocket clients in dozens of rooms,
cut off by a server restart (SIGTERM, then a start on the same port and
data), all reconnect and converge.

Before the restart every room holds a line written by one of its clients;
while the server is down another client of each room edits its document.
The script reports how long after the new server listens every client is
connected and synced again, and when every client shows the room's text with
the offline edit exactly once; and the new server's peak memory (VmHWM).

    python bench/storm.py [--clients 400] [--rooms 40]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import report_json, scratch_kraken
from bench.wsraw import rss_kib
from tests.interop.yclients import INTEROP_DIR, Client, NodeDriver
from tests.server import KrakenProcess

#: Seconds every client may take to reconnect and converge.
CONVERGE_TIMEOUT = 60.0


@dataclass
class StormReport:
    """
    What a storm showed.

    @ivar reconnect_seconds: from the new server listening until every
        client is connected and synced.
    @ivar converge_seconds: until every client shows its room's final text.
    @ivar peak_rss_kib: the new server's peak RSS (VmHWM) by then.
    @ivar refused: handshakes the new server refused (caps, shutdown).
    @ivar opens: WebSocket opens per client, summed (two each when every
        client reconnected once).
    """

    clients: int
    rooms: int
    sigterm_exit: int
    reconnect_seconds: float
    converge_seconds: float
    peak_rss_kib: int
    rss_before_kib: int
    refused: int
    opens: int
    converged: int


def room_of(index: int, rooms: int) -> str:
    return f"storm-{index % rooms:03d}"


def storm(
    driver: NodeDriver, server: KrakenProcess, clients: int, rooms: int
) -> StormReport:
    """
    Connect C{clients} stock clients to C{rooms} rooms, restart the server
    and wait for all of them to converge.
    """
    token = server.register_app("storm")
    members: dict[str, list[Client]] = {room_of(i, rooms): [] for i in range(rooms)}
    for index in range(clients):
        room = room_of(index, rooms)
        members[room].append(
            driver.client(f"c{index}", url=server.ws_url, room=room, token=token)
        )
    everyone = [client for room in members.values() for client in room]
    for client in everyone:
        client.wait_synced(timeout=CONVERGE_TIMEOUT)

    expected: dict[str, str] = {}
    for room, room_clients in members.items():
        line = f"{room} online;"
        room_clients[0].insert(0, line)
        expected[room] = line
    for room, room_clients in members.items():
        for client in room_clients:
            client.wait_text(expected[room], timeout=CONVERGE_TIMEOUT)
    assert server.process is not None
    rss_before = rss_kib(server.process.pid)

    exit_status = server.stop(signal.SIGTERM)
    for room, room_clients in members.items():
        editor = room_clients[-1]
        editor.wait_status("disconnected", timeout=CONVERGE_TIMEOUT)
        edit = f" {room} offline;"
        editor.insert(len(expected[room]), edit)
        expected[room] += edit

    server.start()
    restarted = time.monotonic()
    assert server.process is not None
    for client in everyone:
        client.wait_status("connected", timeout=CONVERGE_TIMEOUT)
        client.wait_synced(timeout=CONVERGE_TIMEOUT)
    reconnected = time.monotonic() - restarted
    converged = 0
    for room, room_clients in members.items():
        for client in room_clients:
            client.wait_text(expected[room], timeout=CONVERGE_TIMEOUT)
            converged += 1
    converge_seconds = time.monotonic() - restarted

    peak = rss_kib(server.process.pid, "VmHWM")
    refused = server.log_text().count("Handshake refused")
    opens = sum(int(client.stats()["opens"]) for client in everyone)
    return StormReport(
        clients=clients,
        rooms=rooms,
        sigterm_exit=exit_status,
        reconnect_seconds=reconnected,
        converge_seconds=converge_seconds,
        peak_rss_kib=peak,
        rss_before_kib=rss_before,
        refused=refused,
        opens=opens,
        converged=converged,
    )


def main(argv: list[str] | None = None) -> StormReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clients", type=int, default=400)
    parser.add_argument("--rooms", type=int, default=40)
    args = parser.parse_args(argv)

    with (
        scratch_kraken("kraken-storm-") as server,
        NodeDriver.start(cwd=INTEROP_DIR) as driver,
    ):
        report = storm(driver, server, args.clients, args.rooms)
    print(report_json(report))
    return report


if __name__ == "__main__":
    main()
