"""
What C{twistd kraken} builds, beyond the service itself.
"""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from twisted.internet import reactor
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher

from kraken.tap import (
    Options,
    freeze_startup_objects,
    makeService,
    settings_from_options,
)


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


def test_start_up_says_whether_a_token_was_created_or_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The first start says the tokens it generated were created, later starts
    that they are read, and neither says what they are.
    """
    monkeypatch.delenv("KRAKEN_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("KRAKEN_TOKEN", raising=False)
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    data_dir = tmp_path / "data"

    def start() -> list[str]:
        events.clear()
        options = Options()
        options.parseOptions(["--data-dir", str(data_dir)])
        settings_from_options(options)
        return [formatEvent(event) for event in events]

    try:
        first, second = start(), start()
    finally:
        globalLogPublisher.removeObserver(observer)

    admin = (data_dir / "admin-token").read_text().strip()
    assert f"A new admin token was created in {data_dir / 'admin-token'}" in first
    assert f"A new deployment token was created in {data_dir / 'token'}" in first
    assert f"The admin token is read from {data_dir / 'admin-token'}" in second
    assert f"The deployment token is read from {data_dir / 'token'}" in second
    assert not any(admin in line for line in first + second)


def test_a_database_of_a_newer_kraken_is_refused_in_one_line(tmp_path: Path) -> None:
    """
    A data directory written by a newer Kraken stops the start with one
    message naming the versions, not a traceback, and is left untouched.
    """
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "kraken.sqlite3"
    with sqlite3.connect(database) as newer:
        newer.execute("PRAGMA user_version = 99")
    newer.close()
    before = database.read_bytes()
    options = Options()
    options.parseOptions(["--data-dir", str(data_dir)])

    with pytest.raises(SystemExit) as stopped:
        makeService(options)

    assert "has schema version 99; this Kraken knows versions up to" in str(
        stopped.value
    )
    assert database.read_bytes() == before
