"""Load: the open-loop generator (generator.py) with its timerfd (due_timer.py),
the seed's key space (keyspace.py) and the database fill (fill.py), and the
load tools behind one interface (tools.py: selectorkv load, wrk, wrk2)."""
