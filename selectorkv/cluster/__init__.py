"""The cluster layer: nodes that share the key space.

placement.py (which nodes hold a key), clock.py (the versions' hybrid
clock), peer.py (calls to other nodes on the reactors), batching.py (a round's
calls to each replica in one request), replication.py (the coordinators and
their quorums), hints.py (writes a replica missed, kept and
delivered later) and local.py (a cluster of node processes on one machine).
docs/cluster.md is the reference.
"""
