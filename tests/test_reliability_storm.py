"""
A short reconnect storm (bench/storm.py with 100 stock clients in 10 rooms):
every client comes back after a server restart and converges.
"""

from __future__ import annotations

import signal

from bench.storm import storm
from tests.interop.yclients import NodeDriver
from tests.server import KrakenProcess

CLIENTS = 100
ROOMS = 10


def test_stock_clients_all_reconnect_and_converge_after_a_restart(
    kraken: KrakenProcess, driver: NodeDriver
) -> None:
    """
    100 stock clients in 10 rooms, cut off by a SIGTERM restart, all
    reconnect, sync and show their room's text with the edit made while the
    server was down, exactly once, within seconds.
    """
    report = storm(driver, kraken, CLIENTS, ROOMS)
    print(report)

    assert report.sigterm_exit == -signal.SIGTERM, report
    assert report.converged == CLIENTS, report
    assert report.opens >= 2 * CLIENTS, report
    assert report.converge_seconds < 15.0, report
    assert report.peak_rss_kib < 512 * 1024, report
