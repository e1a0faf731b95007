"""
C{twistd kraken}: the command-line options and the service they build.
"""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site

from kraken.admin import AdminAPI
from kraken.apps import AppRegistry, normalise_origin
from kraken.config import LIMIT_HELP, Limits, Settings, limit_names, read_secret
from kraken.demo import Demo
from kraken.errors import CloseCode
from kraken.rooms import RoomRegistry
from kraken.site import KrakenRoot, make_site
from kraken.store import StoreError
from kraken.store.sqlite import SQLiteStore
from kraken.websocket import Connections, RoomFactory
from kraken.wire import held_writes

#: Seconds between sweeps for awareness states that were not renewed.
AWARENESS_SWEEP_INTERVAL = 3.0

_BARE_PORT = re.compile(r"\d+")


#: The listen queue of TCP and TLS ports unless the description sets one;
#: Twisted's default of 50 drops connections when many clients reconnect at
#: once.
LISTEN_BACKLOG = 1024


def with_backlog(description: str) -> str:
    """
    Give a C{tcp:} or C{ssl:} endpoint description Kraken's listen backlog,
    unless it names one.
    """
    kind = description.partition(":")[0]
    if kind in ("tcp", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def _limit_parameters() -> list[list[Any]]:
    defaults = Limits()
    rows = []
    for name in limit_names():
        default = getattr(defaults, name)
        rows.append(
            [name.replace("_", "-"), None, default, LIMIT_HELP[name], type(default)]
        )
    return rows


class Options(usage.Options):
    """
    The options of C{twistd kraken}.
    """

    synopsis = "[options]"
    longdesc = (
        "Kraken keeps Yjs documents in sync between browsers over WebSocket, "
        "for many apps from one deployment. The admin token comes from "
        "KRAKEN_ADMIN_TOKEN or --admin-token-file, the deployment token from "
        "KRAKEN_TOKEN or --token-file; where neither is set, a random one is "
        "created in the data directory."
    )
    optFlags = [
        ["demo", None, "serve the demo page at /demo/ (app kraken-demo)"],
    ]
    optParameters = [
        [
            "data-dir",
            "d",
            "./kraken-data",
            "where the SQLite database and generated tokens live (created if missing)",
        ],
        ["admin-token-file", None, None, "file holding the admin token"],
        ["token-file", None, None, "file holding the deployment token"],
        [
            "compact-after-rows",
            None,
            500,
            "stored updates of a room before they are merged into one",
            int,
        ],
        *_limit_parameters(),
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["demo-origin"] = []

    def opt_demo_origin(self, origin: str) -> None:
        """
        An origin the demo app admits (repeatable; by default
        http://localhost:PORT and http://127.0.0.1:PORT of each TCP listen
        port).
        """
        try:
            self["demo-origin"].append(normalise_origin(origin))
        except ValueError as error:
            raise usage.UsageError(f"--demo-origin {origin}: {error}") from None

    def opt_listen(self, description: str) -> None:
        """
        Where to listen: a Twisted endpoint description such as tcp:8080,
        tcp:8080:interface=127.0.0.1 or ssl:8443:privateKey=key.pem; a bare
        port number means tcp:PORT (repeatable; default tcp:8080).
        """
        if _BARE_PORT.fullmatch(description):
            description = f"tcp:{description}"
        self["listen"].append(with_backlog(description))

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [with_backlog("tcp:8080")]
        for name in limit_names():
            value = self[name.replace("_", "-")]
            if value <= 0:
                raise usage.UsageError(f"--{name.replace('_', '-')} must be positive")


class ListeningService(Service):
    """
    Listens on one endpoint and logs the address it got (useful with
    C{tcp:0}); failing to listen fails the start.
    """

    log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, site: Site, secure: bool
    ) -> None:
        self._endpoint = endpoint
        self._site = site
        self.secure = secure
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        failures: list[Failure] = []
        listening = self._endpoint.listen(self._site)
        listening.addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        self.log.info(
            "Kraken listening on {host}:{port}",
            host=getattr(address, "host", "?"),
            port=getattr(address, "port", "?"),
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self.port is None:
            return None
        stopping = self.port.stopListening()
        return stopping if stopping is not None else succeed(None)


class KrakenService(MultiService):
    """
    The whole server: listeners, store, rooms and the awareness sweep.
    """

    log = Logger()

    def __init__(self, settings: Settings, reactor: Any) -> None:
        super().__init__()
        self.settings = settings
        self._reactor = reactor
        self.store = SQLiteStore(
            reactor, settings.data_dir, around_commits=held_writes.holding
        )
        self.apps = AppRegistry(
            self.store, settings.deployment_token, self.store.list_apps()
        )
        self.rooms = RoomRegistry(
            self.store, settings.limits, settings.compact_after_rows
        )
        self.connections = Connections()
        factory = RoomFactory(
            self.rooms, self.connections, settings.limits, reactor, reactor=reactor
        )
        self.api = AdminAPI(
            settings.admin_token,
            self.apps,
            self.rooms,
            self.connections,
            self.store,
            reactor,
        )
        self.demo: Demo | None = None
        if settings.demo:
            origins = settings.demo_origins or _listen_origins(settings.listen)
            self.demo = Demo(self.apps, origins)
            self.demo.check_origins()
        self.root = KrakenRoot(
            self.api,
            self.apps,
            self.rooms,
            self.connections,
            factory,
            settings.limits,
            self.demo,
        )
        site = make_site(self.root)
        for description in settings.listen:
            endpoint = endpoints.serverFromString(reactor, description)
            secure = description.startswith("ssl:")
            ListeningService(endpoint, site, secure).setServiceParent(self)
        self._sweep = LoopingCall(self._expire_awareness)
        self._sweep.clock = reactor

    def _expire_awareness(self) -> None:
        self.rooms.expire_awareness(self._reactor.seconds())

    def startService(self) -> None:
        self.store.start()
        super().startService()
        self._sweep.start(AWARENESS_SWEEP_INTERVAL, now=False)
        if self.demo is not None:
            self._start_demo(self.demo)
        self.log.info(
            "Kraken serving {apps} apps from {path}",
            apps=len(self.apps.apps()),
            path=str(self.store.path),
        )

    def _start_demo(self, demo: Demo) -> None:
        if not demo.origins:
            demo.origins = _local_origins(self)
        try:
            demo.check_origins()
        except ValueError as error:
            self.log.critical("{reason}", reason=str(error))
            self._reactor.callWhenRunning(self._reactor.stop)
            return
        started = demo.start()
        started.addErrback(
            lambda failure: self.log.failure("The demo could not start", failure)
        )

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, close every connection with 1001, finish the store
        writes in flight, then close the store.
        """
        self.log.info("Kraken shutting down")
        self.root.accepting = False
        self.api.shutting_down = True
        if self._sweep.running:
            self._sweep.stop()
        stopped = DeferredList(
            [maybeDeferred(child.stopService) for child in list(self)]
        )
        Service.stopService(self)
        self.connections.close_all(CloseCode.GOING_AWAY, "server shutting down")

        def close_store(_: object) -> Deferred[None]:
            return self.store.stop()

        stopped.addCallback(close_store)
        return stopped  # type: ignore[return-value]


def _loopback_origins(secure: bool, port: int | str) -> list[str]:
    """
    The origins of a page served by Kraken itself on C{port}: localhost and
    127.0.0.1.
    """
    scheme = "https" if secure else "http"
    return [
        normalise_origin(f"{scheme}://{host}:{port}")
        for host in ("localhost", "127.0.0.1")
    ]


def _listen_origins(descriptions: list[str]) -> list[str]:
    """
    The demo's default origins for the fixed ports of C{tcp:} and C{ssl:}
    listen descriptions; ports chosen by the kernel (C{tcp:0}) are known
    only once listening (see L{_local_origins}).
    """
    origins = []
    for description in descriptions:
        kind, _, rest = description.partition(":")
        port = rest.split(":")[0]
        if kind in ("tcp", "ssl") and port.isdigit() and int(port) != 0:
            origins.extend(_loopback_origins(kind == "ssl", port))
    return list(dict.fromkeys(origins))


def _local_origins(service: MultiService) -> list[str]:
    """
    The demo's default origins: localhost and 127.0.0.1 on each port Kraken
    listens on.
    """
    origins = []
    for child in service:
        if isinstance(child, ListeningService) and child.port is not None:
            port = getattr(child.port.getHost(), "port", None)
            if port is not None:
                origins.extend(_loopback_origins(child.secure, port))
    return list(dict.fromkeys(origins))


def settings_from_options(options: Options) -> Settings:
    """
    Turn parsed options into L{Settings}, creating the data directory and
    any missing token file.
    """
    data_dir = Path(options["data-dir"]).expanduser()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = Logger(namespace="kraken.tap")

    missing = {
        name for name in ("admin-token", "token") if not (data_dir / name).exists()
    }
    try:
        admin_token, admin_path = read_secret(
            "KRAKEN_ADMIN_TOKEN", options["admin-token-file"], data_dir, "admin-token"
        )
        token, token_path = read_secret(
            "KRAKEN_TOKEN", options["token-file"], data_dir, "token"
        )
    except (OSError, ValueError) as error:
        raise usage.UsageError(str(error)) from None
    for kind, path in (("admin", admin_path), ("deployment", token_path)):
        if path is not None and path.parent == data_dir and path.name in missing:
            log.info(
                "A new {kind} token was created in {path}", kind=kind, path=str(path)
            )
            continue
        source = str(path) if path else "the environment"
        log.info("The {kind} token is read from {source}", kind=kind, source=source)

    limits = Limits(**{name: options[name.replace("_", "-")] for name in limit_names()})
    return Settings(
        listen=list(options["listen"]),
        data_dir=data_dir,
        admin_token=admin_token,
        deployment_token=token,
        limits=limits,
        compact_after_rows=options["compact-after-rows"],
        demo=bool(options["demo"]),
        demo_origins=list(options["demo-origin"]),
    )


def makeService(options: Options) -> IService:
    """
    Build the Kraken service from C{twistd kraken}'s options.
    """
    from twisted.internet import reactor

    settings = settings_from_options(options)
    Logger(namespace="kraken.tap").info(
        "Kraken data directory: {path}", path=str(settings.data_dir.resolve())
    )
    try:
        service = KrakenService(settings, reactor)
    except (ValueError, StoreError) as error:
        raise SystemExit(str(error)) from None
    reactor.callWhenRunning(freeze_startup_objects)
    return service


def freeze_startup_objects() -> None:
    """
    Leave the objects of start-up (modules, classes, the app registry) out
    of Python's full garbage collections from now on.

    They live as long as the process, yet every full collection walks all
    of them: about 65,000 objects and 28 ms on this project's machine, a
    pause every connection of the server feels.  After this, a full
    collection only walks what was created since.
    """
    gc.collect()
    gc.freeze()
