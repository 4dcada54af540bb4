"""Deprecated: `mars_trl.preparation` is now `mars_trl.data.preparation` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.data.preparation")
