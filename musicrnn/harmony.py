"""The chords a melody implies, and a prior that leans an accompaniment towards them (issue 17).

An accompaniment model hears the melody but follows its harmony only loosely; the *harmony
follower* estimates, beat by beat, which chord of the key the melody sounds over and adds nats
to the model's new accompaniment notes: chord tones up, the others down
(:func:`chord_prior`). One estimate serves both uses:

- offline (``compose --accompany``) the whole melody is known: :func:`estimate_chords` chooses
  the chords of all beats at once (Viterbi), each beat's chord covering as much of the melody
  sounding in it as it can, with a cost for changing chord that is lowest on a bar's first beat
  (pop harmony moves by bars and half bars; a passing note does not change the chord);
- live (accompany mode) only what was played so far is known: :class:`ChordFollower` hears the
  melody's notes and answers, for a frame about to be decided, the chord that covers most of
  the melody heard in its beat so far (the chord before while nothing new sounds, or on ties).

The candidates (:func:`chord_candidates`) are the diatonic triads of the key (minor: natural
minor, with the major dominant of harmonic minor). The same rule, per annotated beat with no
change cost, is the benchmark's ``rule`` accompaniment (``benchmarks/accompany.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrnn.logit_bias import logsumexp
from musicrnn.tonality import Key

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)
TIE_ORDER = (0, 4, 3, 5, 1, 2, 6)  # scale degrees in the order ties prefer: I, V, IV, vi, ii, iii, vii
CHORD_BIAS = 6.0  # nats between a chord tone and another note at full strength (chosen on the valid split)
CHANGE_COST = {"bar": 0.25, "half": 0.5, "beat": 2.0}  # beats of melody a chord change must explain (offline)


def diatonic_triads(key: Key) -> list[tuple[int, ...]]:
    """The triads on the seven degrees of ``key``'s scale (minor: natural minor), as pitch
    classes root first, in the order ties prefer: I, V, IV, vi, ii, iii, vii."""
    scale = MAJOR_SCALE if key.mode == "major" else MINOR_SCALE
    triads = [tuple((key.tonic + scale[(d + k) % 7]) % 12 for k in (0, 2, 4)) for d in range(7)]
    return [triads[d] for d in TIE_ORDER]


def chord_candidates(key: Key, sevenths: bool = False, dominant: bool = True) -> list[tuple[int, ...]]:
    """The chords the follower chooses among, in tie order: the key's diatonic triads, the
    major dominant in minor (``dominant``), and with ``sevenths`` each one's diatonic seventh."""
    chords = diatonic_triads(key)
    if dominant and key.mode == "minor":
        five = (key.tonic + 7) % 12
        chords.insert(2, (five, (five + 4) % 12, (five + 7) % 12))
    if sevenths:
        scale = [(key.tonic + s) % 12 for s in (MAJOR_SCALE if key.mode == "major" else MINOR_SCALE)]
        more = []
        for c in chords:
            if c[0] in scale and c[2] in scale:
                i = scale.index(c[0])
                seventh = scale[(i + 6) % 7]
                more.append(c + (seventh,))
        chords = chords + more
    return chords


def chord_masks(chords: list[tuple[int, ...]]) -> np.ndarray:
    """[chords, 12]: 1.0 on each chord's pitch classes."""
    masks = np.zeros((len(chords), 12))
    for i, c in enumerate(chords):
        masks[i, list(c)] = 1.0
    return masks


