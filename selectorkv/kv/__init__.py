"""The key-value layer: the HTTP API as plain function calls over a storage;
no sockets, no threads.

api.py routes a request to storage calls and status codes; storage.py is the
storage protocol and RocksDB behind it; records.py the versioned records a
cluster node keeps. Depends on the HTTP layer's request and response types.
"""
