"""`python -m statewait`: the `statewait` command line (see statewait._cli)."""

from ._cli import main

raise SystemExit(main())
