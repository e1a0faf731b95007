"""
Hostile input against a live twistd Kraken: a short run of bench/fuzz.py on
the WebSocket side (set C{KRAKEN_FUZZ_SEED} to replay one), and wrong
methods, wrong types, bad encodings and huge bodies on every admin route.
"""

from __future__ import annotations

import http.client
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import fuzz
from bench.harness import started_kraken
from tests.server import ADMIN_TOKEN, KrakenProcess

#: Fuzz frames of the short run; bench/fuzz.py defaults to 10,000.
SHORT_RUN_FRAMES = 1500

HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_fuzzed_frames_never_stop_the_server_or_spoil_documents(
    tmp_path: Path,
) -> None:
    """
    1,500 mutated sync, awareness and signaling frames leave the server
    running with only SPEC.md close codes, the good clients in the same
    rooms keep syncing, and every room loads after a restart with every good
    write in it.
    """
    seed = int(os.environ.get("KRAKEN_FUZZ_SEED") or random.randrange(2**32))
    print(f"KRAKEN_FUZZ_SEED={seed}")

    report = fuzz(tmp_path / "data", SHORT_RUN_FRAMES, 45.0, seed)

    assert report.frames >= SHORT_RUN_FRAMES, report
    assert report.server_alive, report
    assert report.crash_lines == [], report
    assert report.unexpected_codes == {}, report
    assert report.stalled_frames == 0, report
    assert report.good_late == 0 and report.good_closed == 0, report
    assert report.good_apply_errors == 0, report
    assert report.rooms_readable == report.rooms, report
    assert report.rooms_missing_writes == 0, report


@pytest.fixture(scope="module")
def admin_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[KrakenProcess]:
    """
    A Kraken with one app, "existing", for the admin routes to act on.
    """
    with started_kraken(tmp_path_factory.mktemp("admin") / "data") as server:
        server.register_app("existing", ["https://existing.example"])
        yield server


