"""The performance lab: the harness that starts servers and measures them
(harness/), load generation and the database fill (load/), the studies
(studies/) and their reports (reports/), and the commands that run them
(cli.py).

Needs the ``lab`` extra (``pip install 'selectorkv[lab]'``), except for the
commands' parsers, which the top-level command line imports, and ``selectorkv
load``, which needs only the ``load`` extra (hdrhistogram). Nothing below
the lab in the package's layers imports from it.
"""
