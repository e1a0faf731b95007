"""
The app registry: origin normalisation, validation of admin input, and which
token and Origin admit a connection to which app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from kraken.apps import (
    Admission,
    App,
    AppRegistry,
    hash_token,
    normalise_origin,
    parse_app_changes,
    parse_new_app,
)
from kraken.errors import ApiError

T = TypeVar("T")

DEPLOYMENT_TOKEN = "deployment-token-0123456789"
NOTES_ORIGIN = "https://notes.example.com"
CHAT_ORIGIN = "https://chat.example.com"


@dataclass
class FakeAppStore:
    """
    An in-memory AppStore whose writes succeed at once and are recorded.
    """

    apps: dict[str, App] = field(default_factory=dict)
    token_hashes: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def insert_app(self, app: App, token_hash: str) -> Deferred[None]:
        self.calls.append(f"insert {app.app_id}")
        self.apps[app.app_id] = app
        self.token_hashes[app.app_id] = token_hash
        return succeed(None)

    def set_token_hash(self, app_id: str, token_hash: str) -> Deferred[None]:
        self.calls.append(f"set_token_hash {app_id}")
        self.token_hashes[app_id] = token_hash
        return succeed(None)

    def update_app(self, app: App) -> Deferred[None]:
        self.calls.append(f"update {app.app_id}")
        self.apps[app.app_id] = app
        return succeed(None)

    def delete_app(self, app_id: str) -> Deferred[None]:
        self.calls.append(f"delete {app_id}")
        self.apps.pop(app_id, None)
        self.token_hashes.pop(app_id, None)
        return succeed(None)


def result_of(deferred: Deferred[T]) -> T:
    """
    The result of a Deferred that has already fired with a success.
    """
    results: list[T | Failure] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    assert not isinstance(result, Failure)
    return result


def api_error_of(deferred: Deferred[Any]) -> ApiError:
    """
    The ApiError a Deferred has already failed with.
    """
    results: list[object] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    failure = results[0]
    assert isinstance(failure, Failure), f"expected a failure, got {failure!r}"
    error = failure.value
    assert isinstance(error, ApiError)
    return error


def app_body(**changes: object) -> dict[str, object]:
    """
    A valid registration body, with C{changes} applied (None removes a key).
    """
    body: dict[str, object] = {
        "app_id": "notes",
        "name": "Notes",
        "allowed_origins": [NOTES_ORIGIN],
        "description": "shared notes",
        "owner_email": "dev@example.com",
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def registry_with_apps() -> tuple[AppRegistry, FakeAppStore, dict[str, str]]:
    """
    A registry holding the apps C{notes} and C{chat}, with their tokens.
    """
    store = FakeAppStore()
    registry = AppRegistry(store, DEPLOYMENT_TOKEN)
    _, notes_token = result_of(registry.register(app_body()))
    _, chat_token = result_of(
        registry.register(
            app_body(app_id="chat", name="Chat", allowed_origins=[CHAT_ORIGIN])
        )
    )
    return registry, store, {"notes": notes_token, "chat": chat_token}


# Origins


@pytest.mark.parametrize(
    ("origin", "normalised"),
    [
        ("https://example.com", "https://example.com"),
        ("https://example.com:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://example.com:443", "http://example.com:443"),
        ("https://example.com:80", "https://example.com:80"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("HTTPS://Example.COM", "https://example.com"),
        ("https://EXAMPLE.com:8443", "https://example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://[2001:DB8::1]:443", "https://[2001:db8::1]"),
        ("wss://example.com:443", "wss://example.com"),
        ("app://local", "app://local"),
    ],
)
def test_normalise_origin(origin: str, normalised: str) -> None:
    """
    An origin is reduced to lower-case C{scheme://host[:port]} without the
    scheme's default port.
    """
    assert normalise_origin(origin) == normalised


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "example.com",
        "//example.com",
        "https://",
        "https://:443",
        "https://example.com/",
        "https://example.com/path",
        "https://example.com?",
        "https://example.com?q=1",
        "https://example.com#",
        "https://example.com#top",
        "https://user@example.com",
        "https://user:secret@example.com",
        "https://example.com:",
        "https://example.com:99999",
        "https://example.com:port",
        "https://exa mple.com",
        "https://exämple.com",
        "https://example.com\n",
        "https://ex_ample.com",
        "1http://example.com",
    ],
)
def test_normalise_origin_rejects_what_is_not_an_origin(origin: str) -> None:
    """
    A path, query, fragment, credentials, a missing host, a bad or empty
    port, or characters outside ASCII are refused.
    """
    with pytest.raises(ValueError):
        normalise_origin(origin)


# Registration bodies


def test_parse_new_app_keeps_every_field() -> None:
    """
    A valid body becomes an app with normalised, de-duplicated origins.
    """
    body = app_body(
        allowed_origins=["HTTPS://Notes.Example.com:443", NOTES_ORIGIN, "http://x:1"]
    )

    app = parse_new_app(body)

    assert app.app_id == "notes"
    assert app.name == "Notes"
    assert app.allowed_origins == (NOTES_ORIGIN, "http://x:1")
    assert app.description == "shared notes"
    assert app.owner_email == "dev@example.com"
    assert app.created_at.endswith("Z")


def test_parse_new_app_optional_fields_default_to_none() -> None:
    """
    Without description and owner_email the app has None for both.
    """
    app = parse_new_app(app_body(description=None, owner_email=None))

    assert (app.description, app.owner_email) == (None, None)


def test_parse_new_app_accepts_an_empty_origin_list() -> None:
    """
    An app may have no origins yet; only its app token admits to it.
    """
    assert parse_new_app(app_body(allowed_origins=[])).allowed_origins == ()


@pytest.mark.parametrize("body", [None, [], "notes", 3, ["app_id"]])
def test_parse_new_app_refuses_a_body_that_is_not_an_object(body: object) -> None:
    """
    A body that is not a JSON object is refused with 400 and no field.
    """
    with pytest.raises(ApiError) as raised:
        parse_new_app(body)

    assert raised.value.status == 400
    assert raised.value.field is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"colour": "blue"}, "colour"),
        ({"token": "kapp_x"}, "token"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"app_id": None}, "app_id"),
        ({"app_id": ""}, "app_id"),
        ({"app_id": 7}, "app_id"),
        ({"app_id": "Notes"}, "app_id"),
        ({"app_id": "my_app"}, "app_id"),
        ({"app_id": "-notes"}, "app_id"),
        ({"app_id": "notes:x"}, "app_id"),
        ({"app_id": "a" * 64}, "app_id"),
        ({"app_id": "notes\n"}, "app_id"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 3}, "name"),
        ({"name": ["Notes"]}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"allowed_origins": None}, "allowed_origins"),
        ({"allowed_origins": NOTES_ORIGIN}, "allowed_origins"),
        ({"allowed_origins": [3]}, "allowed_origins"),
        ({"allowed_origins": ["notes.example.com"]}, "allowed_origins"),
        ({"allowed_origins": [NOTES_ORIGIN + "/"]}, "allowed_origins"),
        (
            {"allowed_origins": [f"https://h{i}.example" for i in range(101)]},
            "allowed_origins",
        ),
        ({"description": 5}, "description"),
        ({"description": "d" * 2001}, "description"),
        ({"owner_email": "nobody"}, "owner_email"),
        ({"owner_email": 5}, "owner_email"),
        ({"owner_email": "a@b@c"}, "owner_email"),
    ],
)
def test_parse_new_app_names_the_field_at_fault(
    changes: dict[str, object], field: str
) -> None:
    """
    A missing, wrongly typed or invalid field is refused with 400 naming it.
    """
    with pytest.raises(ApiError) as raised:
        parse_new_app(app_body(**changes))

    assert raised.value.status == 400
    assert raised.value.field == field
    assert field in raised.value.body().decode()


@pytest.mark.parametrize("app_id", ["a", "0", "my-app", "app-2", "a" * 63, "9lives"])
def test_parse_new_app_accepts_short_slugs(app_id: str) -> None:
    """
    An app id of 1 to 63 lower-case letters, digits and hyphens is accepted.
    """
    assert parse_new_app(app_body(app_id=app_id)).app_id == app_id


# Changes


def test_parse_app_changes_applies_the_given_fields() -> None:
    """
    A PATCH changes the fields it names and keeps the others.
    """
    app = parse_new_app(app_body())

    changed = parse_app_changes(
        app, {"name": "Renamed", "allowed_origins": ["HTTP://B.example:80"]}
    )

    assert changed.name == "Renamed"
    assert changed.allowed_origins == ("http://b.example",)
    assert changed.description == app.description
    assert (changed.app_id, changed.created_at) == (app.app_id, app.created_at)


def test_parse_app_changes_with_no_fields_changes_nothing() -> None:
    """
    An empty PATCH leaves the app as it was.
    """
    app = parse_new_app(app_body())

    assert parse_app_changes(app, {}) == app


def test_parse_app_changes_clears_optional_fields_with_null() -> None:
    """
    A null description or owner_email clears it.
    """
    app = parse_new_app(app_body())

    changed = parse_app_changes(app, {"description": None, "owner_email": None})

    assert (changed.description, changed.owner_email) == (None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"app_id": "other"}, "app_id"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "created_at"),
        ({"colour": "blue"}, "colour"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": 3}, "name"),
        ({"allowed_origins": None}, "allowed_origins"),
        ({"allowed_origins": "https://b.example"}, "allowed_origins"),
        ({"allowed_origins": ["https://b.example/x"]}, "allowed_origins"),
        ({"description": 3}, "description"),
        ({"owner_email": "nobody"}, "owner_email"),
    ],
)
def test_parse_app_changes_names_the_field_at_fault(
    body: dict[str, object], field: str
) -> None:
    """
    A field that cannot be changed, or a bad value, is refused with 400
    naming it.
    """
    app = parse_new_app(app_body())

    with pytest.raises(ApiError) as raised:
        parse_app_changes(app, body)

    assert raised.value.status == 400
    assert raised.value.field == field


@pytest.mark.parametrize("body", [None, [], "name"])
def test_parse_app_changes_refuses_a_body_that_is_not_an_object(body: object) -> None:
    """
    A PATCH body that is not a JSON object is refused with 400.
    """
    app = parse_new_app(app_body())

    with pytest.raises(ApiError) as raised:
        parse_app_changes(app, body)

    assert raised.value.status == 400


# Admission


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_refused_with_401(token: str | None) -> None:
    """
    A handshake without a token is refused with 401.
    """
    registry, _, _ = registry_with_apps()

    with pytest.raises(ApiError) as raised:
        registry.admit(token, NOTES_ORIGIN, "readme")

    assert raised.value.status == 401


@pytest.mark.parametrize(
    "token",
    [
        "wrong",
        DEPLOYMENT_TOKEN + "x",
        "kapp_notes_forged",
        "kapp_nobody_secret",
        "kapp_notes",
        "kapp__secret",
    ],
)
def test_wrong_token_is_refused_with_401(token: str) -> None:
    """
    A token that is neither the deployment token nor a current app token is
    refused with 401, whatever the Origin.
    """
    registry, _, _ = registry_with_apps()

    for origin in (None, NOTES_ORIGIN):
        with pytest.raises(ApiError) as raised:
            registry.admit(token, origin, "readme")
        assert raised.value.status == 401


def test_deployment_token_without_origin_is_refused_with_403() -> None:
    """
    The deployment token needs an Origin to pick the app.
    """
    registry, _, _ = registry_with_apps()

    with pytest.raises(ApiError) as raised:
        registry.admit(DEPLOYMENT_TOKEN, None, "readme")

    assert raised.value.status == 403


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "null", "http://notes.example.com"]
)
def test_deployment_token_with_unknown_origin_is_refused_with_403(origin: str) -> None:
    """
    An Origin no app claims is refused with 403 (the scheme is part of it).
    """
    registry, _, _ = registry_with_apps()

    with pytest.raises(ApiError) as raised:
        registry.admit(DEPLOYMENT_TOKEN, origin, "readme")

    assert raised.value.status == 403


def test_deployment_token_with_registered_origin_admits_that_app() -> None:
    """
    With the deployment token, the Origin alone picks the app, compared in
    its normalised form.
    """
    registry, _, _ = registry_with_apps()

    admission = registry.admit(
        DEPLOYMENT_TOKEN, "HTTPS://Notes.Example.com:443", "readme"
    )

    assert admission == Admission("notes", "readme", NOTES_ORIGIN, by_app_token=False)
    assert admission.key == "notes:readme"


def test_same_room_name_from_two_origins_is_two_rooms() -> None:
    """
    The same room name from two apps' origins gives two internal keys.
    """
    registry, _, _ = registry_with_apps()

    notes = registry.admit(DEPLOYMENT_TOKEN, NOTES_ORIGIN, "readme")
    chat = registry.admit(DEPLOYMENT_TOKEN, CHAT_ORIGIN, "readme")

    assert (notes.key, chat.key) == ("notes:readme", "chat:readme")


def test_app_token_without_origin_admits_its_app() -> None:
    """
    An app token without an Origin (a server or script) admits to its app.
    """
    registry, _, tokens = registry_with_apps()

    admission = registry.admit(tokens["notes"], None, "readme")

    assert admission == Admission("notes", "readme", None, by_app_token=True)


def test_app_token_with_its_own_origin_admits_its_app() -> None:
    """
    An app token from one of its app's origins admits to its app.
    """
    registry, _, tokens = registry_with_apps()

    admission = registry.admit(tokens["notes"], "https://NOTES.example.com", "r")

    assert admission == Admission("notes", "r", NOTES_ORIGIN, by_app_token=True)


@pytest.mark.parametrize("origin", [CHAT_ORIGIN, "https://evil.example.com", "null"])
def test_app_token_with_foreign_origin_is_refused_with_403(origin: str) -> None:
    """
    An app token from an origin its app does not allow (another app's, or
    none's) is refused with 403.
    """
    registry, _, tokens = registry_with_apps()

    with pytest.raises(ApiError) as raised:
        registry.admit(tokens["notes"], origin, "readme")

    assert raised.value.status == 403


def test_app_token_cannot_reach_another_app() -> None:
    """
    Whatever room name a client gives, an app token's key is its own app's.
    """
    registry, _, tokens = registry_with_apps()

    admission = registry.admit(tokens["notes"], None, "chat:readme")

    assert admission.app_id == "notes"
    assert admission.key == "notes:chat:readme"


def test_replaced_token_no_longer_admits() -> None:
    """
    After a token is replaced, the old one is refused with 401 and the new
    one admits.
    """
    registry, store, tokens = registry_with_apps()

    new_token = result_of(registry.replace_token("notes"))

    with pytest.raises(ApiError) as raised:
        registry.admit(tokens["notes"], None, "readme")
    assert raised.value.status == 401
    assert registry.admit(new_token, None, "readme").app_id == "notes"
    assert store.token_hashes["notes"] == hash_token(new_token)


def test_deleted_app_no_longer_admits() -> None:
    """
    After an app is deleted, its token is refused with 401 and its origin
    with 403; the connections are closed before the store deletes.
    """
    registry, store, tokens = registry_with_apps()
    closed_before_delete: list[list[str]] = []

    result_of(
        registry.delete("notes", lambda: closed_before_delete.append(list(store.calls)))
    )

    assert closed_before_delete and "delete notes" not in closed_before_delete[0]
    with pytest.raises(ApiError) as raised:
        registry.admit(tokens["notes"], None, "readme")
    assert raised.value.status == 401
    with pytest.raises(ApiError) as raised:
        registry.admit(DEPLOYMENT_TOKEN, NOTES_ORIGIN, "readme")
    assert raised.value.status == 403
    assert "notes" not in store.apps


def test_token_is_stored_only_as_a_hash() -> None:
    """
    The store receives the hash of the app token, never the token.
    """
    _, store, tokens = registry_with_apps()

    assert store.token_hashes["notes"] == hash_token(tokens["notes"])
    assert tokens["notes"] not in store.token_hashes.values()


# Conflicts


def test_register_taken_app_id_is_refused_with_409() -> None:
    """
    Registering an app id that exists is refused with 409 app-id-taken, and
    nothing is stored.
    """
    registry, store, _ = registry_with_apps()
    calls_before = list(store.calls)

    error = api_error_of(
        registry.register(app_body(allowed_origins=["https://other.example"]))
    )

    assert (error.status, error.code, error.field) == (409, "app-id-taken", "app_id")
    assert store.calls == calls_before
    assert registry.app_for_origin("https://other.example") is None
    assert registry.get("notes").allowed_origins == (NOTES_ORIGIN,)


def test_register_taken_origin_is_refused_with_409() -> None:
    """
    Registering an origin another app claims is refused with 409
    origin-taken, and nothing of the new app is stored or claimed.
    """
    registry, store, _ = registry_with_apps()
    calls_before = list(store.calls)

    error = api_error_of(
        registry.register(
            app_body(
                app_id="copycat",
                allowed_origins=[
                    "https://copycat.example",
                    "https://NOTES.example.com",
                ],
            )
        )
    )

    assert (error.status, error.code) == (409, "origin-taken")
    assert error.field == "allowed_origins"
    assert store.calls == calls_before
    assert [app.app_id for app in registry.apps()] == ["notes", "chat"]
    assert registry.app_for_origin("https://copycat.example") is None
    assert registry.app_for_origin(NOTES_ORIGIN) == "notes"


def test_invalid_registration_stores_nothing() -> None:
    """
    A registration with a bad field is refused before anything is stored.
    """
    store = FakeAppStore()
    registry = AppRegistry(store, DEPLOYMENT_TOKEN)

    with pytest.raises(ApiError):
        registry.register(app_body(app_id="Bad Id"))

    assert store.calls == []
    assert registry.apps() == []


def test_change_to_a_taken_origin_is_refused_with_409() -> None:
    """
    A PATCH that claims another app's origin is refused with 409 and changes
    nothing.
    """
    registry, store, _ = registry_with_apps()
    calls_before = list(store.calls)

    error = api_error_of(
        registry.change("notes", {"allowed_origins": [NOTES_ORIGIN, CHAT_ORIGIN]})
    )

    assert (error.status, error.code) == (409, "origin-taken")
    assert store.calls == calls_before
    assert registry.get("notes").allowed_origins == (NOTES_ORIGIN,)
    assert registry.app_for_origin(CHAT_ORIGIN) == "chat"


def test_change_reports_the_origins_removed() -> None:
    """
    A PATCH that drops an origin frees it and reports it, so that the
    connections it admitted can be closed.
    """
    registry, _, _ = registry_with_apps()

    app, removed = result_of(
        registry.change("notes", {"allowed_origins": ["https://new.example"]})
    )

    assert app.allowed_origins == ("https://new.example",)
    assert removed == {NOTES_ORIGIN}
    assert registry.app_for_origin(NOTES_ORIGIN) is None
    assert registry.app_for_origin("https://new.example") == "notes"


def test_unknown_app_is_404() -> None:
    """
    Asking for an app that does not exist is refused with 404.
    """
    registry, _, _ = registry_with_apps()

    with pytest.raises(ApiError) as raised:
        registry.get("nobody")

    assert raised.value.status == 404
    assert api_error_of(registry.replace_token("nobody")).status == 404
