"""
Server memory while one client stops reading during a large write burst.

One client writes C{--megabytes} of updates into a room (each replaces one
map value, so the document itself stays small), a fast client reads them all,
and a third client stops reading its socket.  The script samples the twistd
child's C{VmRSS} throughout and reports the peak, and how the slow client was
closed.  With C{--max-queued-bytes} below the burst, the slow client is closed
with 1013 and the server's memory stays bounded; raise it past the burst to
see what buffering everything would cost.

    python bench/slow_reader.py [--megabytes 50] [--max-queued-bytes 4194304]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycrdt import Doc, Map

from bench.harness import LogWindow, joined, report_json, scratch_kraken
from bench.wsraw import OP_BINARY, OP_CLOSE, rss_kib, sync_update
from tests.server import KrakenProcess

#: Updates the writer may have sent that the fast reader has not received.
WINDOW = 8

#: Seconds between memory samples.
SAMPLE_EVERY = 0.02

#: The slow client's receive buffer, small so that it falls behind at once.
SLOW_RECEIVE_BUFFER = 16 * 1024

QUEUE_LIMIT_LINE = r"Limit max-queued-bytes hit"


@dataclass
class BurstReport:
    """
    What one burst showed.

    @ivar megabytes: the bytes written, in MiB.
    @ivar baseline_rss_kib: the server's RSS before the burst.
    @ivar peak_rss_kib: the highest RSS sampled during the burst.
    @ivar slow_close_code: the close code the slow client read, C{None} if
        its connection ended without one (or was not closed).
    @ivar slow_closed_after_mib: MiB written when the server's limit line
        appeared, C{None} if it never did.
    @ivar delivered: updates the fast reader received, of C{updates}.
    @ivar seconds: how long the burst took.
    """

    megabytes: float
    updates: int
    delivered: int
    baseline_rss_kib: int
    peak_rss_kib: int
    slow_close_code: int | None
    slow_closed_after_mib: float | None
    seconds: float

    @property
    def growth_kib(self) -> int:
        return self.peak_rss_kib - self.baseline_rss_kib


def burst(
    server: KrakenProcess,
    token: str,
    megabytes: float,
    chunk_kib: int = 64,
    room: str = "burst",
    timeout: float = 120.0,
) -> BurstReport:
    """
    Write C{megabytes} into C{room} while one client there stops reading.
    """
    assert server.process is not None
    pid = server.process.pid
    writer = joined(server, room, token)
    fast = joined(server, room, token)
    slow = joined(server, room, token, receive_buffer=SLOW_RECEIVE_BUFFER)
    window = LogWindow(server)

    doc: Doc[Map[str]] = Doc()
    blob: Map[str] = doc.get("blob", type=Map)
    chunk = chunk_kib * 1024
    count = max(1, int(megabytes * 1024 * 1024 / chunk))
    baseline = peak = rss_kib(pid)
    sent = delivered = 0
    closed_after: float | None = None
    slow_reading = False
    started = last_sample = time.monotonic()
    deadline = started + timeout

    while delivered < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"burst stalled at {delivered}/{count} updates")
        while sent < count and sent - delivered < WINDOW:
            before = doc.get_state()
            blob["value"] = f"{sent:08d}" + "x" * (chunk - 8)
            writer.send_binary(sync_update(doc.get_update(before)))
            sent += 1
        for frame in fast.read_available():
            if frame.opcode == OP_BINARY and frame.payload[:2] == b"\x00\x02":
                delivered += 1
        fast.frames.clear()
        if fast.eof:
            raise ConnectionError(f"the fast reader was closed: {fast.close_code}")

        now = time.monotonic()
        if now - last_sample >= SAMPLE_EVERY:
            last_sample = now
            peak = max(peak, rss_kib(pid))
            if closed_after is None and window.matching(QUEUE_LIMIT_LINE):
                closed_after = sent * chunk / 2**20
                slow_reading = True
        if slow_reading and not slow.closed_frame and not slow.eof:
            slow.read_available()
            slow.frames.clear()
        if not (sent < count and sent - delivered < WINDOW):
            time.sleep(0.001)

    seconds = time.monotonic() - started
    peak = max(peak, rss_kib(pid))
    code = None
    if closed_after is not None:
        code = slow.wait_close(timeout=10.0)
    else:
        slow_code = [
            f.close_code for f in slow.read_available() if f.opcode == OP_CLOSE
        ]
        code = slow_code[0] if slow_code else None
    for client in (writer, fast, slow):
        client.drop()
    return BurstReport(
        megabytes=count * chunk / 2**20,
        updates=count,
        delivered=delivered,
        baseline_rss_kib=baseline,
        peak_rss_kib=peak,
        slow_close_code=code,
        slow_closed_after_mib=closed_after,
        seconds=seconds,
    )


def main(argv: list[str] | None = None) -> BurstReport:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument(
        "--max-queued-bytes",
        type=int,
        default=4 * 2**20,
        help="the server's limit (its default is 64 MiB)",
    )
    args = parser.parse_args(argv)

    server_args = [
        "--max-queued-bytes",
        str(args.max_queued_bytes),
        "--max-document-bytes",
        str(2**40),
        "--compact-after-rows",
        "1000000",
    ]
    with scratch_kraken("kraken-slow-reader-", server_args) as server:
        token = server.register_app("slow-reader")
        report = burst(server, token, args.megabytes, args.chunk_kib)
    print(report_json(report, growth_kib=report.growth_kib))
    return report


if __name__ == "__main__":
    main()
