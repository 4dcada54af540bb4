"""Deprecated: `mars_trl.train_script` is now `mars_trl.cli.train` (this alias goes in the next release).

`python -m mars_trl.train_script ...` still runs `mars-trl train`.
"""

import runpy

from .deprecation import alias_module, warn_moved

if __name__ == "__main__":
    warn_moved("mars_trl.train_script", "mars_trl.cli.train", stacklevel=2)
    runpy.run_module("mars_trl.cli.train", run_name="__main__", alter_sys=True)
else:
    alias_module(__name__, "mars_trl.cli.train")
