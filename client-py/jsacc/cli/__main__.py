"""``python -m jsacc.cli`` is ``jsctl``."""

from . import main

raise SystemExit(main())
