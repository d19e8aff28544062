"""The studies: each runs servers under load and saves what it measured.
node.py (sync against async on one node), cluster.py (peer-call styles on a
local cluster), calibration.py with calibration_target.py (each load tool's
bias), faults.py with history.py, checker.py and skew.py (the fault runs)."""
