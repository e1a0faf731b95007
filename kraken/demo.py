"""
The demo: a page at C{/demo/} with a shared text and video calls, served only
with C{twistd kraken --demo}.

The demo is an app like any other, C{kraken-demo}, reachable from the demo
origins only.  At every start it gets a fresh app token, which is kept in
memory and written into the page; the deployment token never reaches it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from kraken.admin import render_error
from kraken.apps import AppRegistry
from kraken.errors import ApiError

DEMO_APP_ID = "kraken-demo"
DEMO_ROOM = "demo"
CONFIG_PLACEHOLDER = "<!--KRAKEN_DEMO_CONFIG-->"

_FILES = {
    b"/demo/": ("index.html", b"text/html; charset=utf-8"),
    b"/demo/index.html": ("index.html", b"text/html; charset=utf-8"),
    b"/demo/kraken-client.js": ("kraken-client.js", b"text/javascript; charset=utf-8"),
}


@functools.cache
def demo_file(name: str) -> bytes:
    """
    A file of the built demo, shipped in C{kraken/demo_static}, read once.
    """
    return resources.files("kraken").joinpath("demo_static", name).read_bytes()


class Demo:
    """
    The demo app and its page.
    """

    log = Logger()

    def __init__(self, apps: AppRegistry, origins: list[str]) -> None:
        self._apps = apps
        self.origins = origins
        self._token: str | None = None

    def check_origins(self) -> None:
        """
        @raise ValueError: a demo origin belongs to another app.
        """
        for origin in self.origins:
            owner = self._apps.app_for_origin(origin)
            if owner not in (None, DEMO_APP_ID):
                raise ValueError(
                    f"--demo: the origin {origin} belongs to the app {owner!r}; "
                    "give other demo origins with --demo-origin"
                )

    async def prepare(self) -> None:
        """
        Register the demo app if it is missing, give it the demo origins and
        a fresh token.
        """
        self.check_origins()
        try:
            self._apps.get(DEMO_APP_ID)
        except ApiError:
            await self._apps.register(
                {
                    "app_id": DEMO_APP_ID,
                    "name": "Kraken demo",
                    "allowed_origins": self.origins,
                    "description": "Registered by twistd kraken --demo.",
                }
            )
        else:
            await self._apps.change(DEMO_APP_ID, {"allowed_origins": self.origins})
        self._token = await self._apps.replace_token(DEMO_APP_ID)
        self.log.info(
            "Demo served at /demo/ for the origins {origins}",
            origins=", ".join(self.origins),
        )

    def start(self) -> Deferred[None]:
        """
        Prepare the demo app; the page answers 503 until it is ready.
        """
        return Deferred.fromCoroutine(self.prepare())

    def render(self, request: IRequest) -> bytes:
        """
        Serve the page or the client bundle.
        """
        if request.path == b"/demo":
            request.setResponseCode(301)
            request.setHeader(b"Location", b"/demo/")
            return b""
        entry = _FILES.get(request.path)
        if entry is None or request.method not in (b"GET", b"HEAD"):
            return render_error(request, ApiError(404, "not-found", "No such file."))
        if self._token is None:
            return render_error(
                request,
                ApiError(503, "not-ready", "The demo is starting.", retry_after=1),
            )

        name, content_type = entry
        body = demo_file(name)
        if name == "index.html":
            body = self._with_config(body)
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        return body

    def _with_config(self, page: bytes) -> bytes:
        config = json.dumps({"token": self._token, "room": DEMO_ROOM})
        safe_config = config.replace("</", "<\\/")
        script = f"<script>window.KRAKEN_DEMO = {safe_config};</script>"
        return page.replace(CONFIG_PLACEHOLDER.encode(), script.encode(), 1)
