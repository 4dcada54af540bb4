"""Old import paths kept for one release after the package was grouped by job (see docs/architecture.md).

Importing an old path (`mars_trl.margins`, `mars_trl.peft_utils`, ...) still works and gives the same objects, with
a `FutureWarning` that names the new path.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn that `old` (a module or name) moved to `new`."""
    warnings.warn(
        f"`{old}` moved to `{new}`; the old path is deprecated and will be removed in the next release.",
        FutureWarning,
        stacklevel=stacklevel,
    )


def alias_module(old: str, new: str) -> None:
    """Make module `old` another name for module `new` (so `import old` gives the very module `new`), with a warning."""
    warn_moved(old, new, stacklevel=4)
    sys.modules[old] = importlib.import_module(new)


def moved_name(package: str, name: str, homes: dict[str, str]):
    """A package's `__getattr__` for names that moved out of it: `homes` maps each such name to its new module."""
    if name not in homes:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    warn_moved(f"{package}.{name}", f"{homes[name]}.{name}", stacklevel=4)
    return getattr(importlib.import_module(homes[name]), name)
