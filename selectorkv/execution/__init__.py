"""The execution layer: who runs a complete request, on which thread.

inline.py (sync mode: the SelectorThread itself), pool.py (async mode: the
bounded PayloadThread pool) and commit.py (group commit: the writes of a
round or a batch stored with one write to RocksDB). Implements the HTTP
layer's executor contract over the key-value layer.
"""
