"""Backwards-compatible name for :mod:`musicrnn.codecs` (the codecs and their registry), so
``from musicrnn.codec import ...`` in older scripts and tests keeps working."""

from musicrnn.codecs import *  # noqa: F401,F403
from musicrnn.codecs import __all__  # noqa: F401
