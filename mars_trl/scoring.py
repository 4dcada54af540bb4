"""Deprecated: `mars_trl.scoring` is now `mars_trl.sampling.scoring` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.sampling.scoring")