def pitch_class_weights(notes: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """[spans, 12]: how long each pitch class of ``notes`` (NOTE_DTYPE rows) sounds within each
    span between consecutive ``bounds`` (the notes' time unit)."""
    a, b = np.asarray(bounds[:-1], np.float64), np.asarray(bounds[1:], np.float64)
    if not len(a) or not len(notes):
        return np.zeros((len(a), 12))
    overlap = np.clip(np.minimum(notes["end"][None, :], b[:, None]) - np.maximum(notes["start"][None, :], a[:, None]),
                      0.0, None)  # [spans, notes]
    out = np.zeros((len(a), 12))
    pcs = notes["pitch"].astype(np.int64) % 12
    for pc in np.unique(pcs):
        out[:, pc] = overlap[:, pcs == pc].sum(axis=1)
    return out


def greedy_chords(weights: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per span, the chord that covers most of its weight; the chord before on ties (and where
    nothing sounds), else the first in tie order. The benchmark's ``rule``."""
    out = np.zeros(len(weights), np.int64)
    chord = 0
    for s, w in enumerate(weights):
        if w.sum() > 0:
            score = masks @ w
            best = np.flatnonzero(score >= score.max() - 1e-9)
            chord = chord if chord in best else int(best[0])
        out[s] = chord
    return out


def viterbi_chords(weights: np.ndarray, masks: np.ndarray, change_cost: np.ndarray,
                   tie: float = 1e-3) -> np.ndarray:
    """The chord per span that covers most of the melody over the whole piece, less
    ``change_cost[s]`` for each change of chord at span ``s``: a non-causal estimate (the
    whole melody known). Earlier candidates win ties (``tie`` per place in the order)."""
    n, k = len(weights), len(masks)
    if n == 0:
        return np.zeros(0, np.int64)
    score = weights @ masks.T - tie * np.arange(k)[None, :]  # [spans, chords]
    best = score[0].copy()
    back = np.zeros((n, k), np.int64)
    for s in range(1, n):
        stay = best
        j = int(np.argmax(best))
        move = best[j] - change_cost[s]
        back[s] = np.where(stay >= move, np.arange(k), j)
        best = np.maximum(stay, move) + score[s]
    out = np.zeros(n, np.int64)
    out[-1] = int(np.argmax(best))
    for s in range(n - 1, 0, -1):
        out[s - 1] = back[s, out[s]]
    return out


def change_costs(beats: int, bar_beats: int, downbeat: int, costs: dict[str, float] = CHANGE_COST) -> np.ndarray:
    """The cost of a chord change on each of ``beats`` beats, bars of ``bar_beats`` starting on
    beat ``downbeat``: lowest on a bar's first beat, then on its middle (a bar of 4, 6 or 8 beats),
    else a beat's."""
    pos = (np.arange(beats) - downbeat) % max(bar_beats, 1)
    half = bar_beats // 2 if bar_beats >= 4 and bar_beats % 2 == 0 else -1
    return np.where(pos == 0, costs["bar"], np.where(pos == half, costs["half"], costs["beat"]))


def _best_total(weights: np.ndarray, masks: np.ndarray, change_cost: np.ndarray) -> float:
    """The score of :func:`viterbi_chords`' answer (its forward pass alone)."""
    score = weights @ masks.T
    best = score[0].copy()
    for s in range(1, len(weights)):
        best = np.maximum(best, best.max() - change_cost[s]) + score[s]
    return float(best.max())


@dataclass
class Chords:
    """The chord of each beat: ``starts`` [beats] (the notes' unit) and ``tones`` [beats, 12]."""

    starts: np.ndarray
    tones: np.ndarray

    def at(self, times: np.ndarray) -> np.ndarray:
        """[len(times), 12]: the tones of the chord at each time (the first chord before them)."""
        i = np.clip(np.searchsorted(self.starts, np.asarray(times, np.float64) + 1e-9, side="right") - 1, 0, None)
        return self.tones[i] if len(self.starts) else np.zeros((len(times), 12), bool)


def estimate_chords(notes: np.ndarray, key: Key, beat_phase: float = 0.0, bar_beats: float = 4.0,
                    costs: dict[str, float] = CHANGE_COST) -> Chords:
    """The chord of each beat under a whole melody (``notes`` in beats, their beats falling at
    ``beat_phase`` + whole beats) in ``key``: :func:`viterbi_chords` over its beats with the
    change costs of bars of ``bar_beats``, the bar lines where they explain the melody best
    (a file's bar lines need not be the song's)."""
    if not len(notes):
        return Chords(np.zeros(0), np.zeros((0, 12), bool))
    first = np.floor(float(notes["start"].min()) - beat_phase) + beat_phase
    count = max(1, int(np.ceil(float(notes["end"].max()) - first - 1e-9)))
    starts = first + np.arange(count + 1, dtype=np.float64)
    masks = chord_masks(chord_candidates(key))
    weights = pitch_class_weights(notes, starts)
    bar = max(1, int(round(bar_beats)))
    downbeat = max(range(bar), key=lambda d: _best_total(weights, masks, change_costs(count, bar, d, costs)))
    chosen = viterbi_chords(weights, masks, change_costs(count, bar, downbeat, costs))
    return Chords(starts[:-1], masks[chosen] > 0)


def chord_prior(tones: np.ndarray, strength: float, shift: int = 0) -> np.ndarray:
    """Nats per pitch class for new accompaniment notes under a chord (``tones``: [..., 12]
    bool), as a model hears them (moved up by ``shift``): chord tones gain
    ``CHORD_BIAS * strength / 2``, the others lose as much."""
    nats = np.where(np.asarray(tones, bool), 0.5, -0.5) * (CHORD_BIAS * strength)
    return np.roll(nats, shift, axis=-1).astype(np.float32)


def lean(logits: np.ndarray, bias: np.ndarray, tokens: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """``logits`` [batch, vocab] plus ``bias`` ([batch or 1, vocab], on ``tokens`` [vocab] only),
    the total probability of ``tokens`` (of those ``allowed`` [batch, vocab]) kept as it was: a
    prior that moves the accompaniment's new notes between pitches, not one that makes it play
    more or fewer of them."""
    x = np.array(logits, np.float32)
    idx = np.flatnonzero(tokens)
    sub = x[:, idx].astype(np.float64)
    moved = sub + np.broadcast_to(bias, x.shape)[:, idx]
    live = np.ones(sub.shape, bool) if allowed is None else np.asarray(allowed, bool)[:, idx]
    before = logsumexp(np.where(live, sub, -np.inf))
    after = logsumexp(np.where(live, moved, -np.inf))
    ok = np.isfinite(before) & np.isfinite(after)  # a row with none of them allowed is left as it is
    keep = np.zeros_like(before)
    keep[ok] = before[ok] - after[ok]
    x[:, idx] = moved + keep[:, None]
    return x


class ChordFollower:
    """The chord under a live melody, from what was heard up to now (times in beats): the
    candidate of the key covering most of the melody that sounds in the current beat so far
    (a note still held counts up to the end of the frame being decided), the chord before where
    nothing sounds or on a tie (:func:`greedy_chords`, one beat at a time). Memory stays bounded:
    ended notes are kept for ``KEEP_BEATS`` beats."""

    KEEP_BEATS = 2.0

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.held: dict[int, float] = {}  # pitch -> onset
        self.ended: list[tuple[int, float, float]] = []  # (pitch, onset, end)
        self.chord: tuple[int, ...] | None = None

    def note_on(self, beat: float, pitch: int) -> None:
        self.held[pitch] = beat

    def note_off(self, beat: float, pitch: int) -> None:
        onset = self.held.pop(pitch, None)
        if onset is not None:
            self.ended.append((pitch, onset, beat))
            self.ended = [n for n in self.ended if n[2] > beat - self.KEEP_BEATS]

    def prior(self, beat: float, key: Key, strength: float, shift: int = 0) -> np.ndarray | None:
        """:func:`chord_prior` of the chord for a frame at ``beat`` (None: no chord heard yet)."""
        chord = self.chord_at(beat, key)
        if chord is None:
            return None
        tones = np.zeros(12, bool)
        tones[list(chord)] = True
        return chord_prior(tones, strength, shift)

    def chord_at(self, beat: float, key: Key, frame_beats: float = 0.25) -> tuple[int, ...] | None:
        """The chord for a frame starting at ``beat`` (None before the melody says one)."""
        start = float(np.floor(beat + 1e-6))
        until = beat + frame_beats
        weights = np.zeros(12)
        for pitch, onset, end in self.ended + [(p, o, until) for p, o in self.held.items()]:
            weights[pitch % 12] += max(0.0, min(end, until) - max(onset, start))
        if weights.sum() <= 0:
            return self.chord
        chords = chord_candidates(key)
        score = chord_masks(chords) @ weights
        best = [chords[i] for i in np.flatnonzero(score >= score.max() - 1e-9)]
        if self.chord not in best:
            self.chord = best[0]
        return self.chord
