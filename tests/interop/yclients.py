"""Synchronous Python handle on driver.mjs, which runs stock y-websocket clients.

The tests use this to check Kraken against the real JavaScript client rather
than against a Python re-implementation of the protocol.  Each command is one
JSON line to the driver's stdin; each reply is one JSON line on its stdout.
"""

import contextlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

INTEROP_DIR = Path(__file__).resolve().parent
DEFAULT_REPLY_TIMEOUT = 15.0
REPLY_GRACE = 10.0
WAIT_TIMEOUT = 5.0


class DriverError(Exception):
    """A driver command failed, timed out, or the driver died, so a test can fail."""

    def __init__(self, message: str, reply: Mapping[str, Any] | None = None) -> None:
        """Keep the driver's reply beside the message so tests can inspect it.

        @param message: What went wrong.
        @param reply: The driver's reply, if there was one.
        """
        super().__init__(message)
        self.reply: dict[str, Any] = dict(reply or {})


class NodeDriver:
    """A running driver.mjs process, driven one command at a time."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        """Wrap a started driver process and start reading its replies.

        @param process: The driver, with stdin and stdout pipes.
        """
        self._process = process
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._seq = 0
        self._closed = False
        self._reader = threading.Thread(
            target=self._read_replies, name="yclients-reader", daemon=True
        )
        self._reader.start()

    @classmethod
    def start(
        cls,
        cwd: str | os.PathLike[str] | None = None,
        node: str = "node",
        stderr: IO[Any] | int | None = None,
    ) -> Self:
        """Spawn C{node driver.mjs} so tests can create y-websocket clients.

        @param cwd: Folder holding driver.mjs and its node_modules; defaults
            to the folder of this module.
        @param node: The node executable.
        @param stderr: Where the driver's diagnostics go; inherited if None.
        @return: The running driver.
        @raise DriverError: If node or the npm packages are missing.
        """
        folder = Path(cwd) if cwd is not None else INTEROP_DIR
        if shutil.which(node) is None:
            raise DriverError(f"node executable not found: {node}")
        if not (folder / "node_modules" / "y-websocket").is_dir():
            raise DriverError(f"run 'npm ci' in {folder} first")
        process = subprocess.Popen(
            [node, "driver.mjs"],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        return cls(process)

    def _read_replies(self) -> None:
        """Queue every reply line, then None at EOF, so call() never blocks."""
        stdout = self._process.stdout
        if stdout is None:
            self._replies.put(None)
            return
        for raw in stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = {"ok": False, "error": f"non-JSON line: {line!r}"}
            if not isinstance(parsed, dict):
                parsed = {"ok": False, "error": f"non-object line: {line!r}"}
            self._replies.put(parsed)
        self._replies.put(None)

    def call(self, cmd: str, *, check: bool = True, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply, so tests read like scripts.

        The reply is awaited for the command's own C{timeout} plus 10 s, or
        15 s when it has none.

        @param cmd: The command name, e.g. C{"insert"}.
        @param check: Raise on an C{ok: false} reply when true.
        @param fields: The command's fields, e.g. C{id="a", index=0}.
        @return: The reply.
        @raise DriverError: On C{ok: false} (if C{check}), no reply in time,
            or a dead driver.
        """
        timeout = fields.get("timeout")
        wait = DEFAULT_REPLY_TIMEOUT if timeout is None else timeout + REPLY_GRACE
        with self._lock:
            if self._closed:
                raise DriverError("driver is closed")
            self._seq += 1
            seq = self._seq
            self._send({**fields, "cmd": cmd, "seq": seq})
            reply = self._await_reply(seq, wait)
        if check and not reply.get("ok"):
            raise DriverError(f"{cmd} {fields!r} failed: {reply.get('error')}", reply)
        return reply

    def _send(self, message: Mapping[str, Any]) -> None:
        """Write one command line, turning a dead pipe into a DriverError."""
        stdin = self._process.stdin
        if stdin is None:
            raise DriverError("driver has no stdin pipe")
        try:
            stdin.write(json.dumps(message).encode("utf-8") + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise DriverError(f"driver is gone: {e}") from e

    def _await_reply(self, seq: int, wait: float) -> dict[str, Any]:
        """Return the reply to seq, skipping stale replies of timed-out calls."""
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DriverError(f"no reply to seq {seq} within {wait:.1f} s")
            try:
                reply = self._replies.get(timeout=remaining)
            except queue.Empty:
                continue
            if reply is None:
                self._replies.put(None)
                code = self._process.poll()
                raise DriverError(f"driver exited (code {code}) before seq {seq}")
            if reply.get("seq") == seq:
                return reply
            if reply.get("seq") is None:
                raise DriverError(f"driver error: {reply.get('error')}", reply)

    def client(
        self,
        client_id: str,
        url: str,
        room: str,
        token: str | None = None,
        origin: str | None = None,
        authorization: str | None = None,
        params: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> "Client":
        """Create and connect a y-websocket client, the unit every test uses.

        @param client_id: The client's name within this driver.
        @param url: The server, e.g. C{ws://127.0.0.1:8080}.
        @param room: The room (document) name, appended to the url path.
        @param token: Sent as the C{token} query parameter if not None.
        @param origin: Sent as the Origin header if not None.
        @param authorization: Sent as the Authorization header if not None.
        @param params: Further query parameters.
        @param extra: Further connect fields (C{reconnect}, C{maxBackoffTime},
            C{protocols}).
        @return: The connected (not necessarily synced) client.
        """
        query = dict(params or {})
        if token is not None:
            query["token"] = token
        fields: dict[str, Any] = {"url": url, "room": room, "params": query, **extra}
        if origin is not None:
            fields["origin"] = origin
        if authorization is not None:
            fields["authorization"] = authorization
        self.call("connect", id=client_id, **fields)
        return Client(self, client_id)

    def close(self) -> None:
        """Stop the driver and its clients so no process outlives the test."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._seq += 1
                self._send({"cmd": "exit", "seq": self._seq})
            except DriverError:
                pass
            stdin = self._process.stdin
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._reader.join(timeout=5)
            stdout = self._process.stdout
            if stdout is not None:
                stdout.close()

    @property
    def returncode(self) -> int | None:
        """The driver's exit code, or None while it runs, to check clean exits."""
        return self._process.poll()

    def __enter__(self) -> Self:
        """Use the driver as a context manager that always closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the driver when the with-block ends."""
        self.close()


class Client:
    """One named y-websocket client inside a driver, with test-friendly methods."""

    def __init__(self, driver: NodeDriver, client_id: str) -> None:
        """Bind a client name to its driver.

        @param driver: The driver that runs the client.
        @param client_id: The client's name within that driver.
        """
        self.driver = driver
        self.id = client_id

    def _call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send a command for this client."""
        return self.driver.call(cmd, id=self.id, **fields)

    def wait_synced(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait for the initial sync so later checks see the server's state.

        @param timeout: Seconds to wait.
        """
        self._call("wait_synced", timeout=timeout)

    def insert(self, index: int, text: str, name: str = "text") -> None:
        """Insert into a shared text, as an editor would.

        @param index: Where to insert.
        @param text: What to insert.
        @param name: The Y.Text's name in the document.
        """
        self._call("insert", name=name, index=index, text=text)

    def delete(self, index: int, length: int, name: str = "text") -> None:
        """Delete from a shared text, as an editor would.

        @param index: Where to start deleting.
        @param length: How many characters to delete.
        @param name: The Y.Text's name in the document.
        """
        self._call("delete", name=name, index=index, length=length)

    def get(
        self, names: list[str] | None = None, map_name: str = "map"
    ) -> dict[str, Any]:
        """Return the client's whole view (texts, map, status, closes, errors).

        @param names: The Y.Text names to include; C{["text"]} if None.
        @param map_name: The Y.Map name to include.
        @return: The driver's C{get} reply.
        """
        return self._call("get", names=names or ["text"], map=map_name)

    def text(self, name: str = "text") -> str:
        """Return the current content of a shared text.

        @param name: The Y.Text's name.
        @return: Its content.
        """
        texts: dict[str, str] = self.get(names=[name])["texts"]
        return texts[name]

    def wait_text(
        self, value: str, name: str = "text", timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Wait until a shared text equals value, to check convergence.

        @param value: The expected content.
        @param name: The Y.Text's name.
        @param timeout: Seconds to wait.
        """
        self._call("wait_text", name=name, equals=value, timeout=timeout)

    def map(self, name: str = "map") -> dict[str, Any]:
        """Return a shared map as JSON.

        @param name: The Y.Map's name.
        @return: Its content.
        """
        content: dict[str, Any] = self.get(map_name=name)["map"]
        return content

    def map_set(self, key: str, value: Any, name: str = "map") -> None:
        """Set a key of a shared map to a JSON value.

        @param key: The key.
        @param value: Any JSON-serialisable value.
        @param name: The Y.Map's name.
        """
        self._call("map_set", name=name, key=key, value=value)

    def wait_map(
        self, key: str, value: Any, name: str = "map", timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Wait until a map key deeply equals value, to check convergence.

        @param key: The key.
        @param value: The expected JSON value.
        @param name: The Y.Map's name.
        @param timeout: Seconds to wait.
        """
        self._call("wait_map", name=name, key=key, equals=value, timeout=timeout)

    def set_awareness(self, state: Mapping[str, Any] | None) -> None:
        """Set (or clear, with None) this client's awareness state.

        @param state: The new local state.
        """
        self._call("set_awareness", state=state)

    def awareness(self) -> dict[str, Any]:
        """Return the awareness states of the other clients, keyed by client id.

        @return: C{{str(clientID): state}}, own state excluded.
        """
        states: dict[str, Any] = self._call("awareness")["states"]
        return states

    def wait_awareness(self, count: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until exactly count other clients' states are known.

        @param count: The expected number of other clients.
        @param timeout: Seconds to wait.
        """
        self._call("wait_awareness", count=count, timeout=timeout)

    def wait_close(
        self, code: int | None = None, timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Wait until the server has closed the socket with code (any, if None).

        Closes recorded before the call count too.

        @param code: The expected close code.
        @param timeout: Seconds to wait.
        """
        self._call("wait_close", code=code, timeout=timeout)

    def wait_status(self, status: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait for a provider status: connecting, connected or disconnected.

        @param status: The expected status.
        @param timeout: Seconds to wait.
        """
        self._call("wait_status", status=status, timeout=timeout)

    def wait_error(
        self, contains: str | None = None, timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Wait for a connection error, such as a refused HTTP upgrade.

        @param contains: A substring the error message must contain, e.g.
            C{"Unexpected server response: 403"}.
        @param timeout: Seconds to wait.
        """
        self._call("wait_error", contains=contains, timeout=timeout)

    def closes(self) -> list[dict[str, Any]]:
        """Return every recorded close as C{{code, reason, wasClean, local}}.

        @return: The closes, oldest first.
        """
        closes: list[dict[str, Any]] = self.get()["closes"]
        return closes

    def stats(self) -> dict[str, Any]:
        """Return counts of opens, closes and connection errors.

        @return: The driver's C{stats} reply.
        """
        return self._call("stats")

    def disconnect(self) -> None:
        """Close the connection and stop reconnecting, like provider.disconnect()."""
        self._call("disconnect")

    def connect_again(self) -> None:
        """Reconnect after disconnect() or a terminal close."""
        self._call("connect_again")

    def destroy(self) -> None:
        """Destroy the provider and its document, freeing the client name."""
        self._call("destroy")
