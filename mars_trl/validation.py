"""Deprecated: `mars_trl.validation` is now `mars_trl.data.validation` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.data.validation")
