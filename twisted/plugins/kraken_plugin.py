"""
The C{kraken} twistd plugin; the service itself lives in L{kraken.tap}.
"""

from twisted.application.service import ServiceMaker

kraken = ServiceMaker(
    "Kraken",
    "kraken.tap",
    "Real-time collaboration backend: Yjs sync over WebSocket for many apps.",
    "kraken",
)
