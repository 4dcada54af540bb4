"""`python -m mars_trl ...` is the `mars-trl` command."""

from .cli import main

raise SystemExit(main())
