"""
Tokens and origins decide who may connect and which app's room they reach,
as stock y-websocket clients and raw upgrade requests see it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.interop.yclients import INTEROP_DIR, Client, NodeDriver
from tests.server import ADMIN_TOKEN, DEPLOYMENT_TOKEN, KrakenProcess, running_kraken

ONE = "https://one.example.com"
TWO = "https://two.example.com"
UNKNOWN = "https://elsewhere.example.com"
WRONG_TOKEN = "kapp_one_not-the-real-secret-value-4711"

_KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class Deployment:
    """
    One Kraken, shared by the tests that only get refused, with two apps.
    """

    kraken: KrakenProcess
    driver: NodeDriver
    token_one: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """
    A Kraken with app-one (origin ONE) and app-two (origin TWO), and a driver.
    """
    data_dir = tmp_path_factory.mktemp("refusals") / "data"
    for kraken in running_kraken(data_dir):
        token_one = kraken.register_app("app-one", [ONE])
        kraken.register_app("app-two", [TWO])
        with NodeDriver.start(cwd=INTEROP_DIR) as driver:
            yield Deployment(kraken, driver, token_one)


def refused(
    driver: NodeDriver, client_id: str, kraken: KrakenProcess, **fields: Any
) -> Client:
    """
    A stock client, not reconnecting, for a connection the server refuses.
    """
    return driver.client(
        client_id, url=kraken.ws_url, room="r", reconnect=False, **fields
    )


def refusal_lines(kraken: KrakenProcess) -> list[str]:
    """
    The log lines of refused handshakes so far.
    """
    return [
        line for line in kraken.log_text().splitlines() if "Handshake refused" in line
    ]


def upgrade(
    kraken: KrakenProcess, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """
    Send one WebSocket upgrade request and return the status, the headers
    (lower-case names) and the body of the answer.
    """
    connection = http.client.HTTPConnection("127.0.0.1", kraken.port, timeout=5)
    try:
        connection.request(
            "GET",
            path,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
                **(headers or {}),
            },
        )
        answer = connection.getresponse()
        body = answer.read()
        return (
            answer.status,
            {name.lower(): value for name, value in answer.getheaders()},
            body,
        )
    finally:
        connection.close()


def assert_error_body(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """
    Check that C{body} is SPEC.md's JSON refusal and return its error.
    """
    assert headers.get("content-type", "").startswith("application/json"), headers
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and set(parsed) == {"error"}, parsed
    error: dict[str, Any] = parsed["error"]
    assert set(error) <= {"code", "message", "field"}, error
    assert isinstance(error["code"], str) and _KEBAB.fullmatch(error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    return error


def test_apps_with_the_same_room_name_stay_apart(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Two apps' clients in a room of one name each see only their own app's edits.
    """
    token_one = kraken.register_app("app-one")
    token_two = kraken.register_app("app-two")
    url = kraken.ws_url
    one = driver.client("one", url=url, room="readme", token=token_one)
    two = driver.client("two", url=url, room="readme", token=token_two)
    one.wait_synced()
    two.wait_synced()
    one.insert(0, "app one text")
    one.map_set("owner", "one")
    two.insert(0, "app two text")
    two.map_set("owner", "two")

    one_late = driver.client("one-late", url=url, room="readme", token=token_one)
    two_late = driver.client(
        "two-late", url=url + "/doc", room="readme", token=token_two
    )
    one_late.wait_synced()
    two_late.wait_synced()
    one_late.wait_text("app one text")
    two_late.wait_text("app two text")
    assert one_late.map() == {"owner": "one"}
    assert two_late.map() == {"owner": "two"}
    assert one.text() == "app one text"
    assert two.text() == "app two text"


