"""
Kraken's settings: the limits of SPEC.md with their defaults, and the secrets
read from the environment or the data directory.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    """
    Every limit, named as its twistd option (with C{-} for C{_}).
    """

    max_message_bytes: int = 32 * MIB
    max_document_bytes: int = 32 * MIB
    max_queued_bytes: int = 64 * MIB
    max_messages_per_second: int = 10_000
    max_awareness_bytes: int = 64 * KIB
    max_connections_per_app: int = 20_000
    max_connections_per_room: int = 1_000
    max_rooms: int = 10_000
    max_signal_bytes: int = 64 * KIB
    max_signals_per_second: int = 50
    max_peers_per_room: int = 256
    ping_interval: float = 30.0
    ping_timeout: float = 30.0


LIMIT_HELP = {
    "max_message_bytes": "largest WebSocket message accepted (close 1009)",
    "max_document_bytes": "largest document a room may grow to (close 4413)",
    "max_queued_bytes": "outgoing bytes a slow client may fall behind (close 1013)",
    "max_messages_per_second": "messages per connection before reads pause",
    "max_awareness_bytes": "largest awareness state of one client",
    "max_connections_per_app": "open connections per app (handshake 503)",
    "max_connections_per_room": "open connections per room (handshake 503)",
    "max_rooms": "rooms held in memory (handshake 503)",
    "max_signal_bytes": "largest signaling text frame (error too-large)",
    "max_signals_per_second": "signaling messages per connection (rate-limited)",
    "max_peers_per_room": "announced peers per room (error room-full)",
    "ping_interval": "seconds between WebSocket pings",
    "ping_timeout": "seconds to wait for a pong before closing",
}


def limit_names() -> list[str]:
    """
    The field names of L{Limits}, in declaration order.
    """
    return [item.name for item in fields(Limits)]


@dataclass(frozen=True, slots=True)
class Settings:
    """
    Everything the server needs to start.
    """

    listen: list[str]
    data_dir: Path
    admin_token: str
    deployment_token: str
    limits: Limits = field(default_factory=Limits)
    compact_after_rows: int = 500
    demo: bool = False
    demo_origins: list[str] = field(default_factory=list)


def read_secret(
    env_name: str, file_option: str | None, data_dir: Path, default_name: str
) -> tuple[str, Path | None]:
    """
    Find a token: the file given on the command line, else the environment
    variable, else a file in the data directory, created with a random token
    (mode 0600) when missing.

    @return: the token and the file it came from (C{None} for the
        environment), so the caller can log where it is, never what it is.
    @raise ValueError: the file named is empty.
    """
    if file_option:
        path = Path(file_option)
        return _read_token_file(path), path

    from_env = os.environ.get(env_name, "").strip()
    if from_env:
        return from_env, None

    path = data_dir / default_name
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as token_file:
            token_file.write(secrets.token_urlsafe(32) + "\n")
    return _read_token_file(path), path


def _read_token_file(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token
