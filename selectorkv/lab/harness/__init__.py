"""The lab's harness: what every measurement and every test that runs a
server stands on. Servers in child processes (servers.py), cluster nodes on
127.0.0.x (nodes.py), the CPUs they and the load run on and the CPU time
they used (cpus.py), interleaved rounds (rounds.py) and a figure's median
with its min-max over them (spread.py), profiles (profile.py)."""