def test_deployment_token_with_an_origin_selects_that_origins_app(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    With the deployment token the Origin header picks the app and its rooms.
    """
    token_one = kraken.register_app("origin-one", [ONE])
    token_two = kraken.register_app("origin-two", [TWO])
    url = kraken.ws_url
    writer_one = driver.client("w1", url=url, room="board", token=token_one)
    writer_two = driver.client("w2", url=url, room="board", token=token_two)
    writer_one.wait_synced()
    writer_two.wait_synced()
    writer_one.insert(0, "board of one")
    writer_two.insert(0, "board of two")

    browser_one = driver.client(
        "b1", url=url, room="board", token=DEPLOYMENT_TOKEN, origin=ONE
    )
    # Origins compare as scheme://host[:port] with the default port dropped.
    browser_two = driver.client(
        "b2",
        url=url + "/doc",
        room="board",
        token=DEPLOYMENT_TOKEN,
        origin="https://TWO.example.com:443",
    )
    browser_one.wait_text("board of one")
    browser_two.wait_text("board of two")

    browser_one.insert(0, "> ")
    writer_one.wait_text("> board of one")
    assert writer_two.text() == "board of two"


def test_app_token_in_authorization_header_or_with_an_allowed_origin_connects(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    An app token works as a Bearer header, and with one of its app's origins.
    """
    token = kraken.register_app("header-app", [ONE])
    url = kraken.ws_url
    bearer = driver.client("bearer", url=url, room="r", authorization=f"Bearer {token}")
    with_origin = driver.client("origin", url=url, room="r", token=token, origin=ONE)
    bearer.wait_synced()
    with_origin.wait_synced()
    bearer.insert(0, "both in")
    with_origin.wait_text("both in")


@pytest.mark.parametrize(
    ("case", "fields", "status"),
    [
        ("missing token", {}, 401),
        ("wrong app token", {"token": WRONG_TOKEN}, 401),
        ("unknown token", {"token": "nothing-like-a-token"}, 401),
        ("wrong bearer", {"authorization": f"Bearer {WRONG_TOKEN}"}, 401),
        ("deployment token without origin", {"token": DEPLOYMENT_TOKEN}, 403),
        (
            "deployment token with unregistered origin",
            {"token": DEPLOYMENT_TOKEN, "origin": UNKNOWN},
            403,
        ),
        ("app token with another app's origin", {"token": "<one>", "origin": TWO}, 403),
        (
            "app token with unregistered origin",
            {"token": "<one>", "origin": UNKNOWN},
            403,
        ),
    ],
)
def test_stock_client_sees_the_handshake_refused(
    deployment: Deployment, case: str, fields: dict[str, str], status: int
) -> None:
    """
    A handshake with a bad token or origin is refused with 401 or 403.
    """
    kraken = deployment.kraken
    token_one = deployment.token_one
    fields = {k: token_one if v == "<one>" else v for k, v in fields.items()}

    logged = refusal_lines(kraken)

    client = refused(deployment.driver, case, kraken, **fields)
    client.wait_error(f"Unexpected server response: {status}")
    stats = client.stats()
    assert stats["opens"] == 0, case
    assert stats["synced"] is False, case
    deadline = time.monotonic() + 5
    while refusal_lines(kraken) == logged:
        assert time.monotonic() < deadline, "the refusal was not logged"
        time.sleep(0.02)
    assert f"status {status}" in refusal_lines(kraken)[-1]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/doc/room", {}, 401),
        ("/room?token=" + WRONG_TOKEN, {}, 401),
        ("/doc/room", {"Authorization": "Bearer not-a-token"}, 401),
        ("/doc/room?token=" + DEPLOYMENT_TOKEN, {}, 403),
        ("/room?token=" + DEPLOYMENT_TOKEN, {"Origin": UNKNOWN}, 403),
        ("/doc/room?token=<one>", {"Origin": TWO}, 403),
        ("/doc/?token=<one>", {}, 400),
        ("/?token=<one>", {}, 400),
        ("/doc/bad%01name?token=<one>", {}, 400),
        ("/doc/" + "x" * 513 + "?token=<one>", {}, 400),
    ],
)
def test_refused_handshake_answers_with_the_json_error_shape(
    deployment: Deployment, path: str, headers: dict[str, str], status: int
) -> None:
    """
    A refused upgrade request gets its status and a JSON error body.
    """
    answer_status, answer_headers, body = upgrade(
        deployment.kraken, path.replace("<one>", deployment.token_one), headers
    )

    assert answer_status == status, body
    assert_error_body(answer_headers, body)


