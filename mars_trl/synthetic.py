"""Deprecated: `mars_trl.synthetic` is now `mars_trl.cli.synthetic` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.cli.synthetic")
