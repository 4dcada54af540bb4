"""Deprecated: `mars_trl.report` is now `mars_trl.refinement.report` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.refinement.report")
