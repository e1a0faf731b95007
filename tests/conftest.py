"""
Fixtures shared by the test suite: real Kraken processes and the Node driver
of stock y-websocket clients.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.yclients import INTEROP_DIR, NodeDriver
from tests.server import KrakenProcess, running_kraken


@pytest.fixture
def kraken(tmp_path: Path) -> Iterator[KrakenProcess]:
    """
    A Kraken started with twistd on a fresh data directory.
    """
    yield from running_kraken(tmp_path / "data")


@pytest.fixture
def driver() -> Iterator[NodeDriver]:
    """
    The Node driver of stock y-websocket clients.
    """
    if not (INTEROP_DIR / "node_modules").is_dir() or shutil.which("node") is None:
        pytest.fail("run `npm ci --prefix tests/interop` first (tox does)")
    with NodeDriver.start(cwd=INTEROP_DIR) as node_driver:
        yield node_driver
