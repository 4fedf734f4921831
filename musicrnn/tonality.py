"""Keys: Krumhansl-Schmuckler estimation and the shift into the models' home keys.

The key of some notes is the major or minor key whose Krumhansl-Kessler profile correlates best
with their duration-weighted pitch-class histogram. Key-normalised models are trained with every
piece moved so that its tonic is C (C major, C minor), and the live engine moves what it hears the
same way: :func:`home_shift` is that move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor plus the raised leading tone


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class 0-11
    mode: str  # "major" | "minor"
    score: float = 0.0  # correlation with the profile it was estimated from (not part of equality)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and (self.tonic, self.mode) == (other.tonic, other.mode)

    def __hash__(self) -> int:
        return hash((self.tonic, self.mode))

    @property
    def name(self) -> str:
        return f"{NAMES[self.tonic]}:{self.mode}"


ALL_KEYS = tuple(Key(t, m) for m in ("major", "minor") for t in range(12))


def key_profile(key: Key) -> np.ndarray:
    """The key's Krumhansl-Kessler profile, indexed by pitch class."""
    return np.roll(MAJOR_PROFILE if key.mode == "major" else MINOR_PROFILE, key.tonic)


def _templates() -> np.ndarray:
    t = np.array([key_profile(k) for k in ALL_KEYS])
    t = t - t.mean(1, keepdims=True)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


_TEMPLATES = _templates()


def pitch_class_profile(pitches: Iterable[int], weights: Iterable[float]) -> np.ndarray:
    """Summed weight (e.g. duration) per pitch class."""
    prof = np.zeros(12)
    np.add.at(prof, np.asarray(list(pitches), int) % 12, np.asarray(list(weights), float))
    return prof


def key_scores(profile: np.ndarray) -> np.ndarray:
    """Correlation of a 12-bin profile with each of the 24 keys (order of :data:`ALL_KEYS`)."""
    x = np.asarray(profile, float) - np.mean(profile)
    n = np.linalg.norm(x)
    if n == 0:
        return np.zeros(len(ALL_KEYS))
    return _TEMPLATES @ (x / n)


def estimate_key(pitches: Sequence[int] | np.ndarray, durations: Sequence[float] | np.ndarray,
                 candidates: Sequence[Key] | None = None) -> Key:
    """The best-correlating key of these notes (among ``candidates``, default all 24)."""
    scores = key_scores(pitch_class_profile(pitches, durations))
    keys = list(candidates) if candidates is not None else list(ALL_KEYS)
    idx = [ALL_KEYS.index(k) for k in keys]
    best = max(range(len(idx)), key=lambda i: scores[idx[i]])
    k = keys[best]
    return Key(k.tonic, k.mode, float(scores[idx[best]]))


def scale_pitch_classes(key: Key) -> frozenset[int]:
    steps = MAJOR_SCALE if key.mode == "major" else MINOR_SCALE
    return frozenset((key.tonic + s) % 12 for s in steps)


def home_shift(key: Key | int) -> int:
    """Semitones (-5..6) that move ``key`` (or a tonic pitch class) to its home: the tonic on C,
    C major or C minor, where the models know it best (Bach chorales are published in C; key-normalised
    data is prepared so). Relative keys therefore differ by 3 semitones: a call heard in A minor
    that was meant in C major is answered in A minor's relative key, still in its scale."""
    tonic = key.tonic if isinstance(key, Key) else int(key)
    s = -tonic % 12
    return s - 12 if s > 6 else s


def in_scale_ratio(pitches: Iterable[int], key: Key) -> float:
    """Share of the notes whose pitch class is in the key's scale."""
    ps = list(pitches)
    if not ps:
        return 0.0
    pcs = scale_pitch_classes(key)
    return sum(p % 12 in pcs for p in ps) / len(ps)
