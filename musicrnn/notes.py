"""Notes as musicrnn holds them, between files and codecs.

Holds:
- ``NOTE_DTYPE`` and :func:`make_notes`: notes as one numpy structured array (fast to slice,
  sort and hand to the codecs without Python loops).
- :class:`Piece`: notes in beats (quarter notes) plus the tempo map and time signatures, with
  :meth:`Piece.seconds` to turn beat times into seconds.
- :class:`NoteBatch`: the notes of many pieces in one set of columns (``prepare``'s chunks).
- :func:`beats_to_seconds` and :func:`beats_to_seconds_batch`: through a tempo map, the same to
  the bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOTE_DTYPE = np.dtype(
    [
        ("pitch", np.int16),
        ("velocity", np.int16),
        ("start", np.float64),
        ("end", np.float64),
        ("program", np.int16),
        ("is_drum", np.bool_),
        ("track", np.int16),
        ("channel", np.int16),
    ]
)

Columns = dict[str, np.ndarray]  # notes as one array per NOTE_DTYPE field (contiguous, cheap to index)
Maps = tuple[list[tuple[float, float]], list[tuple[float, int, int]]]  # (tempos, time signatures)

DEFAULT_BPM = 120.0


def make_notes(rows: list[tuple] | None = None, **columns: np.ndarray) -> np.ndarray:
    """Build a structured note array from ``(pitch, velocity, start, end[, program, ...])`` rows
    or from named columns; fields not given get defaults (program 0, not drum, track/channel 0)."""
    if rows is not None:
        arr = np.zeros(len(rows), NOTE_DTYPE)
        for i, row in enumerate(rows):
            for name, value in zip(NOTE_DTYPE.names, row):
                arr[i][name] = value
        return arr
    n = len(next(iter(columns.values()))) if columns else 0
    arr = np.zeros(n, NOTE_DTYPE)
    for name, values in columns.items():
        arr[name] = values
    return arr


@dataclass
class Piece:
    """A piece of music: notes with times in beats (quarter notes), its tempo map and metre.

    ``tempos`` is a list of ``(beat, bpm)`` sorted by beat, first at beat 0. ``time_signatures``
    is a list of ``(beat, numerator, denominator)``.
    """

    notes: np.ndarray
    tempos: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, DEFAULT_BPM)])
    time_signatures: list[tuple[float, int, int]] = field(default_factory=lambda: [(0.0, 4, 4)])
    source: str = ""

    def seconds(self, beats: np.ndarray | float) -> np.ndarray:
        """Convert beat times to seconds through the tempo map."""
        return beats_to_seconds(self.tempos, beats)

    def beats(self, seconds: np.ndarray | float) -> np.ndarray:
        """Convert seconds to beat times through the tempo map (inverse of :meth:`seconds`)."""
        s = np.asarray(seconds, dtype=np.float64)
        starts = np.array([t[0] for t in self.tempos], dtype=np.float64)
        spb = 60.0 / np.array([t[1] for t in self.tempos], dtype=np.float64)
        seg_secs = np.concatenate([[0.0], np.cumsum(np.diff(starts) * spb[:-1])])
        i = np.clip(np.searchsorted(seg_secs, s, side="right") - 1, 0, len(starts) - 1)
        return starts[i] + (s - seg_secs[i]) / spb[i]

    @property
    def duration_beats(self) -> float:
        return float(self.notes["end"].max()) if len(self.notes) else 0.0

    @property
    def duration_seconds(self) -> float:
        return float(self.seconds(self.duration_beats))

    def pitched(self) -> np.ndarray:
        """Notes that have a pitch (drum-channel notes removed)."""
        return self.notes[~self.notes["is_drum"]]


@dataclass
class NoteBatch:
    """The notes of several pieces in one set of columns (times in beats), so that ``prepare``
    handles a chunk of files with one numpy call per step instead of one per file: piece ``i``
    is rows ``bounds[i]:bounds[i + 1]``, its (tempos, time signatures) are ``maps[i]``."""

    cols: Columns
    bounds: np.ndarray
    maps: list[Maps]
    # per piece, the names of its tracks by the ``track`` column's numbers (MIDI files only:
    # an empty list for pieces without tracks)
    track_names: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.track_names:
            self.track_names = [[] for _ in self.maps]

    @classmethod
    def join(cls, pieces: list[tuple[Columns, Maps]]) -> NoteBatch:
        """One batch of ``(columns, maps)`` pieces."""
        bounds = np.zeros(len(pieces) + 1, np.int64)
        bounds[1:] = np.cumsum([len(cols["pitch"]) for cols, _ in pieces])
        cols = {name: np.concatenate([c[name] for c, _ in pieces]) for name in NOTE_DTYPE.names}
        return cls(cols, bounds, [maps for _, maps in pieces])

    def __len__(self) -> int:
        return len(self.maps)


def piece_index(bounds: np.ndarray) -> np.ndarray:
    """The piece of each row of a batch with row bounds ``bounds``."""
    n = len(bounds) - 1
    return np.repeat(np.arange(n, dtype=index_dtype(n)), np.diff(bounds))


def index_dtype(n: int) -> type:
    """The smallest integer type for indices below ``n``: numpy sorts 16-bit keys by radix."""
    return np.int16 if n <= np.iinfo(np.int16).max else np.int64


def beats_to_seconds_batch(tempo_maps: list[list[tuple[float, float]]], bounds: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """:func:`beats_to_seconds` for several pieces at once: columns ``bounds[i]:bounds[i + 1]``
    of ``beats`` (shape ``[k, rows]``) go through ``tempo_maps[i]``. The same float operations
    in the same order as :func:`beats_to_seconds`, so the results are the same to the bit."""
    starts: list[float] = []
    spb: list[float] = []
    seg_secs: list[float] = []
    first = np.zeros(len(tempo_maps), np.int64)
    segment = np.ones(beats.shape, np.int64)  # searchsorted's answer: 1 (the first segment) unless looked up
    for i, tempos in enumerate(tempo_maps):
        first[i] = len(starts)
        s = [float(b) for b, _ in tempos]
        p = [60.0 / float(bpm) for _, bpm in tempos]
        secs = [0.0]
        for j in range(len(s) - 1):  # np.cumsum(np.diff(starts) * spb[:-1]), term by term
            secs.append(secs[-1] + (s[j + 1] - s[j]) * p[j])
        starts += s
        spb += p
        seg_secs += secs
        if len(s) > 1:
            lo, hi = bounds[i], bounds[i + 1]
            segment[:, lo:hi] = np.searchsorted(s, beats[:, lo:hi], side="right")
    idx = np.maximum(segment - 1, 0) + np.repeat(first, np.diff(bounds))
    starts_a, spb_a, secs_a = np.array(starts), np.array(spb), np.array(seg_secs)
    return secs_a[idx] + (beats - starts_a[idx]) * spb_a[idx]


def beats_to_seconds(tempos: list[tuple[float, float]], beats: np.ndarray | float) -> np.ndarray:
    """Convert beat times to seconds through a tempo map (``Piece.tempos``)."""
    b = np.asarray(beats, dtype=np.float64)
    starts = np.array([t[0] for t in tempos], dtype=np.float64)
    spb = 60.0 / np.array([t[1] for t in tempos], dtype=np.float64)
    seg_secs = np.concatenate([[0.0], np.cumsum(np.diff(starts) * spb[:-1])])
    i = np.clip(np.searchsorted(starts, b, side="right") - 1, 0, len(starts) - 1)
    return seg_secs[i] + (b - starts[i]) * spb[i]
