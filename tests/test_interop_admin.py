"""
Admin changes reach open connections: a replaced token closes with 4401, a
removed origin or a deleted app with 4403, and the stock client stops there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.interop.yclients import Client, NodeDriver
from tests.server import DEPLOYMENT_TOKEN, KrakenProcess

ONE = "https://one.example.com"
TWO = "https://two.example.com"

#: How long a closed stock client is watched for a reconnect.  Its first
#: retry would come 200 ms after the close (y-websocket's backoff).
NO_RECONNECT_WINDOW = 1.0


def assert_stays(predicate: Callable[[], bool], what: str) -> None:
    """
    Check that C{predicate} holds throughout L{NO_RECONNECT_WINDOW} seconds.
    """
    deadline = time.monotonic() + NO_RECONNECT_WINDOW
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.05)
    assert predicate(), what


def assert_closed_for_good(clients: list[Client], code: int) -> None:
    """
    Each client was closed by the server with C{code} and does not reconnect.
    """
    for client in clients:
        client.wait_close(code)
        client.wait_status("disconnected")

    def none_reconnected() -> bool:
        return all(
            client.stats()["opens"] == 1 and client.stats()["status"] == "disconnected"
            for client in clients
        )

    assert_stays(none_reconnected, f"a client closed with {code} reconnected")
    for client in clients:
        server_closes = [close for close in client.closes() if not close["local"]]
        assert [close["code"] for close in server_closes] == [code]


def assert_still_syncing(first: Client, second: Client, marker: str) -> None:
    """
    Both clients are connected and an edit of each reaches the other.
    """
    for client in (first, second):
        stats = client.stats()
        assert stats["status"] == "connected", (client.id, stats)
        assert stats["closeCount"] == 0, (client.id, stats)
    text = first.text()
    first.insert(len(text), marker)
    second.wait_text(text + marker)
    second.insert(0, marker)
    first.wait_text(marker + text + marker)


def test_replacing_the_app_token_closes_its_connections_with_4401(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A new app token closes the old token's connections with 4401 for good.
    """
    old_token = kraken.register_app("rotate-app", [ONE])
    url = kraken.ws_url
    first = driver.client("a", url=url, room="doc", token=old_token)
    second = driver.client(
        "b", url=url + "/doc", room="doc", authorization=f"Bearer {old_token}"
    )
    # Admitted by the deployment token and origin: the app token is not its.
    browser = driver.client(
        "c", url=url, room="doc", token=DEPLOYMENT_TOKEN, origin=ONE
    )
    for client in (first, second, browser):
        client.wait_synced()
    first.insert(0, "before rotation")
    second.wait_text("before rotation")
    browser.wait_text("before rotation")

    answer = kraken.request("POST", "/api/apps/rotate-app/token")
    assert answer.status == 200
    new_token: str = answer.json["token"]
    assert set(answer.json) == {"app_id", "token"}
    assert answer.json["app_id"] == "rotate-app"
    assert new_token != old_token

    assert_closed_for_good([first, second], 4401)

    fresh = driver.client("fresh", url=url, room="doc", token=new_token)
    fresh.wait_synced()
    assert fresh.text() == "before rotation"
    assert_still_syncing(fresh, browser, "!")

    stale = driver.client(
        "stale", url=url, room="doc", token=old_token, reconnect=False
    )
    stale.wait_error("Unexpected server response: 401")
    assert stale.stats()["opens"] == 0


def test_removing_an_origin_closes_its_connections_with_4403(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A PATCH that drops an origin closes only that origin's connections, 4403.
    """
    token = kraken.register_app("patch-app", [ONE, TWO])
    url = kraken.ws_url
    from_one = driver.client(
        "one", url=url, room="r", token=DEPLOYMENT_TOKEN, origin=ONE
    )
    app_one = driver.client("app-one", url=url, room="r", token=token, origin=ONE)
    from_two = driver.client(
        "two", url=url + "/doc", room="r", token=DEPLOYMENT_TOKEN, origin=TWO
    )
    no_origin = driver.client("server", url=url, room="r", token=token)
    for client in (from_one, app_one, from_two, no_origin):
        client.wait_synced()
    from_one.insert(0, "shared")
    for client in (app_one, from_two, no_origin):
        client.wait_text("shared")

    answer = kraken.request("PATCH", "/api/apps/patch-app", {"allowed_origins": [TWO]})
    assert answer.status == 200
    assert answer.json["allowed_origins"] == [TWO]

    assert_closed_for_good([from_one, app_one], 4403)
    assert_still_syncing(from_two, no_origin, "+")

    again = driver.client(
        "again", url=url, room="r", token=DEPLOYMENT_TOKEN, origin=ONE, reconnect=False
    )
    again.wait_error("Unexpected server response: 403")


def test_deleting_an_app_closes_its_connections_and_deletes_its_documents(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    DELETE closes the app's connections with 4403, and its rooms start empty.
    """
    token = kraken.register_app("gone-app", [ONE])
    other_token = kraken.register_app("kept-app")
    url = kraken.ws_url
    first = driver.client("a", url=url, room="plans", token=token)
    second = driver.client(
        "b", url=url, room="plans", token=DEPLOYMENT_TOKEN, origin=ONE
    )
    kept = driver.client("kept", url=url, room="plans", token=other_token)
    for client in (first, second, kept):
        client.wait_synced()
    first.insert(0, "secret plans")
    first.map_set("step", 1)
    second.wait_text("secret plans")
    kept.insert(0, "other app")
    # A second room of the deleted app, with no connection left open.
    idle = driver.client("idle", url=url, room="archive", token=token)
    idle.wait_synced()
    idle.insert(0, "archived")
    second.map_set("seen", True)
    first.wait_map("seen", True)
    idle.destroy()

    answer = kraken.request("DELETE", "/api/apps/gone-app")
    assert answer.status == 204
    assert answer.raw == b""

    assert_closed_for_good([first, second], 4403)
    assert kraken.request("GET", "/api/apps/gone-app").status == 404
    stale = driver.client("stale", url=url, room="plans", token=token, reconnect=False)
    stale.wait_error("Unexpected server response: 401")

    new_token = kraken.register_app("gone-app", [ONE])
    for client_id, room in (("new-plans", "plans"), ("new-archive", "archive")):
        fresh = driver.client(client_id, url=url, room=room, token=new_token)
        fresh.wait_synced()
        assert fresh.text() == "", room
        assert fresh.map() == {}, room

    kept.wait_synced()
    assert kept.text() == "other app"
    assert kept.stats()["closeCount"] == 0
