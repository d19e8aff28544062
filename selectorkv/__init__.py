"""selectorkv: a key-value HTTP server built as a reactor, in plain Python.

SelectorThreads (``selectors`` + ``h11``) own the connections; in async mode
PayloadThreads run the storage calls on RocksDB. Start with ``server.py``.
"""

__version__ = "0.1.0"
