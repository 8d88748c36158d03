"""``python -m jsacc`` is ``jsctl``."""

from .cli import main

raise SystemExit(main())
