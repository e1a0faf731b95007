"""
What C{twistd kraken} builds, beyond the service itself.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet import reactor

from kraken.tap import Options, freeze_startup_objects, makeService


def test_start_up_objects_are_frozen_once_the_reactor_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The twistd service leaves what exists at start-up out of later full
    garbage collections, once the reactor is running.
    """
    scheduled: list[Callable[[], None]] = []
    monkeypatch.setattr(
        reactor, "callWhenRunning", lambda f, *a, **kw: scheduled.append(f)
    )
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data")])

    makeService(options)

    assert scheduled == [freeze_startup_objects]
    frozen_before = gc.get_freeze_count()
    try:
        scheduled[0]()
        assert gc.get_freeze_count() > frozen_before
    finally:
        gc.unfreeze()
