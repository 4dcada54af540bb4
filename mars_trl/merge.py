"""Deprecated: `mars_trl.merge` was split into `mars_trl.peft.merge` and `mars_trl.cli.merge` (this alias goes in the next release)."""

from .deprecation import warn_moved

warn_moved("mars_trl.merge", "mars_trl.peft.merge, mars_trl.cli.merge", stacklevel=3)


from .cli.merge import add_arguments, main, run  # noqa: E402
from .peft.merge import merge_adapter  # noqa: E402

__all__ = ["add_arguments", "main", "merge_adapter", "run"]

if __name__ == "__main__":
    main()
