"""Bars and beats of a piece: where its bars start, how long compose's bars are.

A piece's tempo map and time signatures are lists of ``(beat, ...)`` events (see
:class:`musicrnn.notes.Piece`); the event in force at a beat is the last one at or before it.

A declared 1/4 is read as 4/4: exporters write it when they know no metre (617 of POP909's 909
files declare 1/4, yet its beat annotations put a downbeat every 4 beats), and a bar of one beat
would make ``--bars 8`` mean 8 beats. The user's ``--beats-per-bar`` or ``--time-signature``
overrides whatever the file declares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from musicrnn.errors import MusicRNNError

ARTEFACT_SIGNATURES = {(1, 4): (4, 4)}  # declared -> read as

Event = TypeVar("Event", bound=tuple)


def in_force(events: list[Event], beat: float) -> Event:
    """The last event of a tempo map or time-signature list at or before ``beat`` (the first
    one if ``beat`` precedes them all)."""
    current = events[0]
    for event in events:
        if event[0] > beat + 1e-9:
            break
        current = event
    return current


def signature_beats(numerator: int, denominator: int) -> float:
    """Quarter-note beats in one bar of ``numerator/denominator``."""
    return numerator * 4.0 / denominator


def read_signature(numerator: int, denominator: int) -> tuple[int, int]:
    """A declared time signature as musicrnn reads it (1/4 as 4/4, see the module's docstring)."""
    return ARTEFACT_SIGNATURES.get((numerator, denominator), (numerator, denominator))


def parse_time_signature(text: str) -> tuple[int, int]:
    """``"N/D"`` -> ``(N, D)``; D a power of two, as MIDI stores it."""
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise MusicRNNError(f"time signature {text!r}: give N/D, e.g. 4/4, 3/4 or 6/8") from None
    if not (1 <= num <= 255 and den in (1, 2, 4, 8, 16, 32, 64)):
        raise MusicRNNError(f"time signature {text!r}: need 1 <= N <= 255 and D a power of two up to 64, e.g. 6/8")
    return num, den


@dataclass(frozen=True)
class Metre:
    """How compose counts bars: the user's ``--beats-per-bar`` or ``--time-signature`` if given,
    else the time signature the piece declares (1/4 read as 4/4), else 4/4."""

    beats_per_bar: float | None = None
    time_signature: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.beats_per_bar is not None and self.time_signature is not None:
            raise MusicRNNError("give either --beats-per-bar or --time-signature, not both")
        if self.beats_per_bar is not None and not 0 < self.beats_per_bar <= 64:
            raise MusicRNNError(f"--beats-per-bar must be above 0 and at most 64, not {self.beats_per_bar}")

    def bar_beats(self, time_signatures: list[tuple[float, int, int]] | None = None, at: float = 0.0) -> float:
        """Quarter-note beats in a bar at beat ``at`` of a piece with ``time_signatures``: the
        one bar length compose uses (for --bars, the bar count shown, the piano roll's lines)."""
        if self.beats_per_bar is not None:
            return float(self.beats_per_bar)
        if self.time_signature is not None:
            return signature_beats(*self.time_signature)
        if time_signatures:
            return signature_beats(*read_signature(*in_force(time_signatures, at)[1:]))
        return 4.0

    def bar_lines(self, time_signatures: list[tuple[float, int, int]], end: float) -> np.ndarray:
        """Beats at which the bars that start before ``end`` start: each time-signature change
        starts a new bar (as in MIDI), bars of its length follow until the next change; one
        length throughout when the user gave it."""
        if self.beats_per_bar is not None or self.time_signature is not None:
            lines = np.arange(0.0, end - 1e-9, self.bar_beats())
            return lines if len(lines) else np.zeros(1)
        lines: list[np.ndarray] = []
        for k, (beat, num, den) in enumerate(time_signatures):
            stop = min(time_signatures[k + 1][0] if k + 1 < len(time_signatures) else end, end)
            if beat < stop:
                lines.append(np.arange(beat, stop - 1e-9, signature_beats(*read_signature(num, den))))
        return np.concatenate(lines) if lines else np.zeros(1)

    def written(self) -> tuple[int, int] | None:
        """The time signature to write for the new music when the user set the metre (a
        --beats-per-bar that no N/4, N/8 or N/16 gives writes none)."""
        if self.time_signature is not None:
            return self.time_signature
        if self.beats_per_bar is not None:
            for den in (4, 8, 16):
                num = self.beats_per_bar * den / 4
                if num == int(num) and num <= 255:
                    return int(num), den
        return None
