"""Deprecated: `mars_trl.sampler` is now `mars_trl.sampling.sampler` (this alias goes in the next release)."""

from .deprecation import alias_module

alias_module(__name__, "mars_trl.sampling.sampler")
