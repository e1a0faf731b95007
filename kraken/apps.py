"""
The app registry: which apps exist, which origins and tokens admit to them.

An app is a namespace.  Every room key is C{{app_id}}:{{room}}, and the app
comes from the token or the Origin header checked here, never from anything
else the client names, so no client can reach another app's rooms.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from kraken.errors import ApiError, bad_field

if TYPE_CHECKING:
    from kraken.store import AppStore

_APP_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_ORIGINS = 100
APP_TOKEN_PREFIX = "kapp_"

_EDITABLE = ("name", "allowed_origins", "description", "owner_email")


@dataclass(frozen=True, slots=True)
class App:
    """
    A registered application.

    @ivar allowed_origins: normalised origins (see L{normalise_origin}).
    @ivar created_at: RFC 3339 time of registration, in UTC.
    """

    app_id: str
    name: str
    allowed_origins: tuple[str, ...]
    description: str | None
    owner_email: str | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        """
        The public description of the app; it never holds a token.
        """
        return {
            "app_id": self.app_id,
            "name": self.name,
            "allowed_origins": list(self.allowed_origins),
            "description": self.description,
            "owner_email": self.owner_email,
            "created_at": self.created_at,
        }


def normalise_origin(text: str) -> str:
    """
    Reduce an origin to C{scheme://host[:port]}, lower-case, without the
    scheme's default port.

    @raise ValueError: C{text} is not an origin (it has a path, a query,
        credentials, or no host).
    """
    if not text.isascii() or any(c.isspace() for c in text):
        raise ValueError("an origin is ASCII without spaces")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme) or "://" not in text:
        raise ValueError("an origin starts with scheme://")
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("an origin has no path, query or credentials")
    if text.endswith("?") or text.endswith("#"):
        raise ValueError("an origin has no path, query or credentials")

    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if not host or not _HOST.fullmatch(host):
        raise ValueError("an origin names a host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("an origin's port is a number up to 65535") from None
    if parts.netloc.endswith(":"):
        raise ValueError("an origin's port is a number up to 65535")

    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def hash_token(token: str) -> str:
    """
    The stored form of an app token (tokens are random, so a plain hash
    suffices).
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(given: str, expected: str) -> bool:
    """
    Compare two secrets in constant time, whatever their lengths.
    """
    return hmac.compare_digest(
        hashlib.sha256(given.encode("utf-8")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    )


def new_app_token(app_id: str) -> str:
    """
    A fresh app token; it names its app so that checking it needs no search.
    """
    return f"{APP_TOKEN_PREFIX}{app_id}_{secrets.token_urlsafe(32)}"


def _token_app_id(token: str) -> str | None:
    if not token.startswith(APP_TOKEN_PREFIX):
        return None
    app_id, _, secret = token[len(APP_TOKEN_PREFIX) :].partition("_")
    return app_id if secret else None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encodable(field: str, value: str) -> str:
    """
    JSON may carry lone UTF-16 surrogates, which no UTF-8 text can hold.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_field(field, f"{field} holds an unpaired surrogate") from None
    return value


def _string(body: Mapping[str, Any], field: str, limit: int) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise bad_field(field, f"{field} must be a non-empty string")
    if len(value) > limit:
        raise bad_field(field, f"{field} must be at most {limit} characters")
    return _encodable(field, value)


def _optional_string(
    body: Mapping[str, Any], field: str, limit: int, pattern: re.Pattern[str] | None
) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise bad_field(field, f"{field} must be a string of at most {limit} chars")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad_field(field, f"{field} is not valid")
    return _encodable(field, value)


def _origins(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("allowed_origins")
    if not isinstance(value, list) or len(value) > MAX_ORIGINS:
        raise bad_field(
            "allowed_origins",
            f"allowed_origins must be a list of at most {MAX_ORIGINS} origins",
        )
    origins: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise bad_field("allowed_origins", "every origin must be a string")
        try:
            origin = normalise_origin(item)
        except ValueError as error:
            raise bad_field(
                "allowed_origins", f"{item[:100]!r} is not an origin: {error}"
            ) from None
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _require_object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid-body", "The body must be a JSON object.")
    return body


def parse_new_app(body: object) -> App:
    """
    Validate the body of a registration.

    @raise ApiError: 400 naming the first field at fault.
    """
    fields = _require_object(body)
    unknown = sorted(set(fields) - {"app_id", *_EDITABLE})
    if unknown:
        raise bad_field(unknown[0], f"{unknown[0]} is not a field of an app")

    app_id = fields.get("app_id")
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
        raise bad_field(
            "app_id",
            "app_id must be a slug of 1 to 63 lower-case letters, digits and "
            "hyphens, starting with a letter or digit",
        )
    if "allowed_origins" not in fields:
        raise bad_field("allowed_origins", "allowed_origins is required")

    return App(
        app_id=app_id,
        name=_string(fields, "name", MAX_NAME),
        allowed_origins=_origins(fields),
        description=_optional_string(fields, "description", MAX_DESCRIPTION, None),
        owner_email=_optional_string(fields, "owner_email", 320, _EMAIL),
        created_at=_now(),
    )


def parse_app_changes(app: App, body: object) -> App:
    """
    Apply the fields of a PATCH body to C{app}.

    @raise ApiError: 400 naming the first field at fault.
    """
    fields = _require_object(body)
    for field in fields:
        if field not in _EDITABLE:
            raise bad_field(field, f"{field} cannot be changed")

    changes: dict[str, Any] = {}
    if "name" in fields:
        changes["name"] = _string(fields, "name", MAX_NAME)
    if "allowed_origins" in fields:
        changes["allowed_origins"] = _origins(fields)
    if "description" in fields:
        changes["description"] = _optional_string(
            fields, "description", MAX_DESCRIPTION, None
        )
    if "owner_email" in fields:
        changes["owner_email"] = _optional_string(fields, "owner_email", 320, _EMAIL)
    return replace(app, **changes)


@dataclass(frozen=True, slots=True)
class Admission:
    """
    Who a WebSocket connection is, decided at the handshake.

    @ivar origin: the normalised Origin header, or C{None} without one.
    @ivar by_app_token: whether an app token (rather than the deployment
        token) admitted it; replacing the app token closes exactly these.
    """

    app_id: str
    room: str
    origin: str | None
    by_app_token: bool

    @property
    def key(self) -> str:
        """
        The internal room key, C{{app_id}}:{{room}}.
        """
        return f"{self.app_id}:{self.room}"


class AppRegistry:
    """
    Every registered app, kept in memory and written through to the store.

    Changes are serialised, so that two concurrent registrations cannot both
    claim one id or origin.
    """

    log = Logger()

    def __init__(
        self,
        store: AppStore,
        deployment_token: str,
        apps: Iterable[tuple[App, str]] = (),
    ) -> None:
        self._store = store
        self._deployment_token = deployment_token
        self._apps: dict[str, App] = {}
        self._token_hashes: dict[str, str] = {}
        self._origins: dict[str, str] = {}
        self._lock = DeferredLock()
        for app, token_hash in apps:
            self._remember(app, token_hash)

    def _remember(self, app: App, token_hash: str) -> None:
        self._forget(app.app_id)
        self._apps[app.app_id] = app
        self._token_hashes[app.app_id] = token_hash
        for origin in app.allowed_origins:
            self._origins[origin] = app.app_id

    def _forget(self, app_id: str) -> None:
        old = self._apps.pop(app_id, None)
        self._token_hashes.pop(app_id, None)
        if old is not None:
            for origin in old.allowed_origins:
                self._origins.pop(origin, None)

    def apps(self) -> list[App]:
        """
        Every app, oldest first.
        """
        return list(self._apps.values())

    def get(self, app_id: str) -> App:
        """
        @raise ApiError: 404 for an unknown app.
        """
        app = self._apps.get(app_id)
        if app is None:
            raise ApiError(404, "app-not-found", f"No app has the id {app_id!r}.")
        return app

    def app_for_origin(self, origin: str) -> str | None:
        """
        The app that claims C{origin} (normalised), if any.
        """
        return self._origins.get(origin)

    def _check_origins_free(self, app_id: str, origins: Iterable[str]) -> None:
        for origin in origins:
            owner = self._origins.get(origin)
            if owner is not None and owner != app_id:
                raise ApiError(
                    409,
                    "origin-taken",
                    f"The origin {origin} already belongs to another app.",
                    field="allowed_origins",
                )

    def _locked(self, work: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        return self._lock.run(work)

    def register(self, body: object) -> Deferred[tuple[App, str]]:
        """
        Validate and store a new app.

        @return: the app and its token, which is shown this once.
        """
        app = parse_new_app(body)

        async def register() -> tuple[App, str]:
            if app.app_id in self._apps:
                raise ApiError(
                    409,
                    "app-id-taken",
                    f"The app id {app.app_id!r} is taken.",
                    field="app_id",
                )
            self._check_origins_free(app.app_id, app.allowed_origins)
            token = new_app_token(app.app_id)
            await self._store.insert_app(app, hash_token(token))
            self._remember(app, hash_token(token))
            self.log.info("App {app} registered", app=app.app_id)
            return app, token

        return self._locked(lambda: Deferred.fromCoroutine(register()))

    def change(self, app_id: str, body: object) -> Deferred[tuple[App, set[str]]]:
        """
        Apply a PATCH.

        @return: the changed app and the origins it no longer allows.
        """

        async def change() -> tuple[App, set[str]]:
            old = self.get(app_id)
            app = parse_app_changes(old, body)
            self._check_origins_free(app_id, app.allowed_origins)
            await self._store.update_app(app)
            self._remember(app, self._token_hashes[app_id])
            removed = set(old.allowed_origins) - set(app.allowed_origins)
            self.log.info("App {app} changed", app=app_id)
            return app, removed

        return self._locked(lambda: Deferred.fromCoroutine(change()))

    def replace_token(self, app_id: str) -> Deferred[str]:
        """
        Issue a new app token; the old one stops working.
        """

        async def replace_token() -> str:
            app = self.get(app_id)
            token = new_app_token(app_id)
            await self._store.set_token_hash(app_id, hash_token(token))
            self._remember(app, hash_token(token))
            self.log.info("App {app} token replaced", app=app_id)
            return token

        return self._locked(lambda: Deferred.fromCoroutine(replace_token()))

    def delete(
        self, app_id: str, close_connections: Callable[[], None]
    ) -> Deferred[None]:
        """
        Remove an app and all of its documents.

        The app stops admitting and C{close_connections} runs before the store
        deletes anything, so that no write of the app can land after the
        deletion; if the store fails, the app is restored.
        """

        async def delete() -> None:
            app = self.get(app_id)
            token_hash = self._token_hashes[app_id]
            self._forget(app_id)
            close_connections()
            try:
                await self._store.delete_app(app_id)
            except Exception:
                self._remember(app, token_hash)
                raise
            self.log.info("App {app} deleted with its documents", app=app_id)

        return self._locked(lambda: Deferred.fromCoroutine(delete()))

    def admit(
        self, token: str | None, origin_header: str | None, room: str
    ) -> Admission:
        """
        Decide which app a connection belongs to, from its token and Origin.

        @raise ApiError: 401 for a missing or wrong token, 403 for an origin
            that the token does not allow.
        """
        if not token:
            raise ApiError(401, "token-missing", "A token is required.")
        origin = _request_origin(origin_header)

        if tokens_equal(token, self._deployment_token):
            if origin is None:
                raise ApiError(
                    403,
                    "origin-required",
                    "The deployment token needs an Origin header to choose the app.",
                )
            app_id = self._origins.get(origin)
            if app_id is None:
                raise ApiError(
                    403, "origin-not-allowed", "The origin belongs to no app."
                )
            return Admission(app_id, room, origin, by_app_token=False)

        app_id = _token_app_id(token)
        expected = self._token_hashes.get(app_id or "")
        given = hash_token(token)
        if (
            app_id is None
            or expected is None
            or not hmac.compare_digest(given, expected)
        ):
            raise ApiError(401, "token-invalid", "The token is not valid.")
        if origin is not None and origin not in self._apps[app_id].allowed_origins:
            raise ApiError(
                403, "origin-not-allowed", "The origin is not allowed for this app."
            )
        return Admission(app_id, room, origin, by_app_token=True)


def _request_origin(header: str | None) -> str | None:
    """
    The normalised Origin of a request; C{None} when it sent none.

    An Origin that cannot be normalised (C{null} from a sandboxed page, say)
    is kept verbatim, so that it matches no app.
    """
    if header is None or header == "":
        return None
    try:
        return normalise_origin(header)
    except ValueError:
        return header
