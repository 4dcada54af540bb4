"""`python -m mars_trl ...` is the `mars-trl` command (see `mars_trl.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
