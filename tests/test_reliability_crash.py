"""
Crash safety by repetition: 20 rounds of writes, a SIGKILL at a random
moment and a restart on the same data directory (bench/crash.py); set
C{KRAKEN_CRASH_SEED} to replay a run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from bench.crash import run_rounds

ROUNDS = 20


def test_no_received_edit_is_lost_to_sigkill_and_the_database_stays_sound(
    tmp_path: Path,
) -> None:
    """
    After each SIGKILL and restart, a fresh client finds every edit that any
    client had received from the server, and SQLite's integrity check says ok.
    """
    seed = int(os.environ.get("KRAKEN_CRASH_SEED") or random.randrange(2**32))
    print(f"KRAKEN_CRASH_SEED={seed}")

    report = run_rounds(tmp_path / "data", ROUNDS, seed)

    assert report.received > 1000, f"seed {seed}: too few edits to tell: {report}"
    assert report.lost == [0] * ROUNDS, f"seed {seed}: {report}"
    assert report.integrity == ["ok"] * ROUNDS, f"seed {seed}: {report}"
