"""
Stock y-websocket clients keep documents and awareness in sync through a real
Kraken, on both URL forms.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.interop.yclients import Client, NodeDriver
from tests.server import KrakenProcess

#: Seconds any single condition in these tests may take.
DEADLINE = 5.0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """
    Poll C{predicate} until it holds, failing after L{DEADLINE} seconds.
    """
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def synced_pair(
    kraken: KrakenProcess, driver: NodeDriver, room: str, token: str
) -> tuple[Client, Client]:
    """
    Two synced providers of one room, on the bare URL form.
    """
    first = driver.client("a", url=kraken.ws_url, room=room, token=token)
    second = driver.client("b", url=kraken.ws_url, room=room, token=token)
    first.wait_synced()
    second.wait_synced()
    return first, second


def test_text_inserts_and_deletes_from_both_sides_converge(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Inserts and deletes on a Y.Text from two providers reach both of them.
    """
    token = kraken.register_app("text-app")
    first, second = synced_pair(kraken, driver, "notes", token)

    first.insert(0, "hello")
    second.wait_text("hello")
    second.insert(5, " world")
    first.wait_text("hello world")
    first.delete(0, 1)
    second.wait_text("ello world")
    second.delete(4, 6)
    first.wait_text("ello")

    # Concurrent edits at the same place still end in one agreed text.
    first.insert(0, "A")
    second.insert(0, "B")
    first.delete(3, 1)
    wait_until(
        lambda: len(first.text()) == 5 and first.text() == second.text(),
        "both texts to agree after concurrent edits",
    )
    assert sorted(first.text()) == sorted("ABelo")


