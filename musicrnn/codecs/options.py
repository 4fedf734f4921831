"""The command-line side of the codecs: how a codec declares its `musicrnn data prepare`
options (:class:`CliOption`) and the checks they share. The registry
(:mod:`musicrnn.codecs`) merges the codecs' options for the CLI and builds a codec from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from musicrnn.errors import CodecError


@dataclass(frozen=True)
class CliOption:
    """A `musicrnn data prepare` option that sets part of a codec's config. Codecs that share
    an option (same ``flag``) declare it alike; ``detail`` is what it means for this codec,
    merged into the shared help. ``key``: the config (to_dict) key it sets, for
    :func:`musicrnn.codecs.prepare_options`; ``always``: name it even at its default there
    (where the CLI's default is not the codec's)."""

    flag: str  # e.g. "--max-shift", or "--restrike/--no-restrike" for an on/off flag
    param: str  # the value's name in from_cli's ``values``
    help: str
    type: Any = str  # str, int, float, bool, or a tuple of choices
    default: Any = None
    show_default: bool = False
    key: str | None = None
    always: bool = False
    detail: str = ""

    @property
    def name(self) -> str:
        """The flag as typed to switch it on (``--restrike`` of ``--restrike/--no-restrike``)."""
        return self.flag.split("/")[0]


class OptionValueError(CodecError):
    """A bad value of one command-line option (the CLI reports it as click reports its own)."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def parse_pitch_range(text: str, flag: str = "--pitch-range") -> tuple[int, int]:
    """``"21-108"`` -> (21, 108), both 0-127, low first."""
    try:
        lo, hi = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise OptionValueError(flag, f"{text!r}: give LO-HI in MIDI note numbers, e.g. 21-108") from None
    if not (0 <= lo <= hi <= 127):
        raise OptionValueError(flag, f"{text!r}: need 0 <= LO <= HI <= 127")
    return lo, hi


def check_steps(steps: float | None, unit: str) -> None:
    """``--steps``: positive and finite where given (0 would silently mean "the default")."""
    if steps is not None and not (0 < steps < float("inf")):
        raise CodecError(f"--steps {steps:g}: give a positive number of steps per {unit}, or leave it out for the "
                         "default")


# the options several codecs share (each declares the ones it takes, with its own detail)
PITCH_RANGE_OPTION = CliOption("--pitch-range", "pitch_range",
                               "Lowest-highest MIDI pitch kept (notes outside are dropped).", default="21-108",
                               show_default=True)


def steps_option(key: str, detail: str, always: bool = False) -> CliOption:
    """``--steps`` as a codec with config key ``key`` takes it (``detail``: its default)."""
    return CliOption("--steps", "steps", "Grid resolution: steps per second/beat", type=float, key=key, always=always,
                     detail=detail)
