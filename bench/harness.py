"""
Starting a real Kraken for a bench or a reliability test, reading its log,
and joining its rooms with raw clients.

The server is the twistd child process of L{tests.server.KrakenProcess},
listening on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.wsraw import OP_BINARY, RawWebSocket  # noqa: E402
from tests.server import KrakenProcess  # noqa: E402

#: Seconds any single condition may take.
DEADLINE = 10.0


@contextmanager
def started_kraken(
    data_dir: Path, extra_args: list[str] | None = None
) -> Iterator[KrakenProcess]:
    """
    A twistd Kraken on C{data_dir}, killed at the end whatever happened.
    """
    server = KrakenProcess(data_dir, extra_args)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop(signal.SIGTERM, timeout=10)
        server.stop(signal.SIGKILL)


@contextmanager
def scratch_kraken(
    prefix: str, extra_args: list[str] | None = None
) -> Iterator[KrakenProcess]:
    """
    A twistd Kraken, as L{started_kraken} starts it, on a fresh temporary
    data directory (named with C{prefix}) that is removed at the end.
    """
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as data,
        started_kraken(Path(data) / "data", extra_args) as server,
    ):
        yield server


def report_json(report: Any, **figures: Any) -> str:
    """
    A bench's report (a dataclass) as indented JSON, with the derived
    C{figures} added or replacing its fields.
    """
    return json.dumps({**asdict(report), **figures}, indent=2)


def wait_until(
    condition: Callable[[], bool], timeout: float = DEADLINE, step: float = 0.02
) -> None:
    """
    Poll C{condition} until it holds.

    @raise TimeoutError: it did not hold within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(step)


class LogWindow:
    """
    The lines a server logs from the moment the window is opened.
    """

    def __init__(self, server: KrakenProcess) -> None:
        self._server = server
        self._start = len(server.log_text())

    def lines(self) -> list[str]:
        return self._server.log_text()[self._start :].splitlines()

    def matching(self, pattern: str) -> list[str]:
        compiled = re.compile(pattern)
        return [line for line in self.lines() if compiled.search(line)]

    def warnings(self) -> list[str]:
        """
        The warning lines (twistd writes the level as C{#warn]}).
        """
        return [line for line in self.lines() if "#warn]" in line]

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> str:
        """
        Wait for a line matching C{pattern}; return the first one.
        """
        found: list[str] = []

        def seen() -> bool:
            found[:] = self.matching(pattern)
            return bool(found)

        try:
            wait_until(seen, timeout)
        except TimeoutError:
            raise AssertionError(
                f"no log line matched {pattern!r}:\n" + "\n".join(self.lines()[-40:])
            ) from None
        return found[0]


def wait_reading(
    condition: Callable[[], bool],
    clients: list[RawWebSocket],
    timeout: float = DEADLINE,
) -> None:
    """
    Wait for C{condition} while C{clients} keep reading (and so answering
    pings); what they receive is kept in their C{frames}.
    """

    def read_and_check() -> bool:
        for client in clients:
            if not client.eof:
                client.read_available()
        return condition()

    wait_until(read_and_check, timeout)


def connection_closed_pattern(raw: RawWebSocket) -> str:
    """
    The pattern of the server's "Connection closed" line for C{raw}.
    """
    return rf"Connection closed: .*peer tcp4:127\.0\.0\.1:{raw.local_port},"


def joined(
    server: KrakenProcess,
    room: str,
    token: str,
    *,
    receive_buffer: int | None = None,
    timeout: float = DEADLINE,
) -> RawWebSocket:
    """
    A raw connection that has done what the stock client does on open: read
    the server's step 1, send its own and read the step 2 answer, each step
    within C{timeout} seconds.  Every data frame read meanwhile is in its
    C{frames}.
    """
    raw = RawWebSocket.connect(
        server.port,
        f"/{room}?token={token}",
        receive_buffer=receive_buffer,
        timeout=timeout,
    )
    raw.wait_for(
        lambda f: f.opcode == OP_BINARY and f.payload[:2] == b"\x00\x00", timeout
    )
    raw.sync(timeout=timeout)
    return raw
