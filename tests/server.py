"""
A real Kraken, started with twistd in a child process, for tests.

The server listens on 127.0.0.1 on a port the kernel picks (C{tcp:0}); the
port is read from its "listening on" log line.  Every server a test starts is
stopped by the fixture that made it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_LISTENING = re.compile(r"Kraken listening on 127\.0\.0\.1:(\d+)")

ADMIN_TOKEN = "test-admin-token-0123456789"
DEPLOYMENT_TOKEN = "test-deployment-token-0123456789"


def twistd_kraken(*options: str) -> list[str]:
    """
    The command that runs C{twistd kraken} in the foreground with this
    Python, logging to stdout, with C{options} after C{kraken}.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "--logfile=-",
        "kraken",
        *options,
    ]


class HTTPAnswer:
    """
    A status, headers and parsed JSON body (C{None} when empty or not JSON).
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body
        is_json = "json" in headers.get("Content-Type", "")
        self.json: Any = json.loads(body) if body and is_json else None


class KrakenProcess:
    """
    One twistd kraken child process on a data directory of its own.
    """

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args or []
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._lock = threading.Lock()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """
        Start the server and wait until it listens.
        """
        env = dict(os.environ)
        env["KRAKEN_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["KRAKEN_TOKEN"] = DEPLOYMENT_TOKEN
        listen = f"tcp:{self.port}:interface=127.0.0.1"
        command = twistd_kraken(
            "--listen", listen, "--data-dir", str(self.data_dir), *self.extra_args
        )
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        listening = threading.Event()
        threading.Thread(
            target=self._read_output, args=(self.process, listening), daemon=True
        ).start()
        if not listening.wait(timeout):
            self.stop(signal.SIGKILL)
            raise RuntimeError("Kraken did not start:\n" + self.log_text())

    def _read_output(
        self, process: subprocess.Popen[str], listening: threading.Event
    ) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._lock:
                self._lines.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                listening.set()

    def log_text(self) -> str:
        """
        Everything the server has logged so far.
        """
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """
        Wait until a log line matches C{pattern}; return that line.
        """
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.log_text().splitlines():
                if compiled.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matched {pattern!r}:\n{self.log_text()}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """
        Send C{signum} and wait for the process to end.

        @return: the exit status as C{subprocess} reports it.
        """
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signum)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        self.process = None
        return process.returncode

    def restart(self, signum: int = signal.SIGTERM) -> None:
        """
        Stop the server and start it again on the same port and data.
        """
        self.stop(signum)
        self.start()

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = ADMIN_TOKEN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> HTTPAnswer:
        """
        Make one HTTP request and return the answer, refusals included.
        """
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            self.http_url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return HTTPAnswer(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            return HTTPAnswer(error.code, dict(error.headers), error.read())

    def register_app(self, app_id: str, origins: list[str] | None = None) -> str:
        """
        Register an app and return its token.
        """
        answer = self.request(
            "POST",
            "/api/apps",
            {"app_id": app_id, "name": app_id, "allowed_origins": origins or []},
        )
        assert answer.status == 201, answer.json
        token: str = answer.json["token"]
        return token


def running_kraken(
    data_dir: Path, extra_args: list[str] | None = None
) -> Iterator[KrakenProcess]:
    """
    Start a Kraken for a fixture and stop it afterwards.
    """
    server = KrakenProcess(data_dir, extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL if server.process is None else signal.SIGTERM)
