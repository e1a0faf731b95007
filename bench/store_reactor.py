"""
How long the SQLite store holds the reactor.

Runs the real store on a temporary data directory under the real reactor and
reports:

* the reactor time of one C{append} call and of committing one batch
  (writing it inline and firing its Deferreds), measured around the calls
  themselves;
* the worst lateness of a 1 ms timer while the store appends as fast as it
  can, and while it loads a large document (pycrdt merges on the store
  thread, holding the interpreter lock);
* how long storing a large document's compaction snapshot takes, which the
  reactor waits for (the write is inline, so no timer runs meanwhile).

    python bench/store_reactor.py [--updates 5000] [--big-mb 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred

from kraken.store import appended
from kraken.store.sqlite import SQLiteStore


class LagProbe:
    """
    A 1 ms timer that records how late each tick runs.
    """

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._expected = 0.0
        self._loop = task.LoopingCall(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._expected:
            self.lateness.append(max(0.0, now - self._expected))
        self._expected = now + 0.001

    def start(self) -> None:
        self.lateness.clear()
        self._expected = 0.0
        self._loop.start(0.001)

    def stop(self) -> float:
        self._loop.stop()
        return max(self.lateness, default=0.0)


def updates_for(size_mb: float, chunk: int = 65536) -> list[bytes]:
    doc = Doc()
    doc["text"] = text = Text()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    remaining = int(size_mb * 1024 * 1024)
    while remaining > 0:
        text += "x" * min(chunk, remaining)
        remaining -= chunk
    return updates


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        store = SQLiteStore(reactor, Path(data_dir))
        store.start()
        probe = LagProbe()

        append_times: list[float] = []
        batch_times: list[float] = []
        original_flush = store._flush

        def timed_flush() -> None:
            started = time.perf_counter()
            original_flush()
            batch_times.append(time.perf_counter() - started)

        store._flush = timed_flush  # type: ignore[method-assign]

        small = updates_for(0.04, chunk=8)[: args.updates]
        probe.start()
        committed: list[Deferred[None]] = []
        started = time.perf_counter()
        for index, update in enumerate(small):
            before = time.perf_counter()
            committed.append(appended(store, "bench", f"room-{index % 10}", update))
            append_times.append(time.perf_counter() - before)
            if index % 100 == 99:
                await task.deferLater(reactor, 0, lambda: None)
        await DeferredList(committed)
        elapsed = time.perf_counter() - started
        results["appends"] = len(small)
        results["appends_per_second"] = round(len(small) / elapsed)
        results["batches"] = len(batch_times)
        results["append_call_us_median"] = round(
            statistics.median(append_times) * 1e6, 1
        )
        results["batch_handling_us_median"] = round(
            statistics.median(batch_times) * 1e6, 1
        )
        results["batch_handling_us_max"] = round(max(batch_times) * 1e6, 1)
        results["timer_lateness_ms_max_appending"] = round(probe.stop() * 1000, 2)

        big = updates_for(args.big_mb)
        await DeferredList([appended(store, "bench", "big", u) for u in big])
        probe.start()
        before = time.perf_counter()
        loaded = await store.load("bench", "big")
        results["big_load_ms"] = round((time.perf_counter() - before) * 1000, 1)
        results["big_rows"] = loaded.rows
        results["timer_lateness_ms_max_loading"] = round(probe.stop() * 1000, 2)

        assert loaded.update is not None
        probe.start()
        before = time.perf_counter()
        await store.compact("bench", "big", loaded.update)
        results["big_compact_ms"] = round((time.perf_counter() - before) * 1000, 1)
        results["timer_lateness_ms_max_compacting"] = round(probe.stop() * 1000, 2)
        await store.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--big-mb", type=float, default=10.0)
    args = parser.parse_args()

    def run() -> Deferred[None]:
        measured = ensureDeferred(measure(args))

        def report(results: dict[str, Any]) -> None:
            for key, value in results.items():
                print(f"{key:36} {value}")

        measured.addCallback(report)
        measured.addErrback(lambda failure: failure.printTraceback())
        measured.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
        return measured

    reactor.callWhenRunning(run)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
