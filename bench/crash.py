"""
Crash safety by repetition: write from several clients, SIGKILL the server
at a random moment, restart it on the same data directory, and check that
every edit any client had received from it is still there.

Each round, writers in a few rooms each set new keys of a shared map as fast
as they can while readers (and the writers themselves) apply everything the
server sends them.  At a random moment (seeded, so a failing run can be
replayed with C{--seed}) the server is killed with SIGKILL; the clients read
what their sockets still hold, since the server sent that too.  After the
restart a fresh client per room loads the document, and SQLite's
C{PRAGMA integrity_check} must answer C{ok}.

    python bench/crash.py [--rounds 20] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import selectors
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycrdt import Doc, Map

from bench.harness import joined, report_json, started_kraken
from bench.wsraw import OP_BINARY, Frame, RawWebSocket, sync_payload, sync_update
from tests.server import KrakenProcess

ROOMS = ("alpha", "beta", "gamma")
WRITERS_PER_ROOM = 2
READERS_PER_ROOM = 1

#: Seconds after the clients have joined within which the kill comes.
KILL_WINDOW = (0.05, 1.2)

#: Seconds to drain the clients' sockets after the kill.
DRAIN_SECONDS = 3.0

#: Stored updates of a room before compaction; small, so that kills land
#: during compactions too.
COMPACT_AFTER_ROWS = 100


@dataclass
class Participant:
    """
    One client of a round: what it writes (writers only) and what it has
    received from the server.
    """

    room: str
    socket: RawWebSocket
    writer_index: int | None
    local: Doc[Map[int]] = field(default_factory=Doc)
    seen: Doc[Map[int]] = field(default_factory=Doc)
    written: int = 0
    broken: bool = False

    def received_keys(self) -> set[str]:
        return set(self.seen.get("edits", type=Map).keys())

    def take(self, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.opcode != OP_BINARY:
                continue
            payload = sync_payload(frame.payload)
            if payload is not None and payload[0] in (1, 2):
                self.seen.apply_update(payload[1])


@dataclass
class CrashReport:
    """
    What the rounds showed.

    @ivar lost: edits some client had received that a fresh client did not
        find after the restart, per round; all zero when nothing was lost.
    """

    seed: int
    rounds: int
    written: int = 0
    received: int = 0
    stored: int = 0
    lost: list[int] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    kill_after: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def edits_lost(self) -> int:
        return sum(self.lost)


def _join_round(
    server: KrakenProcess, token: str, round_index: int
) -> list[Participant]:
    participants = []
    for room in ROOMS:
        for index in range(WRITERS_PER_ROOM + READERS_PER_ROOM):
            writer = index if index < WRITERS_PER_ROOM else None
            raw = joined(server, room, token)
            participant = Participant(room, raw, writer)
            participant.take(raw.frames)
            raw.frames.clear()
            participants.append(participant)
    return participants


def _write_one(participant: Participant, round_index: int) -> str | None:
    if participant.writer_index is None or participant.broken:
        return None
    key = f"{round_index:03d}-{participant.writer_index}-{participant.written:06d}"
    edits = participant.local.get("edits", type=Map)
    before = participant.local.get_state()
    edits[key] = participant.written
    try:
        participant.socket.send_binary(
            sync_update(participant.local.get_update(before))
        )
    except OSError:
        participant.broken = True
        return None
    participant.written += 1
    return key


def _read_ready(
    selector: selectors.BaseSelector, timeout: float
) -> list[tuple[Participant, list[Frame]]]:
    ready = []
    for key, _ in selector.select(timeout):
        participant: Participant = key.data
        try:
            frames = participant.socket.read_available()
        except OSError:
            frames = []
            participant.socket.eof = True
        ready.append((participant, frames))
        if participant.socket.eof:
            selector.unregister(participant.socket.sock)
    return ready


def _drain(participants: list[Participant]) -> None:
    """
    Read what the clients' sockets still hold after the kill, up to the end
    of each stream.
    """
    selector = selectors.DefaultSelector()
    for participant in participants:
        if not participant.socket.eof:
            selector.register(
                participant.socket.sock, selectors.EVENT_READ, participant
            )
    deadline = time.monotonic() + DRAIN_SECONDS
    while selector.get_map() and time.monotonic() < deadline:
        for participant, frames in _read_ready(selector, 0.05):
            participant.take(frames)
    selector.close()


def _fresh_keys(server: KrakenProcess, token: str, room: str) -> set[str]:
    fresh = joined(server, room, token)
    doc: Doc[Map[int]] = Doc()
    for frame in fresh.frames:
        payload = sync_payload(frame.payload)
        if payload is not None and payload[0] == 1:
            doc.apply_update(payload[1])
    fresh.send_close()
    fresh.wait_close()
    fresh.drop()
    return set(doc.get("edits", type=Map).keys())


def integrity(path: Path) -> str:
    """
    SQLite's verdict on the database file.
    """
    connection = sqlite3.connect(path, timeout=10)
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    finally:
        connection.close()
    return "; ".join(str(row[0]) for row in rows)


def run_rounds(
    data_dir: Path, rounds: int, seed: int, log: bool = False
) -> CrashReport:
    """
    Run C{rounds} write-kill-restart rounds on C{data_dir}.
    """
    rng = random.Random(seed)
    report = CrashReport(seed=seed, rounds=rounds)
    written: dict[str, set[str]] = {room: set() for room in ROOMS}
    received: dict[str, set[str]] = {room: set() for room in ROOMS}
    started = time.monotonic()
    args = ["--compact-after-rows", str(COMPACT_AFTER_ROWS)]

    with started_kraken(data_dir, args) as server:
        token = server.register_app("crash")
        for round_index in range(rounds):
            participants = _join_round(server, token, round_index)
            selector = selectors.DefaultSelector()
            for participant in participants:
                selector.register(
                    participant.socket.sock, selectors.EVENT_READ, participant
                )
            kill_after = rng.uniform(*KILL_WINDOW)
            kill_at = time.monotonic() + kill_after
            while time.monotonic() < kill_at:
                for participant in participants:
                    key = _write_one(participant, round_index)
                    if key is not None:
                        written[participant.room].add(key)
                for participant, frames in _read_ready(selector, 0.002):
                    participant.take(frames)
            selector.close()
            server.stop(signal.SIGKILL)

            _drain(participants)
            for participant in participants:
                received[participant.room] |= participant.received_keys()
                participant.socket.drop()
            server.start()

            lost = 0
            stored = 0
            for room in ROOMS:
                fresh = _fresh_keys(server, token, room)
                stored += len(fresh)
                lost += len(received[room] - fresh)
                unknown = fresh - written[room]
                assert not unknown, f"seed {seed}: keys nobody wrote: {unknown}"
            verdict = integrity(server.data_dir / "kraken.sqlite3")
            report.lost.append(lost)
            report.integrity.append(verdict)
            report.kill_after.append(round(kill_after, 3))
            report.stored = stored
            if log:
                print(
                    f"round {round_index}: killed after {kill_after:.3f} s, "
                    f"{stored} edits stored, {lost} lost, integrity {verdict}",
                    flush=True,
                )

    report.written = sum(len(keys) for keys in written.values())
    report.received = sum(len(keys) for keys in received.values())
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> CrashReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = (
        args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    )
    print(f"seed {seed}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kraken-crash-") as data:
        report = run_rounds(Path(data) / "data", args.rounds, seed, log=True)
    print(
        report_json(
            report,
            edits_lost=report.edits_lost,
            integrity=sorted(set(report.integrity)),
        )
    )
    return report


if __name__ == "__main__":
    main()
