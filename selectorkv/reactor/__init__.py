"""The reactor layer: sockets and time, no HTTP.

SelectorThreads (selector_thread.py) wait on their selector and their timers,
woken across threads by a wakeup channel (wakeup.py); the acceptor (acceptor.py)
hands new connections to them; a transport (transport.py) reads a socket and
writes it through an outbound buffer (outbound.py); each thread counts what it
does in its own stats (stats.py). Nothing here imports another layer.
"""
