"""Which h11 parses HTTP: the pure-Python h11 (default), or h11-mypyc.

h11-mypyc (PyPI, module ``h11_mypyc``) is a fork of h11 compiled to a C
extension with mypyc: the same API and the same state machine, about 2.4
times faster per request cycle (benchmarks/test_bench_http.py). It is an
opt-in, because plain h11 is the reference the project teaches from and the
compiled fork is younger and less used:

    pip install 'selectorkv[fast]'
    SELECTORKV_HTTP_PARSER=h11-mypyc selectorkv serve

The choice is made once per process, when this module is first imported:
every Connection of the process parses with the same module, and its event
classes are the ones the connection code compares against. The start-up log
line names the parser and its version.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

ENV = "SELECTORKV_HTTP_PARSER"
MODULES = {"h11": "h11", "h11-mypyc": "h11_mypyc"}

NAME = os.environ.get(ENV, "h11")
if NAME not in MODULES:
    raise ImportError(f"{ENV}={NAME!r}: choose from {', '.join(MODULES)}")

if TYPE_CHECKING:
    import h11 as h11  # both modules have this API; type-check against the original
else:
    try:
        h11 = importlib.import_module(MODULES[NAME])
    except ImportError as exc:
        raise ImportError(
            f"{ENV}={NAME} but {MODULES[NAME]} is not installed: pip install 'selectorkv[fast]'"
        ) from exc

VERSION = str(getattr(h11, "__version__", "unknown"))

__all__ = ["NAME", "VERSION", "h11"]
