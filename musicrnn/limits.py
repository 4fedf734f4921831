"""Limits that several commands share, kept in one place so that they agree."""

from __future__ import annotations

from musicrnn.errors import MusicRNNError

# No generated note lasts longer than this by default, in compose (--max-note) and serve
# (--max-note-beats): sampling can hold a note for tens of seconds (4-6 % of compose's notes
# lasted over 4 s, the longest 24.5 s of a 30-s piece, against 0.09 % in POP909).
MAX_NOTE_BEATS = 8.0

# Tempi musicrnn plays and writes, in BPM (compose --tempo, serve --tempo, OSC /musicrnn/tempo).
MIN_BPM = 20
MAX_BPM = 400


def check_tempo(bpm: float, what: str = "tempo", fix: str = "give a tempo in that range") -> float:
    """``bpm`` if it is a tempo musicrnn plays, else :class:`MusicRNNError` (0 or a typo is no
    tempo to fall back from silently)."""
    if not MIN_BPM <= bpm <= MAX_BPM:  # also refuses NaN
        raise MusicRNNError(f"{what} {bpm:g} BPM is outside {MIN_BPM}-{MAX_BPM}; {fix}")
    return bpm
