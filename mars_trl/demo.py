"""Deprecated: `mars_trl.demo` is now `mars_trl.cli.demo` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.cli.demo")
