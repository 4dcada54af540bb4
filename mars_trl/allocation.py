"""Deprecated: `mars_trl.allocation` is now `mars_trl.sampling.allocation` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.sampling.allocation")