def raw_request(
    server: KrakenProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """
    One HTTP request as given, with the admin token unless a header says
    otherwise.
    """
    all_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", **(headers or {})}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        if chunked and body is not None:
            chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
            connection.request(
                method, path, body=chunks, headers=all_headers, encode_chunked=True
            )
        else:
            connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_json_refusal_or_success(
    method: str, status: int, headers: dict[str, str], body: bytes
) -> None:
    """
    The answer is not a server error, and a refusal carries the JSON error
    shape of SPEC.md.
    """
    assert status < 500, (status, body)
    if method == "HEAD" or status == 204:
        return
    assert headers.get("Content-Type") == "application/json", (status, headers)
    parsed = json.loads(body)
    if status >= 400:
        assert set(parsed) == {"error"}, parsed
        assert isinstance(parsed["error"]["code"], str), parsed
        assert isinstance(parsed["error"]["message"], str), parsed


ROUTES = [
    "/health",
    "/api/apps",
    "/api/apps/existing",
    "/api/apps/existing/token",
    "/api/apps/missing",
    "/api/apps/missing/token",
    "/api/apps/existing/other",
    "/api",
    "/api/",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"]
WRONG_METHODS = {
    "/health": {"POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"},
    "/api/apps": {"PUT", "PATCH", "DELETE", "OPTIONS", "FOO"},
    "/api/apps/existing": {"POST", "PUT", "OPTIONS", "FOO"},
    "/api/apps/existing/token": {"GET", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"},
}


@pytest.mark.parametrize("path", ROUTES)
def test_every_method_on_every_route_answers_json_never_500(
    admin_server: KrakenProcess, path: str
) -> None:
    """
    Any method on any admin path (DELETE aside, which would remove the app)
    is answered below 500 with JSON, and a wrong method on a known route is
    405 with Allow.
    """
    for method in METHODS:
        if method == "DELETE" and path.startswith("/api/apps/existing"):
            continue
        status, headers, body = raw_request(admin_server, method, path, b"{}")

        assert_json_refusal_or_success(method, status, headers, body)
        if method in WRONG_METHODS.get(path, ()):
            assert status == 405, (method, path, status, body)
            assert headers.get("Allow"), headers


FIELDS = ["app_id", "name", "allowed_origins", "description", "owner_email"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
APP_BODIES = st.dictionaries(
    st.sampled_from([*FIELDS, "token", "created_at", "extra"]), JSON_VALUES
) | st.builds(
    lambda app_id, name, origins: {
        "app_id": app_id,
        "name": name,
        "allowed_origins": origins,
    },
    st.from_regex(r"[a-z0-9-]{1,70}", fullmatch=True),
    JSON_VALUES,
    st.lists(st.text(max_size=30) | JSON_VALUES, max_size=3),
)


@HYPOTHESIS
@given(body=APP_BODIES | JSON_VALUES)
def test_register_with_any_json_body_is_answered_without_server_error(
    admin_server: KrakenProcess, body: Any
) -> None:
    """
    POST /api/apps with any JSON, wrong types included, answers 201, 400 or
    409 with JSON.
    """
    status, headers, raw = raw_request(
        admin_server,
        "POST",
        "/api/apps",
        json.dumps(body).encode("utf-8"),
        {"Content-Type": "application/json"},
    )

    assert status in (201, 400, 409), (status, raw)
    assert_json_refusal_or_success("POST", status, headers, raw)


@HYPOTHESIS
@given(body=APP_BODIES | JSON_VALUES)
def test_patch_with_any_json_body_is_answered_without_server_error(
    admin_server: KrakenProcess, body: Any
) -> None:
    """
    PATCH of an app with any JSON answers 200, 400 or 409 with JSON.
    """
    status, headers, raw = raw_request(
        admin_server,
        "PATCH",
        "/api/apps/existing",
        json.dumps(body).encode("utf-8"),
        {"Content-Type": "application/json"},
    )

    assert status in (200, 400, 409), (status, raw)
    assert_json_refusal_or_success("PATCH", status, headers, raw)


BAD_ENCODINGS = {
    "not-utf8": (b'{"app_id": "\xff\xfe", "name": "x"}', "application/json"),
    "utf16-with-bom": (
        '{"app_id": "u16", "name": "x", "allowed_origins": []}'.encode("utf-16"),
        "application/json",
    ),
    "latin1-charset": ('{"name": "caf\xe9"}'.encode("latin-1"), "application/json"),
    "nul-bytes": (b'{"app_id": "a\x00b", "name": "\x00"}', "application/json"),
    "lone-surrogate": (b'{"app_id": "\\ud800", "name": "x"}', "application/json"),
    "nan": (
        b'{"app_id": "nan", "name": NaN, "allowed_origins": []}',
        "application/json",
    ),
    "deep-nesting": (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    "huge-number": (b'{"app_id": 1' + b"0" * 5000 + b"}", "application/json"),
    "text-plain": (b'{"app_id": "t", "name": "t"}', "text/plain"),
    "form": (b"app_id=x&name=y", "application/x-www-form-urlencoded"),
    "empty": (b"", "application/json"),
}


@pytest.mark.parametrize("case", list(BAD_ENCODINGS), ids=list(BAD_ENCODINGS))
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/apps"), ("PATCH", "/api/apps/existing")],
)
def test_badly_encoded_body_answers_4xx_json(
    admin_server: KrakenProcess, case: str, method: str, path: str
) -> None:
    """
    A body that is not UTF-8 JSON, or not declared as JSON, is refused with
    a 4xx and a JSON error.
    """
    body, content_type = BAD_ENCODINGS[case]

    status, headers, raw = raw_request(
        admin_server, method, path, body, {"Content-Type": content_type}
    )

    assert 400 <= status < 500, (status, raw)
    assert_json_refusal_or_success(method, status, headers, raw)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("size", [64 * 1024 + 1, 4 * 2**20])
def test_huge_body_answers_413_json(
    admin_server: KrakenProcess, size: int, chunked: bool
) -> None:
    """
    A body over 64 KiB is refused with 413 and a JSON error, whether its
    length is declared or it comes in chunks.
    """
    body = b'{"name": "' + b"x" * size + b'"}'

    status, headers, raw = raw_request(
        admin_server,
        "POST",
        "/api/apps",
        body,
        {"Content-Type": "application/json"},
        chunked=chunked,
    )

    assert status == 413, (status, raw[:200])
    assert_json_refusal_or_success("POST", status, headers, raw)


@HYPOTHESIS
@given(
    app_id=st.text(min_size=1, max_size=80),
    method=st.sampled_from(["GET", "PATCH", "DELETE", "POST"]),
    suffix=st.sampled_from(["", "/token", "/", "/x/y"]),
)
def test_any_app_id_in_the_path_answers_json_never_500(
    admin_server: KrakenProcess, app_id: str, method: str, suffix: str
) -> None:
    """
    Any text as the app id in a path, percent-encoded, answers below 500
    with JSON.
    """
    if app_id == "existing" and method in ("DELETE", "POST"):
        return
    path = "/api/apps/" + quote(app_id, safe="") + suffix

    status, headers, raw = raw_request(
        admin_server, method, path, b"{}", {"Content-Type": "application/json"}
    )

    assert_json_refusal_or_success(method, status, headers, raw)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api//apps"),
        ("GET", "/api/apps//token"),
        ("PATCH", "/api/apps//token"),
        ("GET", "//api/apps"),
    ],
)
def test_path_with_doubled_slashes_answers_json_never_500(
    admin_server: KrakenProcess, method: str, path: str
) -> None:
    """
    An admin path with an empty segment is answered below 500 with JSON.
    """
    status, headers, raw = raw_request(
        admin_server, method, path, b"{}", {"Content-Type": "application/json"}
    )

    assert_json_refusal_or_success(method, status, headers, raw)


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer \xff\xfe", "x" * 9000],
)
def test_bad_authorization_answers_401_json(
    admin_server: KrakenProcess, authorization: str
) -> None:
    """
    A missing, malformed or oversized admin token is refused with 401 and a
    JSON error on every admin route.
    """
    for method, path in [
        ("GET", "/api/apps"),
        ("POST", "/api/apps"),
        ("GET", "/api/apps/existing"),
        ("PATCH", "/api/apps/existing"),
        ("DELETE", "/api/apps/existing"),
        ("POST", "/api/apps/existing/token"),
    ]:
        status, headers, raw = raw_request(
            admin_server,
            method,
            path,
            b"{}",
            {"Authorization": authorization, "Content-Type": "application/json"},
        )

        assert status == 401, (method, path, status, raw)
        assert_json_refusal_or_success(method, status, headers, raw)