def test_plain_http_on_a_doc_path_is_426_with_a_json_body(
    kraken: KrakenProcess,
) -> None:
    """
    A GET without an upgrade on /doc/ROOM is answered 426 with a JSON error.
    """
    token = kraken.register_app("plain-app")
    for path in ("/doc/x", f"/doc/org/notes?token={token}"):
        answer = kraken.request("GET", path, token=None)
        assert answer.status == 426, path
        headers = {name.lower(): value for name, value in answer.headers.items()}
        assert headers.get("upgrade", "").lower() == "websocket", headers
        error = assert_error_body(headers, answer.raw)
        assert error["code"] == "upgrade-required"


def test_log_never_contains_a_token(kraken: KrakenProcess, driver: NodeDriver) -> None:
    """
    Accepted and refused handshakes and admin calls leave no token in the log.
    """
    app_token = kraken.register_app("log-app", [ONE])
    url = kraken.ws_url
    by_query = driver.client("query", url=url, room="secret-room", token=app_token)
    by_header = driver.client(
        "header", url=url, room="secret-room", authorization=f"Bearer {app_token}"
    )
    by_origin = driver.client(
        "origin",
        url=url + "/doc",
        room="secret-room",
        token=DEPLOYMENT_TOKEN,
        origin=ONE,
    )
    for client in (by_query, by_header, by_origin):
        client.wait_synced()
    by_query.insert(0, "text")
    by_origin.wait_text("text")

    refused(driver, "wrong", kraken, token=WRONG_TOKEN).wait_error("401")
    refused(driver, "no-origin", kraken, token=DEPLOYMENT_TOKEN).wait_error("403")
    refused(driver, "bad-origin", kraken, token=app_token, origin=TWO).wait_error("403")
    assert upgrade(kraken, f"/doc/x?a=1&token={DEPLOYMENT_TOKEN}")[0] == 403
    assert upgrade(kraken, f"/x?token={WRONG_TOKEN}&b=2")[0] == 401
    assert kraken.request("GET", f"/doc/x?token={app_token}", token=None).status == 426

    replaced = kraken.request("POST", "/api/apps/log-app/token")
    assert replaced.status == 200
    new_token: str = replaced.json["token"]
    by_query.wait_close(4401)
    fresh = driver.client("fresh", url=url, room="secret-room", token=new_token)
    fresh.wait_text("text")
    refused(driver, "old", kraken, token=app_token).wait_error("401")
    assert kraken.request("GET", "/api/apps", token=WRONG_TOKEN).status == 401

    for client_id in ("query", "header", "origin", "fresh"):
        driver.call("destroy", id=client_id)
    kraken.stop(signal.SIGTERM)
    kraken.wait_for_log(r"Server Shut Down")
    log = kraken.log_text()

    assert "Connection closed: app log-app" in log
    assert "Handshake refused" in log
    secrets = {
        "app token": app_token,
        "replacement token": new_token,
        "deployment token": DEPLOYMENT_TOKEN,
        "admin token": ADMIN_TOKEN,
        "wrong token": WRONG_TOKEN,
    }
    for name, token in (("app", app_token), ("replacement", new_token)):
        secrets[f"random part of the {name} token"] = token[len("kapp_log-app_") :]
    leaked = [name for name, secret in secrets.items() if secret in log]
    assert not leaked, f"the log shows the {', '.join(leaked)}"
