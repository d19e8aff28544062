"""The HTTP layer: a connection speaks HTTP/1.1 over a transport and hands
complete requests up; no storage, no cluster.

exchange.py is the boundary with the layers above (the request, the
response, the executor contract); connection.py is the server protocol and
its phases; cycle.py one request's handle for its answer; framing.py what h11
leaves to us; parser.py picks h11 or its compiled build. Depends only on the
reactor layer.
"""
