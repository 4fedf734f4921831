"""Bars and beats of a piece: where its bars start, how long compose's bars are; and the grid a
player's onsets lie on (:func:`detect_grid`: straight, swung eighths or triplets).

A piece's tempo map and time signatures are lists of ``(beat, ...)`` events (see
:class:`musicrnn.notes.Piece`); the event in force at a beat is the last one at or before it.

A declared 1/4 is read as 4/4: exporters write it when they know no metre (617 of POP909's 909
files declare 1/4, yet its beat annotations put a downbeat every 4 beats), and a bar of one beat
would make ``--bars 8`` mean 8 beats. The user's ``--beats-per-bar`` or ``--time-signature``
overrides whatever the file declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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


# --- the grid of a call: straight, swung eighths or triplets -------------------------------------
GRID_TOLERANCE = 1 / 24  # beats: an onset this close to a grid point is on it (what "on the grid" means)
FIT_TOLERANCE = 1 / 16  # beats: while fitting a grid, a player's onset this close counts (±20 ms of timing
# at 120 BPM is ±1/25 beat, plus the error of the fitted phase); below half of 1/3 - 1/4
CHORD_BEATS = 0.03  # onsets closer than this are one onset (a chord)
MIN_GRID_ONSETS = 6  # fewer distinct onsets tell no grid
MIN_OFFBEATS = 2  # onsets between the beats needed to tell the subdivision (quarters tell none)
GRID_FIT = 0.85  # share of onsets a grid must hold
MAX_RESIDUAL = 0.03  # beats: root mean square distance of those onsets from its points (a player's ±20 ms at
# 120 BPM is 0.023; a call mixing straight and swung eighths fits sixteenths with 0.04 or more)
SWING_MIN, SWING_MAX = 0.56, 0.72  # the off-beat eighth's place in the beat that counts as swung
CONFIDENT_OFFBEATS = 4  # off-beat onsets for full confidence
STRAIGHT = (0.0, 0.25, 0.5, 0.75)
TRIPLET = (0.0, 1 / 3, 2 / 3)


@dataclass(frozen=True)
class Grid:
    """Where a player's onsets fall in the beat: onsets lie near ``phase + k + point`` for a
    whole ``k`` and one of ``points`` (fractions of a beat, the first 0: the beat itself).

    ``kind``: straight (sixteenths, so straight eighths too), swing (eighths, the off-beat one
    late at ``offbeat`` of the beat, e.g. 2/3) or triplet (thirds of the beat). ``offbeat`` is
    where the off-beat eighth falls (0.5 straight, the swing ratio, 2/3 for triplets): what a
    model that plays straight eighths is warped to (:meth:`warp`). ``phase``: where the
    player's beats fall on the clock's (0 when playing to it)."""

    kind: str
    points: tuple[float, ...]
    offbeat: float
    phase: float
    confidence: float

    @property
    def name(self) -> str:
        return f"swing {self.offbeat:.2f}" if self.kind == "swing" else self.kind

    def anchored(self, beat: float) -> Grid:
        """This grid with its beat on the lattice point nearest ``beat`` (where an answer starts:
        on the player's beat), for straight and triplet grids, whose points are evenly spaced and
        so do not say which of them is the beat; a swung grid's beat is its long note's."""
        if self.kind == "swing":
            return self
        period = 1.0 / len(self.points)
        k = round(((beat - self.phase) % 1.0) / period)
        return replace(self, phase=(self.phase + k * period) % 1.0)

    def distance(self, beats) -> np.ndarray:
        """Beats from each of ``beats`` to the nearest grid point."""
        rel = (np.asarray(beats, dtype=np.float64) - self.phase) % 1.0
        d = np.abs(rel[..., None] - np.asarray(self.points + (1.0,)))
        return d.min(-1)

    def warp(self, beats, strength: float = 1.0):
        """Straight time moved onto this grid's feel: the second half of each beat is squeezed
        so that its off-beat eighth falls at ``offbeat`` (the swing of a drum machine: the
        beat stays, off-beat eighths come late, sixteenths in proportion); ``strength`` 0-1
        scales the swing. Never earlier than the straight time; order is kept."""
        r = 0.5 + strength * (self.offbeat - 0.5)
        b = np.asarray(beats, dtype=np.float64)
        beat = np.floor(b - self.phase)
        p = b - self.phase - beat
        q = np.where(p < 0.5, p * 2 * r, r + (p - 0.5) * 2 * (1 - r))
        out = self.phase + beat + q
        return float(out) if np.ndim(out) == 0 else out


def _circular_phase(t: np.ndarray, period: float) -> float:
    """The phase in [0, period) that ``t`` cluster around (circular mean; 0 if none)."""
    z = np.exp(2j * np.pi * t / period).mean() if len(t) else 0.0
    return float(np.angle(z) / (2 * np.pi) * period % period) if abs(z) > 1e-9 else 0.0


def _gap(t: np.ndarray, point: float) -> np.ndarray:
    """Beats from each onset to the nearest ``point + k``."""
    return np.abs((t - point + 0.5) % 1.0 - 0.5)


def _placed(t: np.ndarray, phase: float, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each onset's signed beats from every grid point, its nearest point, and whether it is on the grid."""
    signed = (t[:, None] - phase - pts[None, :] + 0.5) % 1.0 - 0.5
    d = np.abs(signed)
    return signed, d.argmin(1), d.min(1) <= FIT_TOLERANCE


def _fit(t: np.ndarray, kind: str, points: tuple[float, ...], offbeat: float, phase: float) -> tuple[Grid, float, int]:
    """The grid ``points`` at ``phase`` (refitted to the onsets on it), turned so that its beat is
    its point nearest the clock's beat unless another is much busier; the share of onsets on it
    and how many of them lie off its beat."""
    pts = np.asarray(points)
    signed, near, on = _placed(t, phase, pts)
    for _ in range(2):  # the phase again from the onsets on the grid only (a stray note does not pull it)
        if not on.any():
            break
        shift = _circular_phase(signed[on, near[on]], 1.0)
        phase = (phase + (shift + 0.5) % 1.0 - 0.5) % 1.0
        signed, near, on = _placed(t, phase, pts)
    residual = np.abs(signed[np.arange(len(t)), near])
    if kind != "swing":  # a lattice: its point nearest the clock's beat is the beat, unless another is much busier
        counts = np.bincount(near[on], minlength=len(pts))
        beat = min(range(len(pts)), key=lambda i: abs((phase + pts[i] + 0.5) % 1.0 - 0.5))
        if counts.max() >= 1.5 * counts[beat]:
            beat = int(counts.argmax())
        phase, near = (phase + pts[beat]) % 1.0, (near - beat) % len(pts)
    off = int(np.count_nonzero(on & (near != 0)))
    share = float(on.mean())
    if not on.any() or np.sqrt(np.mean(residual[on] ** 2)) > MAX_RESIDUAL:
        share = 0.0  # its points are not where the onsets are
    conf = share * min(1.0, off / CONFIDENT_OFFBEATS)
    return Grid(kind, points, float(offbeat), float(phase), round(conf, 3)), share, off


def _eighths(t: np.ndarray) -> tuple[Grid, float, int] | None:
    """Two points a beat, long then short: straight or swung eighths (None: no off-beats)."""
    half = _circular_phase(t, 0.5)
    first = _gap(t, half) <= 0.25
    if first.all() or not first.any():
        return None
    a, b = _circular_phase(t[first], 1.0), _circular_phase(t[~first], 1.0)
    for _ in range(2):  # each point again from the onsets near it only (a stray note does not pull it)
        near_a, near_b = _gap(t, a) <= FIT_TOLERANCE, _gap(t, b) <= FIT_TOLERANCE
        a = _circular_phase(t[near_a], 1.0) if near_a.any() else a
        b = _circular_phase(t[near_b], 1.0) if near_b.any() else b
    r = (b - a) % 1.0
    if r < 0.5:  # the beat starts the longer of the two
        a, r = b, 1.0 - r
    if r < SWING_MIN:
        return _fit(t, "straight", STRAIGHT, 0.5, a)
    if r > SWING_MAX:
        return None
    return _fit(t, "swing", (0.0, r), r, a)


def melody_grid(starts: np.ndarray, durations: np.ndarray, steps_per_beat: int) -> float:
    """Where a melody's beats fall on its file's beat grid, in beats (0 to 1): the sub-step
    phase its onsets cluster around (circular mean; MIDI files made from audio, like POP909's,
    have their notes up to half a step off the file's tick grid), plus the whole steps to the
    step that is its beat: of each pair of steps half a beat apart (the eighths, for an even
    ``steps_per_beat``) the one holding the most note length, the longer notes falling on the
    beat. An accompaniment on frames from this phase sits on the melody's beats."""
    starts = np.asarray(starts, np.float64)
    if not len(starts):
        return 0.0
    step = 1.0 / steps_per_beat
    sub = (_circular_phase(starts, step) + step / 2) % step - step / 2  # -half a step .. half a step
    at = np.rint((starts - sub) * steps_per_beat).astype(np.int64) % steps_per_beat
    held = np.bincount(at, weights=np.asarray(durations, np.float64), minlength=steps_per_beat)
    if steps_per_beat % 2 == 0:
        half = steps_per_beat // 2
        pair = int(np.argmax(held[:half] + held[half:]))
        beat = pair if held[pair] >= held[pair + half] else pair + half
    else:
        beat = int(np.argmax(held))
    return float((sub + beat * step) % 1.0)


def distinct_onsets(onsets: Sequence[float]) -> np.ndarray:
    """Sorted onsets with a chord's notes (closer than ``CHORD_BEATS``) as one."""
    t = np.sort(np.asarray(onsets, dtype=np.float64))
    if len(t) < 2:
        return t
    return t[np.concatenate([[True], np.diff(t) > CHORD_BEATS])]


def detect_grid(onsets: Sequence[float]) -> Grid | None:
    """The grid a call's onsets (in beats) lie on, or None when the call tells none: fewer than
    ``MIN_GRID_ONSETS`` onsets, fewer than ``MIN_OFFBEATS`` between the beats (quarter notes
    say nothing of the subdivision), or no grid holding ``GRID_FIT`` of them within
    ``MAX_RESIDUAL`` (a call mixing straight and swung eighths). The simplest grid that holds them wins: eighths (straight or
    swung) before triplets before straight sixteenths. Its phase is fitted (a player need not
    play on the clock's beat), within ``FIT_TOLERANCE`` of timing noise."""
    t = distinct_onsets(onsets)
    if len(t) < MIN_GRID_ONSETS:
        return None
    fits = [_eighths(t), _fit(t, "triplet", TRIPLET, 2 / 3, _circular_phase(t, 1 / 3)),
            _fit(t, "straight", STRAIGHT, 0.5, _circular_phase(t, 0.25))]
    for fit in fits:
        if fit is not None and fit[1] >= GRID_FIT and fit[2] >= MIN_OFFBEATS:
            return fit[0]
    return None
