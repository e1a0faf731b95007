"""
The HTTP API, over real HTTP with treq: every status code and answer shape of
SPEC.md's "Answers" table.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import reactor

from kraken.config import Settings
from kraken.tap import KrakenService, ListeningService

ADMIN = "admin-token-for-http-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
APP_FIELDS = {
    "app_id",
    "name",
    "allowed_origins",
    "description",
    "owner_email",
    "created_at",
}


class Server:
    """
    An in-process Kraken and the base URL of its HTTP API.
    """

    def __init__(self, service: KrakenService, url: str) -> None:
        self.service = service
        self.url = url

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, Any, Any]:
        """
        Make a request; return the status, the parsed JSON body (or C{None})
        and the response headers.
        """
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers = {**AUTH, "Content-Type": "application/json"}
        response = await treq.request(
            method,
            self.url + path,
            data=data,
            headers=AUTH if headers is None else headers,
        )
        content = await response.content()
        parsed = None
        if content:
            assert response.headers.getRawHeaders(b"content-type") == [
                b"application/json"
            ]
            parsed = json.loads(content)
        return response.code, parsed, response.headers

    async def register(self, app_id: str, origins: list[str]) -> dict[str, Any]:
        status, body, _ = await self.call(
            "POST",
            "/api/apps",
            {"app_id": app_id, "name": app_id.title(), "allowed_origins": origins},
        )
        assert status == 201, body
        result: dict[str, Any] = body
        return result


@pytest_twisted.async_yield_fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(
        listen=["tcp:0:interface=127.0.0.1"],
        data_dir=tmp_path,
        admin_token=ADMIN,
        deployment_token="deployment-token-for-http-tests",
    )
    service = KrakenService(settings, reactor)
    service.startService()
    listener = next(s for s in service if isinstance(s, ListeningService))
    assert listener.port is not None
    port = listener.port.getHost().port
    yield Server(service, f"http://127.0.0.1:{port}")
    await service.stopService()


def assert_error(body: Any, code: str, field: str | None = None) -> None:
    """
    The body is SPEC.md's error shape with this code (and field).
    """
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if field is None:
        assert "field" not in error
    else:
        assert error["field"] == field


@pytest_twisted.ensureDeferred
async def test_health_answers_ok(server: Server) -> None:
    """
    /health answers 200 with the status of the store, without auth.
    """
    status, body, _ = await server.call("GET", "/health", headers={})

    assert (status, body) == (200, {"status": "ok", "store": "ok"})


@pytest_twisted.ensureDeferred
async def test_health_answers_503_when_store_fails(server: Server) -> None:
    """
    /health answers 503 with the reason while the store cannot be written.
    """

    def broken() -> None:
        raise OSError("disk I/O error")

    server.service.store._writer.check = broken  # type: ignore[method-assign]

    status, body, headers = await server.call("GET", "/health", headers={})

    assert status == 503
    assert body == {"status": "unavailable", "store": "disk I/O error"}
    assert headers.getRawHeaders(b"retry-after") == [b"5"]


@pytest_twisted.ensureDeferred
async def test_admin_routes_refuse_missing_token(server: Server) -> None:
    """
    Without an admin token every admin route answers 401 with a JSON error.
    """
    for method, path in [
        ("GET", "/api/apps"),
        ("POST", "/api/apps"),
        ("GET", "/api/apps/x"),
        ("PATCH", "/api/apps/x"),
        ("DELETE", "/api/apps/x"),
        ("POST", "/api/apps/x/token"),
        ("GET", "/api/elsewhere"),
    ]:
        status, body, headers = await server.call(method, path, headers={})
        assert status == 401, (method, path)
        assert_error(body, "unauthorized")
        assert headers.getRawHeaders(b"www-authenticate") == [b"Bearer"]


@pytest_twisted.ensureDeferred
async def test_admin_routes_refuse_wrong_token(server: Server) -> None:
    """
    A wrong admin token, or the deployment token, is refused with 401.
    """
    for token in ["wrong", "deployment-token-for-http-tests", ADMIN + "x"]:
        status, body, _ = await server.call(
            "GET", "/api/apps", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 401
        assert_error(body, "unauthorized")


@pytest_twisted.ensureDeferred
async def test_register_answers_app_with_token_once(server: Server) -> None:
    """
    POST /api/apps answers 201 with the app and its token; later answers
    never show the token.
    """
    status, body, _ = await server.call(
        "POST",
        "/api/apps",
        {
            "app_id": "my-app",
            "name": "My Application",
            "allowed_origins": [
                "HTTPS://My-App.example.com:443",
                "http://localhost:3000",
            ],
            "description": "notes",
            "owner_email": "dev@example.com",
        },
    )

    assert status == 201
    assert set(body) == APP_FIELDS | {"token"}
    assert body["allowed_origins"] == [
        "https://my-app.example.com",
        "http://localhost:3000",
    ]
    assert RFC3339.fullmatch(body["created_at"])
    token = body["token"]

    status, listed, _ = await server.call("GET", "/api/apps")
    assert status == 200
    assert set(listed) == {"apps"}
    assert [set(app) for app in listed["apps"]] == [APP_FIELDS]
    status, one, _ = await server.call("GET", "/api/apps/my-app")
    assert status == 200
    assert one == {k: v for k, v in body.items() if k != "token"}
    assert token not in repr(listed) + repr(one)


@pytest_twisted.ensureDeferred
async def test_register_fills_absent_optional_fields_with_null(server: Server) -> None:
    """
    description and owner_email are null when not given.
    """
    body = await server.register("plain", [])

    assert body["description"] is None
    assert body["owner_email"] is None


@pytest_twisted.ensureDeferred
async def test_register_refuses_invalid_bodies_naming_the_field(
    server: Server,
) -> None:
    """
    Each invalid registration answers 400 naming the field, and stores nothing.
    """
    good = {"app_id": "ok-app", "name": "Ok", "allowed_origins": []}
    cases: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "app_id"}, "app_id"),
        ({**good, "app_id": "Not A Slug"}, "app_id"),
        ({**good, "app_id": 7}, "app_id"),
        ({**good, "app_id": "-leading"}, "app_id"),
        ({k: v for k, v in good.items() if k != "name"}, "name"),
        ({**good, "name": ["x"]}, "name"),
        ({k: v for k, v in good.items() if k != "allowed_origins"}, "allowed_origins"),
        ({**good, "allowed_origins": "https://a.example"}, "allowed_origins"),
        ({**good, "allowed_origins": ["https://a.example/path"]}, "allowed_origins"),
        ({**good, "allowed_origins": ["a.example"]}, "allowed_origins"),
        ({**good, "allowed_origins": [3]}, "allowed_origins"),
        ({**good, "description": 5}, "description"),
        ({**good, "owner_email": "not-an-email"}, "owner_email"),
        ({**good, "colour": "red"}, "colour"),
    ]
    for body, field in cases:
        status, answer, _ = await server.call("POST", "/api/apps", body)
        assert status == 400, body
        assert_error(answer, "invalid-field", field)

    _, listed, _ = await server.call("GET", "/api/apps")
    assert listed == {"apps": []}


@pytest_twisted.ensureDeferred
async def test_register_refuses_bad_json_and_bodies(server: Server) -> None:
    """
    Invalid JSON, a non-object, a wrong content type and a huge body are
    refused with 400, 400, 415 and 413.
    """
    headers = {**AUTH, "Content-Type": "application/json"}
    status, body, _ = await server.call(
        "POST", "/api/apps", data=b"{not json", headers=headers
    )
    assert status == 400
    assert_error(body, "invalid-json")

    status, body, _ = await server.call(
        "POST", "/api/apps", data=b"\xff\xfe", headers=headers
    )
    assert status == 400
    assert_error(body, "invalid-json")

    status, body, _ = await server.call("POST", "/api/apps", [1, 2])
    assert status == 400
    assert_error(body, "invalid-body")

    status, body, _ = await server.call(
        "POST",
        "/api/apps",
        data=b"app_id=x",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    assert_error(body, "unsupported-media-type")

    status, body, _ = await server.call(
        "POST", "/api/apps", data=b"[" + b"1," * 100_000 + b"1]", headers=headers
    )
    assert status == 413
    assert_error(body, "body-too-large")


@pytest_twisted.ensureDeferred
async def test_register_refuses_taken_id_and_origin(server: Server) -> None:
    """
    A taken app_id or an origin claimed by another app answers 409 and
    stores nothing.
    """
    await server.register("first", ["https://first.example"])

    status, body, _ = await server.call(
        "POST",
        "/api/apps",
        {"app_id": "first", "name": "Again", "allowed_origins": []},
    )
    assert status == 409
    assert_error(body, "app-id-taken", "app_id")

    status, body, _ = await server.call(
        "POST",
        "/api/apps",
        {
            "app_id": "second",
            "name": "Second",
            "allowed_origins": ["https://FIRST.example:443"],
        },
    )
    assert status == 409
    assert_error(body, "origin-taken", "allowed_origins")

    status, _, _ = await server.call("GET", "/api/apps/second")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_unknown_app_answers_404(server: Server) -> None:
    """
    GET, PATCH, DELETE and token replacement of an unknown app answer 404.
    """
    for method, path, body in [
        ("GET", "/api/apps/ghost", None),
        ("PATCH", "/api/apps/ghost", {"name": "x"}),
        ("DELETE", "/api/apps/ghost", None),
        ("POST", "/api/apps/ghost/token", None),
    ]:
        status, answer, _ = await server.call(method, path, body)
        assert status == 404, (method, path)
        assert_error(answer, "app-not-found")


@pytest_twisted.ensureDeferred
async def test_patch_changes_fields(server: Server) -> None:
    """
    PATCH answers 200 with the changed app; fields not given stay.
    """
    await server.register("edit-me", ["https://a.example"])

    status, body, _ = await server.call(
        "PATCH",
        "/api/apps/edit-me",
        {
            "name": "Renamed",
            "allowed_origins": ["https://b.example"],
            "description": "d",
        },
    )

    assert status == 200
    assert set(body) == APP_FIELDS
    assert body["name"] == "Renamed"
    assert body["allowed_origins"] == ["https://b.example"]
    assert body["description"] == "d"
    _, again, _ = await server.call("GET", "/api/apps/edit-me")
    assert again == body


@pytest_twisted.ensureDeferred
async def test_patch_refuses_bad_fields_and_claimed_origins(server: Server) -> None:
    """
    PATCH answers 400 for invalid or unchangeable fields and 409 for an
    origin of another app, changing nothing.
    """
    await server.register("one", ["https://one.example"])
    await server.register("two", ["https://two.example"])

    status, body, _ = await server.call("PATCH", "/api/apps/two", {"app_id": "x"})
    assert status == 400
    assert_error(body, "invalid-field", "app_id")

    status, body, _ = await server.call("PATCH", "/api/apps/two", {"name": ""})
    assert status == 400
    assert_error(body, "invalid-field", "name")

    status, body, _ = await server.call(
        "PATCH", "/api/apps/two", {"allowed_origins": ["https://one.example"]}
    )
    assert status == 409
    assert_error(body, "origin-taken", "allowed_origins")

    _, two, _ = await server.call("GET", "/api/apps/two")
    assert two["allowed_origins"] == ["https://two.example"]


@pytest_twisted.ensureDeferred
async def test_delete_answers_204_and_forgets_the_app(server: Server) -> None:
    """
    DELETE answers 204 without a body; the app and its origins are gone.
    """
    await server.register("doomed", ["https://doomed.example"])

    status, body, _ = await server.call("DELETE", "/api/apps/doomed")

    assert (status, body) == (204, None)
    status, _, _ = await server.call("GET", "/api/apps/doomed")
    assert status == 404
    await server.register("reborn", ["https://doomed.example"])


@pytest_twisted.ensureDeferred
async def test_replace_token_answers_new_token(server: Server) -> None:
    """
    POST /api/apps/{id}/token answers 200 with a new token; the old one no
    longer admits.
    """
    old = (await server.register("rotating", []))["token"]

    status, body, _ = await server.call("POST", "/api/apps/rotating/token")

    assert status == 200
    assert set(body) == {"app_id", "token"}
    assert body["app_id"] == "rotating"
    assert body["token"] != old
    apps = server.service.apps
    assert apps.admit(body["token"], None, "room").app_id == "rotating"
    try:
        apps.admit(old, None, "room")
    except Exception as error:
        assert getattr(error, "status", None) == 401
    else:
        raise AssertionError("the old token still admits")


@pytest_twisted.ensureDeferred
async def test_wrong_method_answers_405(server: Server) -> None:
    """
    A method a route does not take answers 405 with Allow and a JSON error.
    """
    status, body, headers = await server.call("PUT", "/api/apps")

    assert status == 405
    assert_error(body, "method-not-allowed")
    assert headers.getRawHeaders(b"allow") == [b"GET, HEAD, POST"]


@pytest_twisted.ensureDeferred
async def test_unknown_paths_answer_404_json(server: Server) -> None:
    """
    Unknown paths answer 404 with a JSON error, under /api/ and elsewhere.
    """
    for path in ["/api/nothing", "/nothing", "/"]:
        status, body, _ = await server.call("GET", path)
        assert status == 404, path
        assert_error(body, "not-found")


@pytest_twisted.ensureDeferred
async def test_plain_http_on_doc_path_answers_426(server: Server) -> None:
    """
    A plain GET on /doc/{room} answers 426 with a JSON error.
    """
    status, body, _ = await server.call("GET", "/doc/notes", headers={})

    assert status == 426
    assert_error(body, "upgrade-required")


@pytest_twisted.ensureDeferred
async def test_apps_are_read_back_from_the_store(server: Server) -> None:
    """
    Registered apps, their origins and tokens are read back from SQLite by a
    new server on the same data directory.
    """
    token = (await server.register("durable", ["https://durable.example"]))["token"]

    reopened = KrakenService(server.service.settings, reactor)
    try:
        assert [app.app_id for app in reopened.apps.apps()] == ["durable"]
        assert reopened.apps.admit(token, None, "r").app_id == "durable"
        assert reopened.apps.app_for_origin("https://durable.example") == "durable"
    finally:
        reopened.store._writer.close()
        reopened.store._reader.close()


@pytest_twisted.ensureDeferred
async def test_url_that_is_not_utf8_answers_400_json(server: Server) -> None:
    """
    A path or query that does not decode as UTF-8 answers 400 with a JSON
    error, not Klein's plain-text page.
    """
    for path in ["/api/apps/%ff", "/api/apps?x=%fe", "/health/%c3"]:
        status, body, _ = await server.call("GET", path)
        assert status == 400, path
        assert_error(body, "invalid-url")
