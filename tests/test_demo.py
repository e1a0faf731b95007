"""
C{twistd kraken --demo}: the demo page, its app and its token.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import (
    ADMIN_TOKEN,
    DEPLOYMENT_TOKEN,
    KrakenProcess,
    running_kraken,
    twistd_kraken,
)

_CONFIG = re.compile(rb"window\.KRAKEN_DEMO = (\{.*?\});</script>")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[KrakenProcess]:
    """
    A Kraken started with --demo.
    """
    yield from running_kraken(tmp_path / "data", ["--demo"])


def demo_config(server: KrakenProcess) -> dict[str, str]:
    """
    The configuration the server wrote into the demo page.
    """
    deadline = time.monotonic() + 10
    page = server.request("GET", "/demo/", token=None)
    while page.status == 503 and time.monotonic() < deadline:
        time.sleep(0.05)
        page = server.request("GET", "/demo/", token=None)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    match = _CONFIG.search(page.raw)
    assert match is not None, page.raw[:500]
    config: dict[str, str] = json.loads(match.group(1))
    return config


def test_demo_page_carries_a_token_of_the_demo_app(demo: KrakenProcess) -> None:
    """
    The page holds an app token of kraken-demo, never the deployment token.
    """
    config = demo_config(demo)

    assert config["room"] == "demo"
    assert config["token"].startswith("kapp_kraken-demo_")
    page = demo.request("GET", "/demo/", token=None).raw
    assert DEPLOYMENT_TOKEN.encode() not in page
    assert ADMIN_TOKEN.encode() not in page
    app = demo.request("GET", "/api/apps/kraken-demo").json
    assert app["allowed_origins"] == [
        f"http://localhost:{demo.port}",
        f"http://127.0.0.1:{demo.port}",
    ]


def test_demo_serves_the_client_bundle(demo: KrakenProcess) -> None:
    """
    The client bundle is served beside the page; other paths are 404.
    """
    demo_config(demo)
    bundle = demo.request("GET", "/demo/kraken-client.js", token=None)
    missing = demo.request("GET", "/demo/secrets.txt", token=None)

    assert bundle.status == 200
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert missing.status == 404
    assert missing.json["error"]["code"] == "not-found"


def test_demo_token_is_fresh_at_every_start(demo: KrakenProcess) -> None:
    """
    A restart gives the demo app a new token; the old one stops working.
    """
    first = demo_config(demo)["token"]

    demo.restart()
    second = demo_config(demo)["token"]

    assert first != second
    assert len(demo.request("GET", "/api/apps").json["apps"]) == 1


def test_without_demo_nothing_of_it_is_served(kraken: KrakenProcess) -> None:
    """
    Without --demo, /demo/ is an unknown path and no demo app exists.
    """
    answer = kraken.request("GET", "/demo/", token=None)

    assert answer.status == 404
    assert kraken.request("GET", "/api/apps").json == {"apps": []}


def test_demo_refuses_to_start_on_a_claimed_origin(
    kraken: KrakenProcess, tmp_path: Path
) -> None:
    """
    --demo with an origin that another app claims exits with a one-line
    reason.
    """
    kraken.register_app("taken", ["http://localhost:9"])

    finished = subprocess.run(
        twistd_kraken(
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--data-dir",
            str(kraken.data_dir),
            "--demo",
            "--demo-origin",
            "http://localhost:9",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        env={
            "KRAKEN_ADMIN_TOKEN": ADMIN_TOKEN,
            "KRAKEN_TOKEN": DEPLOYMENT_TOKEN,
            "PATH": "/usr/bin:/bin",
        },
    )

    assert finished.returncode != 0
    output = (finished.stdout + finished.stderr).strip().splitlines()
    assert output[-1] == (
        "--demo: the origin http://localhost:9 belongs to the app 'taken'; "
        "give other demo origins with --demo-origin"
    )
