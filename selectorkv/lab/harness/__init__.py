"""The lab's harness: what every measurement stands on. Node processes on
127.0.0.x (nodes.py), profiles and per-thread shares (profile.py), and a
figure's median with its min-max over interleaved rounds (spread.py)."""
