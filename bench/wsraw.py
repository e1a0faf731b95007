"""
A WebSocket client on a plain socket, for the reliability tests and benches.

It speaks just enough of RFC 6455 and of the y-websocket wire format to send
good, bad and huge frames, to stop reading on purpose, and to see every frame
and close code the server sends.  It never connects anywhere but 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

#: Seconds a blocking socket operation may take.
SOCKET_TIMEOUT = 10.0

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MESSAGE_SYNC = 0
MESSAGE_AWARENESS = 1
MESSAGE_QUERY_AWARENESS = 3
SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_BYTES = 64 * 1024
_MAX_FRAMES_PER_WAIT = 100_000


def var_uint(value: int) -> bytes:
    """
    lib0's variable-length unsigned integer.
    """
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_bytes(data: bytes) -> bytes:
    """
    lib0's length-prefixed byte string.
    """
    return var_uint(len(data)) + data


def read_var_uint(data: bytes, position: int) -> tuple[int, int]:
    """
    Decode a lib0 varuint at C{position}; return it and the next position.

    @raise ValueError: the number is truncated.
    """
    value = 0
    shift = 0
    for index in range(position, min(len(data), position + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, index + 1
    raise ValueError("truncated varuint")


def read_var_bytes(data: bytes, position: int) -> tuple[bytes, int]:
    """
    Decode a lib0 length-prefixed byte string.

    @raise ValueError: it runs past the end of C{data}.
    """
    length, position = read_var_uint(data, position)
    if position + length > len(data):
        raise ValueError("truncated byte string")
    return data[position : position + length], position + length


def step1(state_vector: bytes = b"\x00") -> bytes:
    """
    A sync step 1 message; by default that of an empty document.
    """
    return bytes([MESSAGE_SYNC, SYNC_STEP1]) + var_bytes(state_vector)


def step2(update: bytes) -> bytes:
    """
    A sync step 2 message.
    """
    return bytes([MESSAGE_SYNC, SYNC_STEP2]) + var_bytes(update)


def sync_update(update: bytes) -> bytes:
    """
    A sync update message.
    """
    return bytes([MESSAGE_SYNC, SYNC_UPDATE]) + var_bytes(update)


def awareness(entries: list[tuple[int, int, Any]]) -> bytes:
    """
    An awareness message for C{(client_id, clock, state)} entries; a state
    of C{None} removes the client.
    """
    body = var_uint(len(entries))
    for client_id, clock, state in entries:
        body += var_uint(client_id) + var_uint(clock)
        body += var_bytes(json.dumps(state).encode("utf-8"))
    return var_uint(MESSAGE_AWARENESS) + var_bytes(body)


def decode_awareness(message: bytes) -> dict[int, tuple[int, Any]]:
    """
    The C{client_id: (clock, state)} entries of an awareness message.

    @raise ValueError: C{message} is not an awareness message, or truncated.
    """
    message_type, position = read_var_uint(message, 0)
    if message_type != MESSAGE_AWARENESS:
        raise ValueError(f"not an awareness message: {message!r}")
    body, _ = read_var_bytes(message, position)
    count, position = read_var_uint(body, 0)
    entries: dict[int, tuple[int, Any]] = {}
    for _ in range(count):
        client_id, position = read_var_uint(body, position)
        clock, position = read_var_uint(body, position)
        state, position = read_var_bytes(body, position)
        entries[client_id] = (clock, json.loads(state))
    return entries


def sync_payload(message: bytes) -> tuple[int, bytes] | None:
    """
    The sync type and update (or state vector) of a sync message, or
    C{None} for any other message.
    """
    if not message or message[0] != MESSAGE_SYNC:
        return None
    try:
        sync_type, position = read_var_uint(message, 1)
        body, _ = read_var_bytes(message, position)
    except ValueError:
        return None
    return sync_type, body


def mask(payload: bytes, key: bytes) -> bytes:
    """
    XOR C{payload} with the 4-byte masking C{key}, fast for large payloads.
    """
    if not payload:
        return b""
    length = len(payload)
    repeated = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(length, "big")


def frame_bytes(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """
    One masked client frame.
    """
    header = bytearray([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        header.append(0x80 | length)
    elif length < 2**16:
        header.append(0x80 | 126)
        header += struct.pack("!H", length)
    else:
        header.append(0x80 | 127)
        header += struct.pack("!Q", length)
    key = os.urandom(4)
    return bytes(header) + key + mask(payload, key)


@dataclass
class Frame:
    """
    One message or control frame from the server.
    """

    opcode: int
    payload: bytes
    #: Whether the message came in several frames (joined here).
    fragmented: bool = False

    @property
    def close_code(self) -> int | None:
        """
        The code of a close frame, if it carries one.
        """
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


@dataclass
class HTTPAnswer:
    """
    The server's answer to a handshake that it refused.
    """

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class Refused(Exception):
    """
    The server answered the handshake with something other than 101.
    """

    def __init__(self, answer: HTTPAnswer) -> None:
        super().__init__(f"handshake refused with {answer.status}: {answer.body!r}")
        self.answer = answer


def _read_http_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    received = bytearray()
    while b"\r\n\r\n" not in received:
        if len(received) > _MAX_HEADER_BYTES:
            raise ConnectionError("handshake answer too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed during handshake: {bytes(received)!r}")
        received += chunk
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return status, headers, rest


@dataclass
class RawWebSocket:
    """
    A client connection; frames are read only when asked for, so a test can
    stop reading to play a slow client.

    @ivar frames: every data frame received so far (pings are answered and
        not kept), in order.
    @ivar close_code: the code of the server's close frame, once seen.
    @ivar eof: whether the server has closed the TCP connection.
    @ivar answer_pings: whether pings are answered (a dead client does not).
    @ivar answer_close: whether the server's close frame is answered, as a
        well-behaved client does.
    """

    sock: socket.socket
    buffer: bytearray
    frames: list[Frame] = field(default_factory=list)
    close_code: int | None = None
    closed_frame: bool = False
    eof: bool = False
    answer_pings: bool = True
    answer_close: bool = True
    sent_close: bool = False
    _partial: list[bytes] = field(default_factory=list)
    _partial_opcode: int = 0

    @classmethod
    def connect(
        cls,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
        timeout: float = SOCKET_TIMEOUT,
    ) -> RawWebSocket:
        """
        Open a WebSocket to 127.0.0.1:C{port}.

        @param receive_buffer: the socket's C{SO_RCVBUF}, set before
            connecting, to make a slow reader fall behind quickly.
        @raise Refused: the server answered with another status than 101.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
            key = base64.b64encode(os.urandom(16))
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key.decode('ascii')}",
                "Sec-WebSocket-Version: 13",
                *(f"{name}: {value}" for name, value in (headers or {}).items()),
            ]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status, answer_headers, rest = _read_http_answer(sock)
            if status != 101:
                length = int(answer_headers.get("content-length", "0") or 0)
                body = bytearray(rest)
                while len(body) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                raise Refused(HTTPAnswer(status, answer_headers, bytes(body)))
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            if answer_headers.get("sec-websocket-accept") != accept.decode("ascii"):
                raise ConnectionError("wrong Sec-WebSocket-Accept")
        except BaseException:
            sock.close()
            raise
        return cls(sock, bytearray(rest))

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    # Sending

    def send_raw(self, data: bytes) -> None:
        """
        Send bytes as they are (already framed).
        """
        self.sock.sendall(data)

    def send_binary(self, payload: bytes) -> None:
        self.send_raw(frame_bytes(OP_BINARY, payload))

    def send_text(self, payload: bytes | str) -> None:
        raw = payload.encode("utf-8") if isinstance(payload, str) else payload
        self.send_raw(frame_bytes(OP_TEXT, raw))

    def send_ping(self, payload: bytes = b"") -> None:
        self.send_raw(frame_bytes(OP_PING, payload))

    def send_close(self, code: int = 1000) -> None:
        self.sent_close = True
        self.send_raw(frame_bytes(OP_CLOSE, struct.pack("!H", code)))

    # Receiving

    def _parse(self) -> tuple[int, bytes] | None:
        """
        Take one complete frame off the buffer, if there is one: its first
        byte (FIN bit and opcode) and its payload.
        """
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if second & 0x80:
            raise AssertionError("a server must not mask its frames")
        length = second & 0x7F
        position = 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,) = struct.unpack("!H", buffer[2:4])
            position = 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,) = struct.unpack("!Q", buffer[2:10])
            position = 10
        if len(buffer) < position + length:
            return None
        payload = bytes(buffer[position : position + length])
        del buffer[: position + length]
        return first, payload

    def _next_frame(self) -> Frame | None:
        """
        The next complete message or close frame from the buffer, with
        pings answered and fragments joined.
        """
        for _ in range(_MAX_FRAMES_PER_WAIT):
            parsed = self._parse()
            if parsed is None:
                return None
            first, payload = parsed
            opcode = first & 0x0F
            if opcode == OP_PING:
                if self.answer_pings and not self.closed_frame:
                    self.send_raw(frame_bytes(OP_PONG, payload))
                continue
            if opcode == OP_CLOSE:
                self.closed_frame = True
                closing = Frame(OP_CLOSE, payload)
                self.close_code = closing.close_code
                if self.answer_close and not self.sent_close:
                    with contextlib.suppress(OSError):
                        self.send_close(self.close_code or 1000)
                return closing
            if opcode == OP_PONG:
                return Frame(OP_PONG, payload)
            if not first & 0x80:
                if opcode != OP_CONTINUATION:
                    self._partial_opcode = opcode
                self._partial.append(payload)
                continue
            if opcode == OP_CONTINUATION:
                self._partial.append(payload)
                whole = Frame(
                    self._partial_opcode, b"".join(self._partial), fragmented=True
                )
                self._partial = []
                return whole
            return Frame(opcode, payload)
        raise AssertionError("too many control frames in a row")

    def _fill(self, deadline: float) -> bool:
        """
        Read what the socket has, waiting until C{deadline} for something.

        @return: whether bytes arrived (C{False} at the end of the stream).
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the server in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise TimeoutError("nothing from the server in time") from None
        except ConnectionResetError:
            chunk = b""
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def receive(self, deadline: float) -> Frame | None:
        """
        The next data, pong or close frame, waiting until C{deadline};
        C{None} once the server has closed the TCP connection.

        @raise TimeoutError: nothing came in time.
        """
        for _ in range(_MAX_FRAMES_PER_WAIT):
            frame = self._next_frame()
            if frame is not None:
                if frame.opcode in (OP_BINARY, OP_TEXT):
                    self.frames.append(frame)
                return frame
            if self.eof or not self._fill(deadline):
                return None
        raise AssertionError("too many reads")

    def read_available(self) -> list[Frame]:
        """
        Every frame that can be had without waiting.
        """
        frames: list[Frame] = []
        self.sock.setblocking(False)
        try:
            while not self.eof:
                try:
                    chunk = self.sock.recv(1 << 20)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    self.eof = True
                    break
                self.buffer += chunk
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)
        for _ in range(_MAX_FRAMES_PER_WAIT):
            frame = self._next_frame()
            if frame is None:
                break
            if frame.opcode in (OP_BINARY, OP_TEXT):
                self.frames.append(frame)
            frames.append(frame)
        return frames

    def wait_for(self, wanted: Any, timeout: float = SOCKET_TIMEOUT) -> Frame:
        """
        Read until a frame satisfies C{wanted(frame)}; fail on the end of the
        stream or the deadline.
        """
        deadline = time.monotonic() + timeout
        for _ in range(_MAX_FRAMES_PER_WAIT):
            frame = self.receive(deadline)
            if frame is None:
                raise ConnectionError(f"connection ended (close {self.close_code})")
            if wanted(frame):
                return frame
        raise AssertionError("no wanted frame")

    def wait_close(self, timeout: float = SOCKET_TIMEOUT) -> int | None:
        """
        Read until the server's close frame or the end of the stream; return
        the close code (C{None} if the connection ended without one).
        """
        deadline = time.monotonic() + timeout
        for _ in range(_MAX_FRAMES_PER_WAIT):
            frame = self.receive(deadline)
            if frame is None or frame.opcode == OP_CLOSE:
                return self.close_code
        raise AssertionError("no close")

    def sync(self, state_vector: bytes = b"\x00", timeout: float = 10.0) -> bytes:
        """
        Send a step 1 and wait for the server's step 2; return its update.
        """
        self.send_binary(step1(state_vector))
        frame = self.wait_for(
            lambda f: f.opcode == OP_BINARY and f.payload[:2] == b"\x00\x01", timeout
        )
        payload = sync_payload(frame.payload)
        assert payload is not None
        return payload[1]

    def drop(self) -> None:
        """
        Close the TCP connection without a close frame.
        """
        self.sock.close()


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """
    A memory figure of a process from C{/proc/PID/status}, in KiB:
    C{VmRSS} (now) or C{VmHWM} (peak so far).
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise LookupError(f"no {field_name} for process {pid}")
