"""
Findings of a new user's attempts to break Kraken, each with the test that
would have caught it: malformed handshakes, secrets in odd places, bodies
too large to keep, private files.
"""

from __future__ import annotations

import io
import json
import socket
import stat
from pathlib import Path

import pytest
from twisted.web.test.requesthelper import DummyChannel

from kraken.admin import MAX_BODY_BYTES
from kraken.site import KrakenRequest
from tests.server import DEPLOYMENT_TOKEN, KrakenProcess

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def raw_request(server: KrakenProcess, head: str) -> tuple[str, bytes]:
    """
    Send one raw HTTP request; return the status line and the body.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    header, _, body = answer.partition(b"\r\n\r\n")
    status = header.split(b"\r\n", 1)[0].decode("latin-1")
    if b"transfer-encoding: chunked" in header.lower():
        body = _unchunk(body)
    return status, body


def _complete(answer: bytes) -> bool:
    header, _, body = answer.partition(b"\r\n\r\n")
    if header.startswith(b"HTTP/1.1 101 "):
        return True
    if b"transfer-encoding: chunked" in header.lower():
        return body.endswith(b"0\r\n\r\n")
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def upgrade(path: str, *, method: str = "GET", **headers: str) -> str:
    """
    An upgrade request with the usual headers, overridable one by one.
    """
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(
    ("overrides", "method", "status"),
    [
        ({"Sec_WebSocket_Key": ""}, "GET", 400),
        ({"Sec_WebSocket_Key": "c2hvcnQ="}, "GET", 400),
        ({"Sec_WebSocket_Version": "abc"}, "GET", 400),
        ({"Connection": "keep-alive"}, "GET", 400),
        ({}, "POST", 405),
    ],
    ids=["no-key", "short-key", "bad-version", "no-connection-upgrade", "post"],
)
def test_malformed_upgrade_is_refused_with_json(
    kraken: KrakenProcess, overrides: dict[str, str], method: str, status: int
) -> None:
    """
    An upgrade request Autobahn would refuse with a bare status line gets a
    JSON refusal from Kraken first.
    """
    token = kraken.register_app("shapes")

    line, body = raw_request(
        kraken, upgrade(f"/room?token={token}", method=method, **overrides)
    )

    assert line.split(" ")[1] == str(status)
    assert set(json.loads(body)["error"]) >= {"code", "message"}


def test_fragment_in_url_is_refused_and_its_token_never_logged(
    kraken: KrakenProcess,
) -> None:
    """
    A URL with a fragment carrying a valid token is refused with JSON, and
    the token appears nowhere in the log.
    """
    token = kraken.register_app("fragments")

    line, body = raw_request(kraken, upgrade(f"/a#b?token={token}"))

    assert line.split(" ")[1] == "400"
    assert json.loads(body)["error"]["code"] == "invalid-url"
    kraken.wait_for_log("Handshake refused")
    assert token not in kraken.log_text()


@pytest.mark.parametrize("name", ["tok%65n", "%74oken", "TOKEN"])
def test_token_under_an_encoded_parameter_name_is_not_logged(
    kraken: KrakenProcess, name: str
) -> None:
    """
    The access log omits query strings, so a token sent under any spelling
    of its name stays out of it.
    """
    line, _ = raw_request(
        kraken,
        f"GET /nothing?{name}={DEPLOYMENT_TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n",
    )

    assert line.split(" ")[1] == "404"
    kraken.wait_for_log("GET /nothing")
    assert DEPLOYMENT_TOKEN not in kraken.log_text()


@pytest.mark.parametrize(
    ("target", "referer"),
    [
        ("/nothing", "http://localhost:3000/page?token={token}"),
        ("/nothing", "http://localhost:3000/page#token={token}"),
        ("/nothing;token={token}", ""),
    ],
)
def test_token_in_a_referer_or_path_parameter_is_not_logged(
    kraken: KrakenProcess, target: str, referer: str
) -> None:
    """
    A page opened with its token in its address sends that address as
    C{Referer}; the access log keeps the referring page without its query
    or fragment, and a request path without its parameters.
    """
    head = f"GET {target.format(token=DEPLOYMENT_TOKEN)} HTTP/1.1\r\nHost: x\r\n"
    if referer:
        head += f"Referer: {referer.format(token=DEPLOYMENT_TOKEN)}\r\n"

    line, _ = raw_request(kraken, head + "\r\n")

    assert line.split(" ")[1] == "404"
    logged = kraken.wait_for_log("GET /nothing")
    assert DEPLOYMENT_TOKEN not in kraken.log_text()
    if referer:
        assert '"http://localhost:3000/page?<query omitted>"' in logged


def test_absolute_form_request_target_names_the_right_room(
    kraken: KrakenProcess,
) -> None:
    """
    GET http://host/room joins the room "room", as GET /room does.
    """
    token = kraken.register_app("absolute")

    line, _ = raw_request(
        kraken,
        upgrade(f"http://127.0.0.1:{kraken.port}/abs-room?token={token}"),
    )

    assert line.split(" ")[1] == "101"
    kraken.wait_for_log(r"Connection closed: app absolute, room abs-room,")


def test_text_fields_with_lone_surrogates_are_refused(kraken: KrakenProcess) -> None:
    """
    A name, description or e-mail holding an unpaired surrogate answers 400
    naming the field, never 500.
    """
    for field in ["name", "description", "owner_email"]:
        body = {"app_id": "surrogate", "name": "ok", "allowed_origins": []}
        body[field] = "a\ud800@b"
        answer = kraken.request("POST", "/api/apps", body)
        assert answer.status == 400, field
        assert answer.json["error"]["field"] == field


def test_deeply_nested_json_body_is_refused(kraken: KrakenProcess) -> None:
    """
    A small body nested deeper than the parser's recursion limit answers
    400 invalid-json, never 500.
    """
    depth = 5000
    raw = (
        b'{"app_id": "deep", "name": "n", "allowed_origins": [], "description": '
        + b"[" * depth
        + b"]" * depth
        + b"}"
    )

    answer = kraken.request(
        "POST", "/api/apps", raw=raw, headers={"Content-Type": "application/json"}
    )

    assert answer.status == 400
    assert answer.json["error"]["code"] == "invalid-json"


def test_request_keeps_at_most_the_body_limit() -> None:
    """
    A request announcing or sending a huge body keeps only the bytes the
    API could accept, in memory.
    """
    request = KrakenRequest(DummyChannel())

    request.gotLength(10**9)
    for _ in range(20):
        request.handleContentChunk(b"x" * 100_000)

    assert request.content is not None
    assert request.content.tell() == MAX_BODY_BYTES + 1
    assert isinstance(request.content, io.BytesIO)


def test_data_directory_and_database_are_private(
    kraken: KrakenProcess, tmp_path: Path
) -> None:
    """
    The data directory is mode 0700 and the database files 0600.
    """
    kraken.register_app("private")

    assert stat.S_IMODE(kraken.data_dir.stat().st_mode) == 0o700
    for path in kraken.data_dir.glob("kraken.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=99; bogus",
        "x-webkit-deflate-frame, permessage-deflate",
    ],
)
def test_extension_offers_are_declined_not_refused(
    kraken: KrakenProcess, offer: str
) -> None:
    """
    Kraken accepts no WebSocket extension: any offer, even a malformed one,
    is left out of the answer and the handshake succeeds uncompressed.
    """
    token = kraken.register_app("extensions")
    request = upgrade(f"/ext-room?token={token}", Sec_WebSocket_Extensions=offer)

    with socket.create_connection(("127.0.0.1", kraken.port), timeout=10) as sock:
        sock.sendall(request.encode("latin-1"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"closed after {answer!r}"
            answer += chunk
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")

    assert head.startswith("HTTP/1.1 101 "), head
    assert "sec-websocket-extensions" not in head.lower()
