"""
The one twisted.web site: WebSocket upgrades to rooms, everything else to
the HTTP API.

A request that asks to upgrade to WebSocket is a room connection whatever
its path, and is routed before any HTTP route (SPEC.md, "Routing a
request").  Its handshake is checked here, in the resource tree, so that a
refusal carries a JSON body and headers (Autobahn's C{ConnectionDeny} can set
neither); only an admitted request reaches Autobahn.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from autobahn.twisted.resource import WebSocketResource
from twisted.logger import Logger
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from kraken.admin import MAX_BODY_BYTES, AdminAPI, render_error
from kraken.apps import Admission, AppRegistry
from kraken.config import Limits
from kraken.demo import Demo
from kraken.errors import ApiError
from kraken.rooms import RoomRegistry
from kraken.websocket import AdmittedFactory, Connections, RoomFactory

#: The longest room name, in UTF-8 bytes.
MAX_ROOM_BYTES = 512

#: Seconds a client refused for a cap is asked to wait.
RETRY_AFTER = 5

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def room_from_path(path: bytes) -> str:
    """
    The room a WebSocket request path names: what follows C{/doc/}, or else
    what follows C{/}, percent-decoded once.

    @raise ApiError: 400 for an empty name, a name that is not UTF-8, one
        with control characters, or one over L{MAX_ROOM_BYTES} bytes.
    """
    raw = path[len(b"/doc/") :] if path.startswith(b"/doc/") else path[1:]
    decoded = unquote_to_bytes(raw)
    if not decoded:
        raise ApiError(400, "invalid-room", "The room name is empty.")
    if len(decoded) > MAX_ROOM_BYTES:
        raise ApiError(
            400, "invalid-room", f"The room name exceeds {MAX_ROOM_BYTES} bytes."
        )
    try:
        room = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid-room", "The room name is not UTF-8.") from None
    if _CONTROL.search(room):
        raise ApiError(
            400, "invalid-room", "The room name contains control characters."
        )
    return room


def check_handshake(request: IRequest) -> None:
    """
    Refuse, with a JSON answer, the malformed upgrade requests that Autobahn
    would refuse with a bare status line (and, for a fragment, with the URL
    and its token in the log).

    @raise ApiError: 405 for a method other than GET, 400 otherwise.
    """
    if request.method != b"GET":
        raise ApiError(
            405, "method-not-allowed", "A WebSocket upgrade is a GET request."
        )
    if b"#" in request.uri:
        raise ApiError(400, "invalid-url", "A WebSocket URL has no fragment.")

    connection = (request.getHeader(b"connection") or b"").lower()
    if b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        raise ApiError(
            400, "bad-handshake", "The upgrade needs the header Connection: Upgrade."
        )
    if request.getHeader(b"sec-websocket-version") != b"13":
        raise ApiError(400, "bad-handshake", "Only WebSocket version 13 is supported.")
    try:
        key = base64.b64decode(
            request.getHeader(b"sec-websocket-key") or b"", validate=True
        )
    except ValueError:
        key = b""
    if len(key) != 16:
        raise ApiError(400, "bad-handshake", "The Sec-WebSocket-Key is not valid.")


def _origin_form(path: bytes) -> bytes:
    """
    The path of a request target, also when it was sent in absolute form
    (C{GET http://host/room}).
    """
    if path.startswith(b"/"):
        return path
    return urlsplit(path).path or b"/"


def request_token(request: IRequest) -> str | None:
    """
    The token of a request: C{Authorization: Bearer}, else C{?token=}.
    """
    header: bytes | None = request.getHeader(b"authorization")
    if header:
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("utf-8", "replace")
    values = request.args.get(b"token") if request.args else None
    if values and values[0]:
        return bytes(values[0]).decode("utf-8", "replace")
    return None


def is_upgrade(request: IRequest) -> bool:
    """
    Whether the request asks to become a WebSocket.
    """
    upgrade = request.getHeader(b"upgrade") or b""
    return b"websocket" in upgrade.lower()


class KrakenRoot(Resource):
    """
    The root of the site: it routes by the C{Upgrade} header first, by path
    second.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        api: AdminAPI,
        apps: AppRegistry,
        rooms: RoomRegistry,
        connections: Connections,
        factory: RoomFactory,
        limits: Limits,
        demo: Demo | None = None,
    ) -> None:
        super().__init__()
        self._http = api.app.resource()
        self._apps = apps
        self._rooms = rooms
        self._connections = connections
        self._factory = factory
        self._limits = limits
        self._demo = demo
        self.accepting = True

    def render(self, request: IRequest) -> Any:
        if is_upgrade(request):
            return self._render_upgrade(request)
        if request.path == b"/doc" or request.path.startswith(b"/doc/"):
            request.setHeader(b"Upgrade", b"websocket")
            request.setHeader(b"Connection", b"Upgrade")
            error = ApiError(
                426, "upgrade-required", "This path takes WebSocket connections."
            )
            body = render_error(request, error)
            request.setResponseCode(426, b"Upgrade Required")
            return body
        if not _decodes(request.uri):
            return render_error(
                request,
                ApiError(400, "invalid-url", "The URL is not UTF-8 once decoded."),
            )
        if self._demo is not None and (
            request.path == b"/demo" or request.path.startswith(b"/demo/")
        ):
            return self._demo.render(request)
        return self._http.render(request)

    def _render_upgrade(self, request: IRequest) -> Any:
        try:
            admission = self._admit(request)
        except ApiError as error:
            self.log.info(
                "Handshake refused ({code}): peer {peer}, status {status}",
                code=error.code,
                peer=_peer(request),
                status=error.status,
            )
            return render_error(request, error)

        # Kraken accepts no extension (no permessage-deflate), so Autobahn
        # need not parse and log the offers, at some cost per connection.
        request.requestHeaders.removeHeader(b"sec-websocket-extensions")
        factory = AdmittedFactory(self._factory, admission)
        rendered = WebSocketResource(factory).render(request)
        _release_http_channel(factory.built)
        return rendered

    def _admit(self, request: IRequest) -> Admission:
        if not self.accepting:
            raise ApiError(
                503,
                "shutting-down",
                "The server is shutting down.",
                retry_after=RETRY_AFTER,
            )
        check_handshake(request)
        room = room_from_path(_origin_form(request.path))
        origin = request.getHeader(b"origin")
        admission = self._apps.admit(
            request_token(request),
            origin.decode("latin-1") if origin is not None else None,
            room,
        )
        self._check_caps(admission)
        return admission

    def _check_caps(self, admission: Admission) -> None:
        limits = self._limits
        if (
            self._connections.count_app(admission.app_id)
            >= limits.max_connections_per_app
        ):
            self._refuse_cap(admission, "max-connections-per-app")
        if (
            self._connections.count_room(admission.key)
            >= limits.max_connections_per_room
        ):
            self._refuse_cap(admission, "max-connections-per-room")
        if (
            self._rooms.get(admission.key) is None
            and len(self._rooms) >= limits.max_rooms
        ):
            self._refuse_cap(admission, "max-rooms")

    def _refuse_cap(self, admission: Admission, limit: str) -> None:
        self.log.warn(
            "Limit {limit} hit: app {app}, room {room}",
            limit=limit,
            app=admission.app_id,
            room=admission.room,
        )
        raise ApiError(
            503,
            "over-capacity",
            f"The server is at its {limit} limit; retry later.",
            retry_after=RETRY_AFTER,
        )


def _release_http_channel(protocol: object) -> None:
    """
    Stop the transport of an upgraded connection from holding on to the HTTP
    channel (registered as its producer when the connection was HTTP), so that
    the channel and the upgrade request are freed instead of living as long
    as the WebSocket: about 3.5 KB less per idle connection.
    """
    transport = getattr(protocol, "transport", None)
    if transport is not None and getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()


def _decodes(uri: bytes) -> bool:
    """
    Whether a request URI is UTF-8 once percent-decoded, as Klein needs.
    """
    try:
        unquote_to_bytes(uri).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{getattr(address, 'port', '')}" if host else str(address)


class _RedactedRequest:
    """
    A view of a request for the access log, without the query strings,
    fragments and path parameters of its URI and of its C{Referer} (a page
    opened with C{?token=...} sends its whole address there), where tokens
    travel under any spelling of their name.
    """

    def __init__(self, request: IRequest) -> None:
        self._request = request
        self.uri = _without_secrets(request.uri)

    def getHeader(self, name: bytes) -> bytes | None:
        value: bytes | None = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return _without_secrets(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def _without_secrets(uri: bytes) -> bytes:
    """
    C{uri} up to its path parameters, query string or fragment, with a
    mark where something was left out.
    """
    kept = re.split(rb"[;?#]", uri, maxsplit=1)[0]
    return kept if kept == uri else kept + b"?<query omitted>"


def redacted_log_formatter(timestamp: str, request: IRequest) -> str:
    """
    The combined log format, without the secrets a query string may carry.
    """
    line: str = combinedLogFormatter(timestamp, _RedactedRequest(request))
    return line


class KrakenRequest(Request):
    """
    A request that keeps at most L{MAX_BODY_BYTES} + 1 bytes of its body, in
    memory, whatever length it announces, so that no client can fill the
    disk or memory with a body the API would refuse anyway.
    """

    def gotLength(self, length: int | None) -> None:
        super().gotLength(None if length is None else min(length, MAX_BODY_BYTES + 1))

    def handleContentChunk(self, data: bytes) -> None:
        content = self.content
        assert content is not None
        room = MAX_BODY_BYTES + 1 - content.tell()
        if room > 0:
            content.write(data[:room])


#: Seconds an HTTP connection may stay silent before Kraken closes it: a
#: request head that never ends, or an idle keep-alive connection.  Twisted's
#: default is 12 hours.  A connection upgraded to a WebSocket is not affected
#: (twisted.web stops the timer while a request is handled, and an upgrade
#: is never finished); WebSocket pings watch those.
HTTP_IDLE_TIMEOUT = 30


def make_site(root: KrakenRoot) -> Site:
    """
    The site serving C{root}, with an access log that never shows a token.
    """
    site = Site(root, logFormatter=redacted_log_formatter, timeout=HTTP_IDLE_TIMEOUT)
    site.requestFactory = KrakenRequest
    site.displayTracebacks = False
    return site
