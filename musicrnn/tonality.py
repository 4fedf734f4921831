"""Keys: reading key names, estimating a piece's key, and the shift that takes it home.

Holds:
- :data:`NOTE_NAMES`, :data:`SCALES` and :func:`parse_tonic`: the note and scale names that
  ``compose --key`` and ``serve`` accept (:func:`musicrnn.sample.parse_key` builds on them).
- :class:`Key` and :func:`parse_key`: ``"F#:min"``, ``"Gb:maj"`` (POP909's annotations) or
  ``"A:minor"`` (our CLI) -> a major or minor key.
- :func:`estimate_key` / :func:`estimate_keys`: Krumhansl–Schmuckler key finding with the
  Krumhansl–Kessler profiles (Krumhansl 1990): the key whose profile correlates best with the
  duration-weighted pitch-class profile of the notes. :func:`estimate_keys` does many pieces
  with one matrix product (``data prepare`` estimates a chunk of files at once).
- :func:`home_shift`: the semitones that move a key's tonic to C (C major, C minor), so models
  can be trained in one home key and the live engine transposes what it hears there and its
  answer back (the Bach chorales are published in C major and C minor, and key-normalised data
  is prepared the same way).
- :func:`scale_pitch_classes`, :func:`key_profile`, :func:`in_scale_ratio`: a key's scale (minor =
  natural minor plus the raised 7th), its tonal hierarchy, and how much of some notes is in it.

No torch, no music21: ``data prepare`` workers import this.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from musicrnn.errors import MusicRNNError

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10, 11),  # natural minor plus the raised leading tone
    "natural-minor": (0, 2, 3, 5, 7, 8, 10),
    "harmonic-minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "minor-pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "chromatic": tuple(range(12)),
}
MODES = ("major", "minor")
MODE_ALIASES = {"major": "major", "maj": "major", "minor": "minor", "min": "minor"}
# how each tonic is written in key names (the spelling most keys are written in)
TONIC_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


class Key(NamedTuple):
    """A major or minor key: ``tonic`` is a pitch class (0 = C); ``score`` is the estimate's
    correlation (-1..1), or None for a key read from a name."""

    tonic: int
    mode: str
    score: float | None = None

    def __str__(self) -> str:
        return f"{TONIC_NAMES[self.tonic]}:{self.mode}"

    @property
    def name(self) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:  # the same key whatever the score
        return isinstance(other, tuple) and len(other) >= 2 and (self.tonic, self.mode) == tuple(other[:2])

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.tonic, self.mode))


ALL_KEYS = tuple(Key(t, m) for m in ("major", "minor") for t in range(12))


def parse_tonic(text: str) -> int:
    """``"F#"``, ``"Gb"``, ``"bb"`` -> its pitch class (0-11), or :class:`MusicRNNError`."""
    try:
        pc = NOTE_NAMES[text[0].upper()]
        for acc in text[1:]:
            pc += {"#": 1, "b": -1}[acc]
    except (KeyError, IndexError):
        raise MusicRNNError(f"note name {text!r} not understood; write a letter A-G with # or b, e.g. F# or Bb") from None
    return pc % 12


def parse_key(text: str) -> Key:
    """``"F#:min"``, ``"Gb:maj"``, ``"E:min"`` (POP909) or ``"A:minor"``, ``"C:major"`` (our CLI)
    -> a :class:`Key`; any case."""
    tonic, _, mode = text.strip().partition(":")
    try:
        return Key(parse_tonic(tonic), MODE_ALIASES[mode.lower()])
    except (MusicRNNError, KeyError):
        raise MusicRNNError(f"key {text!r} not understood; write TONIC:MODE, e.g. C:major, A:minor, F#:min, Gb:maj") from None


def _templates() -> np.ndarray:
    """The 24 key profiles, centred and of unit length: row ``12 * m + t`` is tonic ``t`` in
    mode ``MODES[m]``, indexed by pitch class."""
    rows = [np.roll(profile, t) for profile in (KK_MAJOR, KK_MINOR) for t in range(12)]
    t = np.array(rows) - np.mean(rows, axis=1, keepdims=True)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


TEMPLATES = _templates()


def pitch_class_profiles(pitches: np.ndarray, durations: np.ndarray, piece: np.ndarray | None = None,
                         pieces: int = 1) -> np.ndarray:
    """Duration-weighted pitch-class profiles, ``[pieces, 12]``: note ``i`` of piece
    ``piece[i]`` adds its duration to its pitch class (one bincount for all the pieces)."""
    piece = np.zeros(len(pitches), np.int64) if piece is None else np.asarray(piece, np.int64)
    slots = piece * 12 + np.asarray(pitches, np.int64) % 12
    weights = np.clip(np.asarray(durations, np.float64), 0.0, None)
    return np.bincount(slots, weights=weights, minlength=12 * pieces).reshape(pieces, 12)


def estimate_keys(profiles: np.ndarray) -> list[Key]:
    """Krumhansl–Schmuckler: per pitch-class profile (rows of ``[n, 12]``), the key whose
    Krumhansl–Kessler profile correlates best with it (Pearson). A profile without notes, or
    a flat one, gives C major with score 0."""
    p = np.asarray(profiles, np.float64)
    p = p - p.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(p, axis=1, keepdims=True)
    scores = (p / np.where(norm > 0, norm, 1.0)) @ TEMPLATES.T  # [n, 24]
    best = np.argmax(scores, axis=1)
    return [Key(int(b % 12), MODES[b // 12], float(scores[i, b])) for i, b in enumerate(best.tolist())]


def estimate_key(pitches: np.ndarray, durations: np.ndarray, candidates: list[Key] | None = None) -> Key:
    """The key of some notes (MIDI pitches and their durations in any unit), by
    Krumhansl–Schmuckler over their duration-weighted pitch-class profile (the best of
    ``candidates`` if given: their scores compare a current key with a new estimate)."""
    profile = pitch_class_profiles(pitches, durations)
    if candidates is None:
        return estimate_keys(profile)[0]
    p = profile[0] - profile[0].mean()
    n = np.linalg.norm(p)
    scores = [float(TEMPLATES[12 * MODES.index(k.mode) + k.tonic] @ (p / n)) if n > 0 else 0.0 for k in candidates]
    best = int(np.argmax(scores))
    return Key(candidates[best].tonic, candidates[best].mode, scores[best])


def home_shift(key: Key | int) -> int:
    """The shift in semitones (-5..6) that moves ``key`` (or a tonic pitch class) home: its tonic
    to C, a major key to C major, a minor key to C minor (F# major: +6, Db major: -1, E minor:
    -4). Relative keys get different shifts, so a call heard in A minor that was meant in C
    major is answered in the relative key: still in its scale."""
    tonic = key if isinstance(key, int) else key.tonic
    return (5 - tonic) % 12 - 5


def scale_pitch_classes(key: Key) -> frozenset[int]:
    """The pitch classes of ``key``'s scale: major, or natural minor plus the raised 7th."""
    return frozenset((key.tonic + s) % 12 for s in SCALES[key.mode])


def key_profile(key: Key) -> np.ndarray:
    """``key``'s Krumhansl–Kessler profile (its tonal hierarchy), indexed by pitch class."""
    return np.roll(KK_MAJOR if key.mode == "major" else KK_MINOR, key.tonic)


def in_scale_ratio(pitches, key: Key) -> float:
    """Share of ``pitches`` whose pitch class is in ``key``'s scale (0 for no notes)."""
    ps = list(pitches)
    if not ps:
        return 0.0
    scale = scale_pitch_classes(key)
    return sum(int(p) % 12 in scale for p in ps) / len(ps)
