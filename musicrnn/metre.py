"""Bars and beats of a piece: where its bars start, how long compose's bars are.

A piece's tempo map and time signatures are lists of ``(beat, ...)`` events (see
:class:`musicrnn.midi.Piece`); the event in force at a beat is the last one at or before it.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

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


def bar_lines(time_signatures: list[tuple[float, int, int]], end: float) -> np.ndarray:
    """Beats at which the bars that start before ``end`` start: each time-signature change
    starts a new bar (as in MIDI), bars of its length follow until the next change."""
    lines: list[np.ndarray] = []
    for k, (beat, num, den) in enumerate(time_signatures):
        stop = min(time_signatures[k + 1][0] if k + 1 < len(time_signatures) else end, end)
        if beat < stop:
            lines.append(np.arange(beat, stop - 1e-9, signature_beats(num, den)))
    return np.concatenate(lines) if lines else np.zeros(1)
