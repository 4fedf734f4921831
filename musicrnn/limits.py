"""Limits that several commands share, kept in one place so that they agree.

Each range a value must lie in is one :class:`Limit` here; every place that takes the value
(the CLI, the live control API, OSC, the live engine, compose's sampling) checks it with that
limit, so they refuse the same values with the same words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from musicrnn.errors import MusicRNNError

# No generated note lasts longer than this by default, in compose (--max-note) and serve
# (--max-note-beats): sampling can hold a note for tens of seconds (4-6 % of compose's notes
# lasted over 4 s, the longest 24.5 s of a 30-s piece, against 0.09 % in POP909).
MAX_NOTE_BEATS = 8.0

# Tempi musicrnn plays and writes, in BPM (compose --tempo, serve --tempo, OSC /musicrnn/tempo).
MIN_BPM = 20
MAX_BPM = 400

# Live play: a model note-on this late (s) is not played out of time: the conductor skips a
# decision this far behind the clock (grid frames), and the scheduler drops a note-on that is
# this late when its turn comes (late notes sound wrong, missing ones don't).
LATE_S = 0.03


@dataclass(frozen=True)
class Limit:
    """A closed range ``lo``-``hi`` (either end may be open: None) for a value given by a user."""

    lo: float | None = None
    hi: float | None = None

    def check(self, value, name: str):
        """``value`` if it is finite and in range, else :class:`MusicRNNError` naming ``name``."""
        try:
            finite = math.isfinite(value)
        except TypeError:
            raise MusicRNNError(f"{name} must be a number, not {value!r}") from None
        if not finite:
            raise MusicRNNError(f"{name} must be a finite number, not {value}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise MusicRNNError(f"{name} must be {self.text('-')}, not {_num(value)}")
        return value

    def text(self, dash: str = "–") -> str:
        """``"0-5"`` (as docs and messages write the range)."""
        return f"{_num(self.lo)}{dash}{_num(self.hi)}"


TEMPO = Limit(MIN_BPM, MAX_BPM)
TEMPERATURE = Limit(0, 5)  # 1 = as trained; 0 = always the likeliest; past 5 the choice is close to uniform
TOP_P = Limit(0.01, 1)  # nucleus sampling; 1 = off
DENSITY = Limit(0, 128)  # most model notes at once; 0 = no limit
ANSWER_BARS = Limit(0.25, 64)  # call-response: how long an answer lasts
PITCH = Limit(0, 127)  # a MIDI note number
FOLLOW_STRENGTH = Limit(0, 1)  # how strongly an answer follows the player (0 = off, 1 = full)
VELOCITY = Limit(1, 127)  # a MIDI note-on velocity (compose --velocity N, serve --velocity N)
PROGRAM = Limit(0, 127)  # a General MIDI program number
# n-gram baseline orders (eval ngram:ORDER): beyond ~10 Kneser-Ney gains nothing on music; the cap
# keeps a typo from eating memory
NGRAM_ORDER = Limit(1, 16)


def check_tempo(bpm: float, what: str = "tempo", fix: str = "give a tempo in that range") -> float:
    """``bpm`` if it is a tempo musicrnn plays, else :class:`MusicRNNError` (0 or a typo is no
    tempo to fall back from silently)."""
    if not MIN_BPM <= bpm <= MAX_BPM:  # also refuses NaN
        raise MusicRNNError(f"{what} {bpm:g} BPM is outside {MIN_BPM}-{MAX_BPM}; {fix}")
    return bpm


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:g}" if isinstance(x, float) else str(x)
