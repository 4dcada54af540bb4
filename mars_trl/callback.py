"""Deprecated: `mars_trl.callback` is now `mars_trl.refinement.callback` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.refinement.callback")
