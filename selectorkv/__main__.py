"""``python -m selectorkv``: the same as the ``selectorkv`` command."""

from selectorkv.cli import main

raise SystemExit(main())
