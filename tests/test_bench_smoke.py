"""
The benchmark suite's smoke mode runs, so that bench/ cannot rot.

C{bash bench/run.sh --smoke} installs the pinned npm packages, starts Kraken
(with this Python) and the y-websocket reference server on loopback, drives
both with tiny yload scenarios and exits non-zero when a server does not
start or a run does not converge.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="the benchmark needs node and npm",
)


@needs_node
def test_bench_smoke(tmp_path: Path) -> None:
    """
    The smoke run finishes within a minute or two with every server up and
    every run converged, and writes its table.
    """
    out = tmp_path / "results"
    env = dict(os.environ, KRAKEN_PYTHON=sys.executable, OUT=str(out))
    env.pop("SMOKE", None)
    process = subprocess.Popen(
        ["bash", str(ROOT / "bench" / "run.sh"), "--smoke"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        # TERM lets run.sh stop the servers it started; KILL only if it hangs.
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail("bench/run.sh --smoke took over 150 s:\n" + output)
    assert process.returncode == 0, output
    table = (out / "results.md").read_text()
    assert "Problems in this run: none" in table, table
    assert "| Kraken | y-websocket |" in table, table
    assert (out / "results.json").exists()
    assert (out / "kraken.jsonl").read_text().count("\n") == 5
