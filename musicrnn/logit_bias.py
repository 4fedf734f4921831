"""The followers' nudges as [vocab] vectors of nats added to a model's logits, shared by live
play and ``compose``: :class:`NoteBias` (onset bias, register tilt, key prior on note-ons) and
:class:`GridBias` (the grid follower for models that choose their own times). What to nudge by
is :mod:`musicrnn.listening`'s business; this module only turns it into vectors, cached.
"""

from __future__ import annotations

import numpy as np

from musicrnn.codecs import KIND_NOTE_ON, KIND_SHIFT
from musicrnn.metre import Grid

GRID_BIAS = 5.0  # nats taken from time shifts ending off the call's grid and note-ons off it, at full grid strength


class NoteBias:
    """The followers' nudges as one [vocab] vector of nats to add to a model's logits: an onset
    bias on every note-onset token, a register tilt (nats per octave from E4) and a per-pitch-class
    key prior on the onsets' pitches. Key priors are cached (a session has few keys)."""

    def __init__(self, codec) -> None:
        self.codec = codec
        self.onsets = (codec.token_kind == KIND_NOTE_ON).astype(np.float32)
        self.octaves = np.where(self.onsets > 0, (codec.token_pitch - 64) / 12.0, 0.0).astype(np.float32)
        self._priors: dict[tuple[float, ...], np.ndarray] = {}

    def __call__(self, onset: float = 0.0, tilt: float = 0.0, prior: tuple[float, ...] | None = None) -> np.ndarray | None:
        if not onset and not tilt and prior is None:
            return None
        bias = np.float32(onset) * self.onsets + np.float32(tilt) * self.octaves
        if prior is not None:
            bias += self.prior(prior)
        return bias

    def prior(self, prior: tuple[float, ...]) -> np.ndarray:
        """The key prior's [vocab] vector (cached; the conductor asks it in idle time too, so an
        answer's first decision finds it)."""
        vec = self._priors.get(prior)
        if vec is None:
            vec = self._priors[prior] = (self.onsets * np.asarray(prior, np.float32)[self.codec.token_pitch % 12]).astype(np.float32)
        return vec


class GridBias:
    """The grid follower for models that choose their own times (performance codec): a [vocab]
    vector of nats for a decision at a beat, taking ``GRID_BIAS`` x strength from every time
    shift that would end off the grid and, when the decision itself is off the grid, from every
    note-on (it waits for the grid instead). Note-offs stay free. A shift ends on the grid when
    it ends within half a codec step of a grid point, so the nearest step to each point counts
    whatever the codec's steps' phase. Vectors are cached per place in the beat.
    :meth:`logits` applies one keeping the model's chance of waiting at all: the shifts' nats
    only move the waits onto the grid (else the answer would play more notes)."""

    def __init__(self, codec) -> None:
        self.codec = codec
        steps = getattr(codec, "shift_steps", None)  # steps each time-shift token waits (performance codec)
        self.shifts = np.flatnonzero(codec.token_kind == KIND_SHIFT) if steps is not None else np.zeros(0, np.int64)
        self.steps = np.asarray(steps)[self.shifts].astype(np.float64) if len(self.shifts) else np.zeros(0)
        self.onsets = codec.token_kind == KIND_NOTE_ON
        self._cache: dict[tuple, np.ndarray] = {}

    def __call__(self, grid: Grid, strength: float, beat: float, beats_per_step: float) -> np.ndarray | None:
        if strength <= 0 or not len(self.shifts):
            return None
        place = round((beat - grid.phase) % 1.0, 4)
        key = (grid, round(strength, 3), place, round(beats_per_step, 6))
        bias = self._cache.get(key)
        if bias is None:
            if len(self._cache) > 256:
                self._cache.clear()
            tol = max(0.5 * beats_per_step, 1 / 96) + 1e-6
            nats = np.float32(GRID_BIAS * strength)
            bias = np.zeros(self.codec.vocab_size, np.float32)
            bias[self.shifts] = np.where(grid.distance(beat + self.steps * beats_per_step) > tol, -nats, 0)
            if grid.distance(beat) > tol:
                bias[self.onsets] = -nats
            self._cache[key] = bias
        return bias

    def logits(self, logits: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """``logits`` [..., vocab] plus ``bias``, the time shifts' total probability kept."""
        out = logits + bias
        s = self.shifts
        before, after = logits[..., s], out[..., s]
        keep = logsumexp(before) - logsumexp(after)
        out[..., s] += keep[..., None]
        return out


class CodecBiases:
    """A :class:`NoteBias` and a :class:`GridBias` for one codec, made on first use and made
    again when the codec changes (a model swap)."""

    def __init__(self) -> None:
        self._note: NoteBias | None = None
        self._grid: GridBias | None = None

    def note(self, codec) -> NoteBias:
        if self._note is None or self._note.codec is not codec:
            self._note = NoteBias(codec)
        return self._note

    def grid(self, codec) -> GridBias:
        if self._grid is None or self._grid.codec is not codec:
            self._grid = GridBias(codec)
        return self._grid


def logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis, stable; a row of only -inf gives -inf."""
    top = x.max(-1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.exp(x - safe[..., None]).sum(-1))
