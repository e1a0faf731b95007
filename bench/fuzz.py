"""
Hostile input against a live Kraken: mutated sync, awareness and signaling
frames from many connections, while well-behaved clients in the same rooms
keep writing and reading.

Each fuzz connection sends one mutated frame followed by a WebSocket ping and
waits for the pong (the frame was handled and the connection lives) or a
close (the frame was refused; the connection opens again).  Meanwhile one
good client per room writes a new map key every 100 ms and another must
receive each within a deadline.  At the end the server must still run and,
after a restart, every room must load and hold every good write.

    python bench/fuzz.py [--frames 10000] [--seconds 60] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycrdt import Doc, Map, Text

from bench.harness import joined, report_json, started_kraken
from bench.wsraw import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWebSocket,
    Refused,
    awareness,
    frame_bytes,
    step1,
    step2,
    sync_payload,
    sync_update,
    var_bytes,
    var_uint,
)
from tests.server import KrakenProcess

#: The root map the good clients write to; a name mutations will not hit.
GOOD_ROOT = "good-keys-9f3c"

#: Seconds between two good writes in a room.
GOOD_EVERY = 0.1

#: Seconds a good write may take to reach the good reader.
GOOD_DEADLINE = 5.0

#: Seconds a fuzz frame may wait for its pong or close.
FRAME_DEADLINE = 5.0

#: Close codes a fuzz frame may earn (SPEC.md's list, less the admin ones).
EXPECTED_CODES = {1002, 1007, 1008, 1009, 4413}

#: Log lines that mean a handler failed in a way nobody planned.
CRASH_MARKERS = ("Unexpected error", "Traceback", "Unhandled")


# The seed corpus


def _text_update(content: str) -> tuple[bytes, bytes]:
    doc: Doc[Text] = Doc()
    doc.get("fuzz", type=Text).insert(0, content)
    return doc.get_update(), doc.get_state()


def _map_and_delete_update() -> bytes:
    doc: Doc[Any] = Doc()
    entries = doc.get("fuzz-map", type=Map)
    entries["a"] = 1
    entries["b"] = {"nested": [1, 2, "three"]}
    text = doc.get("fuzz", type=Text)
    text.insert(0, "hello world")
    del text[2:7]
    return doc.get_update()


def binary_corpus() -> list[bytes]:
    """
    Valid y-websocket messages of every kind a client sends.
    """
    small, state = _text_update("fuzz")
    large, _ = _text_update("y" * 1000)
    mixed = _map_and_delete_update()
    return [
        step1(),
        step1(state),
        step2(small),
        step2(mixed),
        sync_update(small),
        sync_update(large),
        sync_update(mixed),
        awareness([(11, 1, {"user": {"name": "fuzz", "color": "#ff0000"}})]),
        awareness([(12, 2, {"cursor": {"anchor": 3, "head": 5}}), (13, 1, None)]),
        awareness([(14, 1, None)]),
        b"\x03",
    ]


def text_corpus() -> list[str]:
    """
    Valid signaling messages.
    """

    def envelope(signal: dict[str, Any]) -> str:
        return json.dumps({"kraken": "signal", "signal": signal})

    return [
        envelope({"type": 0, "from": "fuzz-peer", "name": "Fuzz", "meta": {"a": 1}}),
        envelope({"type": 0, "from": "fuzz-2", "name": "F", "secret": "s" * 20}),
        envelope(
            {"type": 1, "to": "fuzz-peer", "sdp": {"type": "offer", "sdp": "v=0"}}
        ),
        envelope({"type": 2, "to": "fuzz-peer", "sdp": {"type": "answer", "sdp": "v"}}),
        envelope({"type": 3, "to": "fuzz-peer", "candidate": {"candidate": "c"}}),
        envelope({"type": 4, "reason": "bye"}),
    ]


# Mutations


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """
    A random JSON value, sometimes deeply nested.
    """
    kind = rng.randrange(8 if depth < 6 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**53, 2**64, 1.5, 1e308, -0.0])
    if kind == 3:
        return "".join(
            chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(20))
        )
    if kind == 4:
        return rng.choice(["kraken", "signal", "type", "from", "to", "", "\u0000"])
    if kind == 5:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        keys = ["kraken", "signal", "type", "from", "to", "name", "meta", "sdp", "x"]
        return {
            rng.choice(keys): random_json(rng, depth + 1)
            for _ in range(rng.randrange(5))
        }
    return {"kraken": "signal", "signal": random_json(rng, depth + 1)}


def _big_varint(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return var_uint(rng.choice([2**31, 2**32, 2**53 - 1, 2**53, 2**63]))
    if choice == 1:
        return b"\xff" * rng.randrange(1, 12) + b"\x01"
    if choice == 2:
        return b"\x80" * rng.randrange(1, 12)
    if choice == 3:
        return var_uint(rng.randrange(1, 1 << 20))
    if choice == 4:
        return b"\x00"
    return var_uint(rng.randrange(128))


def _length_lie(frame: bytes, rng: random.Random) -> bytes:
    """
    Replace the length of a sync or awareness body with a wrong one.
    """
    if frame[:1] == b"\x00" and len(frame) > 2:
        payload = sync_payload(frame)
        if payload is not None:
            return frame[:2] + _big_varint(rng) + payload[1]
    if frame[:1] == b"\x01" and len(frame) > 1:
        position = rng.randrange(1, len(frame))
        return frame[:position] + _big_varint(rng) + frame[position + 1 :]
    return _big_varint(rng) + frame


def _flip_bits(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randrange(1, 9)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _mutate_inside(frame: bytes, rng: random.Random) -> bytes:
    """
    Mutate the update (or state vector) inside a sync message, or a state
    inside an awareness message, and frame it again with a true length, so
    that the mutation reaches the CRDT library and the awareness decoder.
    """
    payload = sync_payload(frame)
    if payload is not None and payload[1]:
        sync_type, body = payload
        inner = bytearray(body)
        choice = rng.randrange(3)
        if choice == 0:
            _flip_bits(inner, rng)
        elif choice == 1:
            del inner[rng.randrange(len(inner)) :]
        else:
            position = rng.randrange(len(inner) + 1)
            inner[position:position] = rng.randbytes(rng.randrange(1, 9))
        return bytes([0, sync_type]) + var_bytes(bytes(inner))
    if rng.random() < 0.7:
        state = json.dumps(random_json(rng))
    else:
        state = rng.randbytes(rng.randrange(32)).decode("utf-8", "replace")
    return awareness_raw(rng.randrange(2**53), rng.randrange(2**53), state)


def awareness_raw(client_id: int, clock: int, state: str) -> bytes:
    """
    An awareness message with one entry whose state is any text.
    """
    body = var_uint(1) + var_uint(client_id) + var_uint(clock)
    body += var_bytes(state.encode("utf-8"))
    return var_uint(1) + var_bytes(body)


def mutate_binary(frame: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """
    One mutation of a valid message: bit flips, a truncation, an insertion,
    a length that lies, garbage after a valid prefix, a splice of two
    messages, another message type, a mutation inside a well-framed message,
    or random bytes.
    """
    data = bytearray(frame)
    kind = rng.randrange(10)
    if kind == 0 and data:
        _flip_bits(data, rng)
        return bytes(data)
    if kind == 1:
        return bytes(data[: rng.randrange(len(data) + 1)])
    if kind == 2:
        position = rng.randrange(len(data) + 1)
        noise = rng.randbytes(rng.randrange(1, 17))
        return bytes(data[:position] + noise + data[position:])
    if kind == 3:
        return _length_lie(frame, rng)
    if kind == 4:
        prefix = bytes(data[: rng.randrange(1, 4)])
        return prefix + rng.randbytes(rng.randrange(257))
    if kind == 5:
        other = rng.choice(corpus)
        return bytes(data[: rng.randrange(len(data) + 1)]) + other
    if kind == 6:
        return var_uint(rng.randrange(12)) + bytes(data[1:])
    if kind in (7, 8):
        return _mutate_inside(frame, rng)
    return rng.randbytes(rng.randrange(1, 64))


def mutate_text(message: str, rng: random.Random) -> tuple[bytes, bool]:
    """
    One mutation of a signaling message: random JSON, a mutated envelope,
    or mutated bytes (which may not be UTF-8).

    @return: the payload and whether it goes in a text frame.
    """
    kind = rng.randrange(5)
    if kind == 0:
        return json.dumps(random_json(rng)).encode("utf-8"), True
    if kind == 1:
        envelope = json.loads(message)
        signal = envelope["signal"]
        key = rng.choice([*signal, "type", "from", "to", "extra"])
        if rng.random() < 0.3:
            signal.pop(key, None)
        else:
            signal[key] = random_json(rng)
        return json.dumps(envelope).encode("utf-8"), True
    if kind == 2:
        data = bytearray(message.encode("utf-8"))
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), True
    if kind == 3:
        cut = message.encode("utf-8")[: rng.randrange(len(message))]
        return cut, True
    return message.encode("utf-8"), False


# The clients


@dataclass
class FuzzConnection:
    """
    One fuzzing connection and the frame it waits on.
    """

    room: str
    socket: RawWebSocket | None = None
    ping: bytes = b""
    sent_at: float = 0.0


@dataclass
class GoodPair:
    """
    A good writer and a good reader of one room, and the writes in flight.
    """

    room: str
    writer: RawWebSocket
    reader: RawWebSocket
    local: Doc[Map[int]] = field(default_factory=Doc)
    seen: Doc[Any] = field(default_factory=Doc)
    pending: dict[str, float] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    next_write: float = 0.0
    worst_latency: float = 0.0
    late: int = 0
    apply_errors: int = 0


@dataclass
class FuzzReport:
    """
    What a fuzz run showed.
    """

    seed: int
    frames: int = 0
    seconds: float = 0.0
    connections: int = 0
    close_codes: dict[str, int] = field(default_factory=dict)
    unexpected_codes: dict[str, int] = field(default_factory=dict)
    stalled_frames: int = 0
    refused_handshakes: int = 0
    server_alive: bool = True
    crash_lines: list[str] = field(default_factory=list)
    good_writes: int = 0
    good_late: int = 0
    good_worst_latency: float = 0.0
    good_apply_errors: int = 0
    good_closed: int = 0
    rooms_readable: int = 0
    rooms_missing_writes: int = 0
    rooms: int = 0

    @property
    def crashes(self) -> int:
        """
        Signs of a crash: the server stopped, a handler failed unexpectedly,
        or a frame got no answer.
        """
        return (
            (0 if self.server_alive else 1)
            + len(self.crash_lines)
            + sum(self.unexpected_codes.values())
            + self.stalled_frames
        )


def _good_pair(server: KrakenProcess, token: str, room: str) -> GoodPair:
    pair = GoodPair(room, joined(server, room, token), joined(server, room, token))
    pair.reader.frames.clear()
    pair.writer.frames.clear()
    return pair


def _good_write(pair: GoodPair, now: float) -> None:
    key = f"w{len(pair.written):05d}"
    entries = pair.local.get(GOOD_ROOT, type=Map)
    before = pair.local.get_state()
    entries[key] = len(pair.written)
    pair.writer.send_binary(sync_update(pair.local.get_update(before)))
    pair.written.append(key)
    pair.pending[key] = now
    pair.next_write = now + GOOD_EVERY


def _good_read(pair: GoodPair, now: float) -> None:
    for client in (pair.reader, pair.writer):
        frames = client.read_available()
        client.frames.clear()
        if client is pair.writer:
            continue
        for frame in frames:
            payload = sync_payload(frame.payload) if frame.opcode == OP_BINARY else None
            if payload is None or payload[0] not in (1, 2):
                continue
            try:
                pair.seen.apply_update(payload[1])
            except Exception:
                pair.apply_errors += 1
    if pair.pending:
        try:
            entries = pair.seen.get(GOOD_ROOT, type=Map)
            arrived = [key for key in pair.pending if key in entries]
        except Exception:
            pair.apply_errors += 1
            arrived = []
        for key in arrived:
            latency = now - pair.pending.pop(key)
            pair.worst_latency = max(pair.worst_latency, latency)
    for key, sent_at in list(pair.pending.items()):
        if now - sent_at > GOOD_DEADLINE:
            pair.late += 1
            del pair.pending[key]


class Fuzzer:
    """
    The fuzz loop over one server.
    """

    def __init__(
        self, server: KrakenProcess, token: str, rooms: list[str], seed: int
    ) -> None:
        self.server = server
        self.token = token
        self.rng = random.Random(seed)
        self.binary = binary_corpus()
        self.text = text_corpus()
        self.report = FuzzReport(seed=seed)
        self.codes: Counter[int | None] = Counter()
        self.selector = selectors.DefaultSelector()
        self.connections = [FuzzConnection(room) for room in rooms]
        self.pairs = [_good_pair(server, token, room) for room in dict.fromkeys(rooms)]
        self._sequence = 0

    def _open(self, connection: FuzzConnection) -> None:
        try:
            raw = RawWebSocket.connect(
                self.server.port, f"/{connection.room}?token={self.token}"
            )
        except Refused:
            self.report.refused_handshakes += 1
            return
        raw.wait_for(lambda f: f.opcode == OP_BINARY and f.payload[:2] == b"\x00\x00")
        if self.rng.random() < 0.7:
            raw.send_binary(step1())
        raw.frames.clear()
        connection.socket = raw
        self.report.connections += 1
        self.selector.register(raw.sock, selectors.EVENT_READ, connection)

    def _next_frame(self) -> bytes:
        if self.rng.random() < 0.75:
            seed_frame = self.rng.choice(self.binary)
            return frame_bytes(
                OP_BINARY, mutate_binary(seed_frame, self.rng, self.binary)
            )
        payload, is_text = mutate_text(self.rng.choice(self.text), self.rng)
        return frame_bytes(OP_TEXT if is_text else OP_BINARY, payload)

    def _send(self, connection: FuzzConnection, now: float) -> None:
        assert connection.socket is not None
        self._sequence += 1
        connection.ping = f"fuzz-{self._sequence}".encode()
        connection.sent_at = now
        try:
            connection.socket.send_raw(
                self._next_frame() + frame_bytes(OP_PING, connection.ping)
            )
        except OSError:
            self._closed(connection, None)
            return
        self.report.frames += 1

    def _closed(self, connection: FuzzConnection, code: int | None) -> None:
        raw = connection.socket
        if raw is None:
            return
        self.codes[code] += 1
        self.selector.unregister(raw.sock)
        raw.drop()
        connection.socket = None
        connection.ping = b""

    def _answered(self, connection: FuzzConnection) -> None:
        raw = connection.socket
        assert raw is not None
        try:
            frames = raw.read_available()
        except OSError:
            frames = []
            raw.eof = True
        raw.frames.clear()
        for frame in frames:
            if frame.opcode == OP_CLOSE:
                self._closed(connection, frame.close_code)
                return
            if frame.opcode == OP_PONG and frame.payload == connection.ping:
                connection.ping = b""
        if raw.eof:
            self._closed(connection, raw.close_code)

    def run(self, frames: int, seconds: float) -> FuzzReport:
        started = time.monotonic()
        deadline = started + seconds
        checked_alive = started
        while self.report.frames < frames and time.monotonic() < deadline:
            now = time.monotonic()
            for connection in self.connections:
                if connection.socket is None:
                    self._open(connection)
                elif not connection.ping:
                    self._send(connection, now)
                elif now - connection.sent_at > FRAME_DEADLINE:
                    self.report.stalled_frames += 1
                    self._closed(connection, -1)
            for key, _ in self.selector.select(0.005):
                self._answered(key.data)
            now = time.monotonic()
            for pair in self.pairs:
                if now >= pair.next_write:
                    _good_write(pair, now)
                _good_read(pair, now)
            if now - checked_alive > 1.0:
                checked_alive = now
                process = self.server.process
                if process is None or process.poll() is not None:
                    self.report.server_alive = False
                    break
        self.report.seconds = time.monotonic() - started
        self._settle()
        return self.report

    def _settle(self) -> None:
        """
        Let the last good writes arrive, then close everything.
        """
        settle_until = time.monotonic() + GOOD_DEADLINE
        while any(pair.pending for pair in self.pairs):
            if time.monotonic() > settle_until:
                break
            for pair in self.pairs:
                _good_read(pair, time.monotonic())
            time.sleep(0.01)
        for connection in self.connections:
            if connection.socket is not None:
                self._closed(connection, 0)
        self.selector.close()
        report = self.report
        for pair in self.pairs:
            report.good_writes += len(pair.written)
            report.good_late += pair.late + len(pair.pending)
            report.good_worst_latency = max(
                report.good_worst_latency, pair.worst_latency
            )
            report.good_apply_errors += pair.apply_errors
            report.good_closed += sum(
                1 for raw in (pair.writer, pair.reader) if raw.closed_frame or raw.eof
            )
            for raw in (pair.writer, pair.reader):
                raw.drop()
        report.close_codes = {str(code): count for code, count in self.codes.items()}
        report.unexpected_codes = {
            str(code): count
            for code, count in self.codes.items()
            if code not in EXPECTED_CODES and code not in (0, None)
        }
        process = self.server.process
        report.server_alive = process is not None and process.poll() is None


def check_rooms(
    server: KrakenProcess, token: str, pairs: list[GoodPair], report: FuzzReport
) -> None:
    """
    Restart the server and load every room afresh: it must decode and hold
    every good write.
    """
    server.stop(signal.SIGTERM)
    server.start()
    report.rooms = len(pairs)
    for pair in pairs:
        fresh = joined(server, pair.room, token)
        doc: Doc[Any] = Doc()
        try:
            for frame in fresh.frames:
                payload = sync_payload(frame.payload)
                if payload is not None and payload[0] == 1:
                    doc.apply_update(payload[1])
            keys = set(doc.get(GOOD_ROOT, type=Map).keys())
        except Exception:
            fresh.drop()
            continue
        report.rooms_readable += 1
        if not set(pair.written) <= keys:
            report.rooms_missing_writes += 1
        fresh.drop()


def crash_lines(log: str) -> list[str]:
    return [
        line for line in log.splitlines() if any(mark in line for mark in CRASH_MARKERS)
    ]


def fuzz(
    data_dir: Path,
    frames: int,
    seconds: float,
    seed: int,
    connections: int = 8,
    rooms: int = 4,
) -> FuzzReport:
    """
    Start a Kraken on C{data_dir}, fuzz it, and check it afterwards.
    """
    with started_kraken(data_dir) as server:
        token = server.register_app("fuzz")
        room_names = [f"room-{index}" for index in range(rooms)]
        assigned = [room_names[index % rooms] for index in range(connections)]
        fuzzer = Fuzzer(server, token, assigned, seed)
        report = fuzzer.run(frames, seconds)
        report.crash_lines = crash_lines(server.log_text())[:20]
        if report.server_alive:
            check_rooms(server, token, fuzzer.pairs, report)
    return report


def main(
    argv: list[str] | None = None, out: Callable[[str], None] = print
) -> FuzzReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rooms", type=int, default=4)
    args = parser.parse_args(argv)
    seed = (
        args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    )

    with tempfile.TemporaryDirectory(prefix="kraken-fuzz-") as data:
        report = fuzz(
            Path(data) / "data",
            args.frames,
            args.seconds,
            seed,
            args.connections,
            args.rooms,
        )
    out(report_json(report, crashes=report.crashes))
    return report


if __name__ == "__main__":
    main()
