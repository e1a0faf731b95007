"""
Kraken: a self-hosted real-time collaboration backend for Yjs documents.
"""

__version__ = "0.1.0"
