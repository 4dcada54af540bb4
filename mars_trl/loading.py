"""Deprecated: `mars_trl.loading` is now `mars_trl.data.loading` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.data.loading")