def test_map_edits_from_both_sides_converge(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Sets on a Y.Map from two providers, overwrites included, reach both of them.
    """
    token = kraken.register_app("map-app")
    first, second = synced_pair(kraken, driver, "settings", token)

    first.map_set("theme", "dark")
    second.map_set("layout", {"columns": [1, 2, 3], "wide": True})
    second.wait_map("theme", "dark")
    first.wait_map("layout", {"columns": [1, 2, 3], "wide": True})

    second.map_set("theme", "light")
    first.wait_map("theme", "light")
    assert (
        first.map()
        == second.map()
        == {
            "theme": "light",
            "layout": {"columns": [1, 2, 3], "wide": True},
        }
    )


def test_late_joiner_receives_the_whole_state(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A provider that joins after edits were made receives all of them on sync.
    """
    token = kraken.register_app("late-app")
    first, second = synced_pair(kraken, driver, "story", token)
    first.insert(0, "once upon")
    second.wait_text("once upon")
    second.insert(9, " a time")
    second.map_set("title", "Tale")
    first.wait_text("once upon a time")
    first.wait_map("title", "Tale")

    late = driver.client("late", url=kraken.ws_url, room="story", token=token)
    late.wait_synced()

    assert late.text() == "once upon a time"
    assert late.map() == {"title": "Tale"}


def test_joiner_after_everyone_left_receives_the_stored_state(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A provider that joins a room all others have left receives its document.
    """
    token = kraken.register_app("stored-app")
    first, second = synced_pair(kraken, driver, "memo", token)
    first.insert(0, "kept")
    first.map_set("k", 1)
    second.wait_text("kept")
    second.wait_map("k", 1)
    first.destroy()
    second.destroy()
    kraken.wait_for_log(r"Connection closed: app stored-app, room memo.*")

    later = driver.client("later", url=kraken.ws_url, room="memo", token=token)
    later.wait_synced()

    assert later.text() == "kept"
    assert later.map() == {"k": 1}


def test_awareness_appears_on_the_other_client_and_goes_when_destroyed(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Awareness states reach the other provider and vanish once a provider is gone.
    """
    token = kraken.register_app("presence-app")
    first, second = synced_pair(kraken, driver, "cursors", token)

    first.set_awareness({"user": {"name": "alice", "color": "#f00"}})
    second.set_awareness({"user": {"name": "bob"}})
    second.wait_awareness(1)
    first.wait_awareness(1)
    assert list(second.awareness().values()) == [
        {"user": {"name": "alice", "color": "#f00"}}
    ]
    assert list(first.awareness().values()) == [{"user": {"name": "bob"}}]

    first.set_awareness({"user": {"name": "alice", "cursor": 3}})
    wait_until(
        lambda: (
            list(second.awareness().values())
            == [{"user": {"name": "alice", "cursor": 3}}]
        ),
        "the changed awareness state",
    )

    third = driver.client("c", url=kraken.ws_url, room="cursors", token=token)
    third.wait_synced()
    third.wait_awareness(2)

    first.destroy()
    second.wait_awareness(0)
    third.wait_awareness(1)
    assert list(third.awareness().values()) == [{"user": {"name": "bob"}}]


def test_bare_and_doc_url_forms_reach_the_same_room(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A provider on ws://host/ROOM and one on ws://host/doc/ROOM share a document.
    """
    token = kraken.register_app("forms-app")
    bare = driver.client("bare", url=kraken.ws_url, room="notes", token=token)
    doc = driver.client("doc", url=kraken.ws_url + "/doc", room="notes", token=token)
    bare.wait_synced()
    doc.wait_synced()

    bare.insert(0, "from bare")
    doc.wait_text("from bare")
    doc.insert(0, "from doc, ")
    bare.wait_text("from doc, from bare")


def test_room_name_with_a_slash_is_one_room_in_both_url_forms(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    The room org/notes is the same room on both URL forms and apart from others.
    """
    token = kraken.register_app("slash-app")
    url = kraken.ws_url
    bare = driver.client("bare", url=url, room="org/notes", token=token)
    doc = driver.client("doc", url=url + "/doc", room="org/notes", token=token)
    bare.wait_synced()
    doc.wait_synced()
    bare.insert(0, "shared")
    doc.wait_text("shared")
    doc.map_set("by", "doc")
    bare.wait_map("by", "doc")

    for client_id, room in (("org", "org"), ("notes", "notes"), ("docnotes", "doc")):
        other = driver.client(client_id, url=url, room=room, token=token)
        other.wait_synced()
        assert other.text() == "", room
        assert other.map() == {}, room


def test_percent_encoded_room_name_reaches_the_decoded_room(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    A room name is percent-decoded once: org%2Fnotes is the room org/notes.
    """
    token = kraken.register_app("encoded-app")
    url = kraken.ws_url
    plain = driver.client("plain", url=url, room="org/notes", token=token)
    encoded = driver.client("encoded", url=url, room="org%2Fnotes", token=token)
    doc_encoded = driver.client(
        "doc-encoded", url=url + "/doc", room="org%2Fnotes", token=token
    )
    for client in (plain, encoded, doc_encoded):
        client.wait_synced()
    encoded.insert(0, "via %2F")
    plain.wait_text("via %2F")
    doc_encoded.wait_text("via %2F")

    # Decoded once only: a%252Fb is the room named "a%2Fb", not "a/b".
    literal = driver.client("literal", url=url, room="a%252Fb", token=token)
    literal_doc = driver.client(
        "literal-doc", url=url + "/doc", room="a%252Fb", token=token
    )
    literal.wait_synced()
    literal_doc.wait_synced()
    literal.insert(0, "literal")
    literal_doc.wait_text("literal")
    slash = driver.client("slash", url=url, room="a/b", token=token)
    slash.wait_synced()
    assert slash.text() == ""


def test_bare_room_starting_with_doc_is_reached_only_through_doc_doc(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    Bare ws://host/doc/x is room x; room doc/x is reached as ws://host/doc/doc/x.
    """
    token = kraken.register_app("prefix-app")
    url = kraken.ws_url
    via_prefix = driver.client("via-prefix", url=url, room="doc/x", token=token)
    plain_x = driver.client("plain-x", url=url, room="x", token=token)
    via_prefix.wait_synced()
    plain_x.wait_synced()
    via_prefix.insert(0, "room x")
    plain_x.wait_text("room x")

    doc_doc = driver.client("doc-doc", url=url + "/doc", room="doc/x", token=token)
    bare_doc_doc = driver.client("bare-doc-doc", url=url, room="doc/doc/x", token=token)
    doc_doc.wait_synced()
    bare_doc_doc.wait_synced()
    assert doc_doc.text() == ""
    doc_doc.insert(0, "room doc/x")
    bare_doc_doc.wait_text("room doc/x")
    assert plain_x.text() == "room x"


def test_http_route_names_are_rooms_for_websocket_upgrades(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    An upgrade on /health or /api/apps joins a room of that name, not the route.
    """
    token = kraken.register_app("routes-app")
    url = kraken.ws_url
    health = driver.client("health", url=url, room="health", token=token)
    health_doc = driver.client(
        "health-doc", url=url + "/doc", room="health", token=token
    )
    api = driver.client("api", url=url, room="api/apps", token=token)
    for client in (health, health_doc, api):
        client.wait_synced()
    health.insert(0, "healthy")
    health_doc.wait_text("healthy")
    api.insert(0, "api")
    api_again = driver.client(
        "api-again", url=url + "/doc", room="api/apps", token=token
    )
    api_again.wait_text("api")
    assert kraken.request("GET", "/health", token=None).json == {
        "status": "ok",
        "store": "ok",
    }
