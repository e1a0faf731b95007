"""
How long an Offer takes from one peer to another through Kraken on loopback.

Starts C{twistd kraken} with its default limits on 127.0.0.1 (a child
process, so server and clients do not share a thread), joins one room with
two signaling peers on plain blocking sockets, and sends Offers from one to
the other one at a time. Each is timed from just before its frame is written
to the moment the other peer has read and parsed it. Offers are paced under
the default C{--max-signals-per-second} of 50, so none is rate-limited.

    python bench/signal_latency.py [--offers 200] [--sdp-bytes 4000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import scratch_kraken  # noqa: E402
from tests.server import KrakenProcess  # noqa: E402
from tests.signal_peer import SignalPeer  # noqa: E402

#: Seconds between two offers: 40 a second, under the default limit of 50.
PACE = 0.025


def fake_sdp(size: int) -> dict[str, str]:
    """
    An RTCSessionDescriptionInit whose SDP text is about C{size} bytes.
    """
    line = "a=candidate:1 1 udp 2122260223 192.0.2.10 51000 typ host generation 0\r\n"
    body = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    while len(body) < size:
        body += line
    return {"type": "offer", "sdp": body[:size]}


def measure(
    server: KrakenProcess, offers: int, warmup: int, sdp_bytes: int
) -> list[float]:
    """
    The seconds each of C{offers} Offers took, after C{warmup} untimed ones.
    """
    token = server.register_app("bench-signal")
    caller = SignalPeer.join(server.port, f"/doc/latency?token={token}")
    callee = SignalPeer.join(server.port, f"/doc/latency?token={token}")
    try:
        caller.announce("caller")
        callee.announce("callee")
        sdp = fake_sdp(sdp_bytes)
        timings: list[float] = []
        next_send = time.monotonic()
        for index in range(warmup + offers):
            time.sleep(max(0.0, next_send - time.monotonic()))
            next_send = time.monotonic() + PACE
            started = time.perf_counter()
            caller.send_signal({"type": 1, "to": "callee", "sdp": sdp, "seq": index})
            received = callee.wait_signal(1)
            elapsed = time.perf_counter() - started
            assert received["seq"] == index and received["from"] == "caller"
            if index >= warmup:
                timings.append(elapsed)
        return timings
    finally:
        caller.close()
        callee.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offers", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--sdp-bytes", type=int, default=4000)
    args = parser.parse_args()

    with scratch_kraken("kraken-signal-latency-") as server:
        timings = measure(server, args.offers, args.warmup, args.sdp_bytes)

    milliseconds = sorted(t * 1000 for t in timings)
    p99 = statistics.quantiles(milliseconds, n=100, method="inclusive")[98]
    print(f"offers: {len(milliseconds)} of {args.sdp_bytes} bytes of SDP, loopback")
    print(f"median: {statistics.median(milliseconds):.3f} ms")
    print(f"p99:    {p99:.3f} ms")
    print(f"min:    {milliseconds[0]:.3f} ms, max: {milliseconds[-1]:.3f} ms")


if __name__ == "__main__":
    main()
