"""
The HTTP API: C{GET /health} and the admin routes under C{/api/apps}.

Every answer is JSON, refusals included (SPEC.md, "Answers").  Admin routes
need C{Authorization: Bearer <admin token>}.
"""

from __future__ import annotations

import json

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from kraken.apps import AppRegistry, tokens_equal
from kraken.errors import ApiError, CloseCode
from kraken.rooms import RoomRegistry
from kraken.store import DocumentStore
from kraken.websocket import Connections

#: The largest admin request body read.
MAX_BODY_BYTES = 64 * 1024

#: Seconds the health check waits for the store.
HEALTH_TIMEOUT = 5.0


def render_json(request: IRequest, status: int, body: object) -> bytes:
    """
    Answer with C{body} as JSON.
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8")


def render_error(request: IRequest, error: ApiError) -> bytes:
    """
    Answer with a refusal's status, headers and JSON body.
    """
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    if error.retry_after is not None:
        request.setHeader(b"Retry-After", str(error.retry_after).encode("ascii"))
    if error.status == 401:
        request.setHeader(b"WWW-Authenticate", b"Bearer")
    return error.body()


def read_json(request: IRequest) -> object:
    """
    Read and parse a JSON request body.

    @raise ApiError: 415 for another content type, 413 for a body over
        L{MAX_BODY_BYTES}, 400 for bytes that are not UTF-8 JSON.
    """
    content_type = (request.getHeader(b"content-type") or b"application/json").split(
        b";"
    )[0]
    if content_type.strip().lower() != b"application/json":
        raise ApiError(
            415, "unsupported-media-type", "Send the body as application/json."
        )

    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(
            413, "body-too-large", f"The body exceeds {MAX_BODY_BYTES} bytes."
        )
    raw = request.content.read(MAX_BODY_BYTES + 1) if request.content else b""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(
            413, "body-too-large", f"The body exceeds {MAX_BODY_BYTES} bytes."
        )

    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid-json", "The body is not valid JSON.") from None


class AdminAPI:
    """
    The Klein application for C{/health} and C{/api/...}.
    """

    app = Klein()
    # Werkzeug would answer /api//apps with a redirect; Kraken answers 404.
    app.url_map.merge_slashes = False
    log = Logger()

    def __init__(
        self,
        admin_token: str,
        apps: AppRegistry,
        rooms: RoomRegistry,
        connections: Connections,
        store: DocumentStore,
        clock: IReactorTime,
    ) -> None:
        self._admin_token = admin_token
        self._apps = apps
        self._rooms = rooms
        self._connections = connections
        self._store = store
        self._clock = clock
        self.shutting_down = False

    def _authorize(self, request: IRequest) -> None:
        header = (request.getHeader(b"authorization") or b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "An admin bearer token is required.")
        if not tokens_equal(token.strip(), self._admin_token):
            raise ApiError(401, "unauthorized", "The admin token is not valid.")

    @app.handle_errors(ApiError)
    def _api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, ApiError)
        return render_error(request, error)

    @app.handle_errors(NotFound)
    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        if request.path.startswith(b"/api/"):
            try:
                self._authorize(request)
            except ApiError as error:
                return render_error(request, error)
        return render_error(request, ApiError(404, "not-found", "No such resource."))

    @app.handle_errors(MethodNotAllowed)
    def _method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, MethodNotAllowed)
        allowed = ", ".join(sorted(error.valid_methods or ()))
        request.setHeader(b"Allow", allowed.encode("ascii"))
        return render_error(
            request,
            ApiError(405, "method-not-allowed", f"Allowed methods: {allowed}."),
        )

    @app.handle_errors(Exception)
    def _unexpected(self, request: IRequest, failure: Failure) -> bytes:
        self.log.failure("Unexpected error answering an HTTP request", failure)
        return render_error(
            request, ApiError(500, "internal-error", "The server failed.")
        )

    @app.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        if self.shutting_down:
            return render_json(
                request, 503, {"status": "unavailable", "store": "shutting down"}
            )
        checked: Deferred[None] = self._store.check()
        checked.addTimeout(HEALTH_TIMEOUT, self._clock)
        try:
            await checked
        except Exception as error:
            reason = str(error) or type(error).__name__
            self.log.error("Health check failed: {reason}", reason=reason)
            request.setHeader(b"Retry-After", b"5")
            return render_json(
                request, 503, {"status": "unavailable", "store": reason[:200]}
            )
        return render_json(request, 200, {"status": "ok", "store": "ok"})

    @app.route("/api/apps", methods=["GET"])
    def list_apps(self, request: IRequest) -> bytes:
        self._authorize(request)
        apps = [app.to_json() for app in self._apps.apps()]
        return render_json(request, 200, {"apps": apps})

    @app.route("/api/apps", methods=["POST"])
    async def register_app(self, request: IRequest) -> bytes:
        self._authorize(request)
        app, token = await self._apps.register(read_json(request))
        return render_json(request, 201, {**app.to_json(), "token": token})

    @app.route("/api/apps/<app_id>", methods=["GET"])
    def get_app(self, request: IRequest, app_id: str) -> bytes:
        self._authorize(request)
        return render_json(request, 200, self._apps.get(app_id).to_json())

    @app.route("/api/apps/<app_id>", methods=["PATCH"])
    async def change_app(self, request: IRequest, app_id: str) -> bytes:
        self._authorize(request)
        self._apps.get(app_id)
        app, removed_origins = await self._apps.change(app_id, read_json(request))
        if removed_origins:
            self._connections.close_origins(app_id, removed_origins)
        return render_json(request, 200, app.to_json())

    @app.route("/api/apps/<app_id>", methods=["DELETE"])
    async def delete_app(self, request: IRequest, app_id: str) -> bytes:
        self._authorize(request)

        def close_connections() -> None:
            self._connections.close_app(app_id)
            self._rooms.close_app(app_id, CloseCode.FORBIDDEN, "the app was deleted")

        await self._apps.delete(app_id, close_connections)
        request.setResponseCode(204)
        return b""

    @app.route("/api/apps/<app_id>/token", methods=["POST"])
    async def replace_token(self, request: IRequest, app_id: str) -> bytes:
        self._authorize(request)
        token = await self._apps.replace_token(app_id)
        self._connections.close_app_token_users(app_id)
        return render_json(request, 200, {"app_id": app_id, "token": token})
