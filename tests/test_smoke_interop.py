"""
The stock y-websocket client syncs through a real Kraken.
"""

from tests.interop.yclients import NodeDriver
from tests.server import KrakenProcess


def test_two_providers_converge_on_text(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    An insert by one provider reaches the other through the server.
    """
    token = kraken.register_app("notes-app")
    first = driver.client("a", url=kraken.ws_url, room="notes", token=token)
    second = driver.client("b", url=kraken.ws_url, room="notes", token=token)
    first.wait_synced()
    second.wait_synced()

    first.insert(0, "hello")

    second.wait_text("hello")
