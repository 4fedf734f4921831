"""Sampling: the one function that turns logits into tokens, for compose and live play alike.

Holds:
- :class:`SamplingConfig`: temperature, top-k, top-p and the musical constraints (key/scale,
  pitch range, max polyphony, min/max note length in codec steps).
- :func:`parse_key`: ``"A:minor"`` -> allowed pitch classes.
- :class:`Constraints`: per-sequence state that masks the logits *while* sampling, so timing
  is never broken by post-hoc filtering; ``Constraints.for_codec`` asks the codec for its
  grammar (each codec's constraints live in its file in :mod:`musicrnn.codecs`).
- :class:`RowRandom`: one random stream per sequence, so piece i of a batch depends only on
  its own seed, not on how many pieces are generated with it.
- :func:`sample_next`: masked temperature/top-k/top-p sampling of one token per sequence.

Sampling and constraints run in numpy on the CPU whatever the batch: live play asks for one
row per token, where torch's per-op call overhead (a few us per op on tensors this small)
would cost more than the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from musicrnn.codecs.base import KIND_VELOCITY, Codec, Constraints
from musicrnn.errors import MusicRNNError
from musicrnn.limits import TEMPERATURE, TOP_P
from musicrnn.tonality import MODE_ALIASES, SCALES, parse_tonic


def parse_key(text: str) -> frozenset[int]:
    """``"C:major"``, ``"F#:minor"``, ``"Bb:dorian"``, ``"Gb:maj"`` -> the scale's pitch classes
    (names and scales: :mod:`musicrnn.tonality`)."""
    try:
        tonic, scale = text.split(":", 1)
        pc = parse_tonic(tonic)
        steps = SCALES[MODE_ALIASES.get(scale.lower(), scale.lower())]
    except (ValueError, KeyError, MusicRNNError):
        raise MusicRNNError(
            f"key {text!r} not understood; write TONIC:SCALE, e.g. C:major, A:minor, F#:dorian "
            f"(scales: {', '.join(SCALES)})"
        ) from None
    return frozenset((pc + s) % 12 for s in steps)


@dataclass
class SamplingConfig:
    temperature: float = 1.0  # 1.0 = the model's own distribution; < 1 safer, > 1 wilder; 0 = greedy
    top_k: int = 0  # keep only the k most likely tokens (0 = off)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p (1.0 = off)
    key: frozenset[int] | None = None  # allowed pitch classes for new notes (None = all)
    pitch_range: tuple[int, int] | None = None  # lowest, highest MIDI pitch for new notes
    max_polyphony: int = 0  # most notes sounding at once (0 = no limit)
    min_note_steps: int = 0  # shortest note, in codec steps (0 = no limit)
    max_note_steps: int = 0  # longest note, in codec steps (0 = no limit)

    def validate(self, codec: Codec) -> None:
        TEMPERATURE.check(self.temperature, "temperature")
        TOP_P.check(self.top_p, "top-p")
        if self.top_k < 0:
            raise MusicRNNError(f"top-k must be >= 0, not {self.top_k}")
        if self.min_note_steps and self.max_note_steps and self.min_note_steps > self.max_note_steps:
            raise MusicRNNError("minimum note length is longer than the maximum note length")
        if not self.allowed_pitches(codec).any():
            lo, hi = self.pitch_range or (codec.min_pitch, codec.max_pitch)
            raise MusicRNNError(
                f"no pitch satisfies the constraints: range {lo}-{hi} within the model's "
                f"{codec.min_pitch}-{codec.max_pitch} has no note of the chosen key; widen --pitch-range or change --key"
            )

    def allowed_pitches(self, codec: Codec) -> np.ndarray:
        """Boolean over the codec's pitch indices: may a new note use this pitch?"""
        pitches = np.arange(codec.min_pitch, codec.max_pitch + 1)
        ok = np.ones(len(pitches), bool)
        if self.pitch_range:
            ok &= (pitches >= self.pitch_range[0]) & (pitches <= self.pitch_range[1])
        if self.key is not None:
            ok &= np.isin(pitches % 12, list(self.key))
        return ok


class RowRandom:
    """Independent uniform streams, one per sequence, drawn in blocks for speed.

    A seed may be a tuple such as ``(seed, row)``: numpy's SeedSequence mixes its parts, so
    ``(1, 1)`` and ``(2, 0)`` are unrelated streams (``seed + row`` would make piece 2 of seed 1
    piece 1 of seed 2)."""

    def __init__(self, seeds: list[int] | list[tuple[int, ...]], block: int = 1024) -> None:
        self.gens = [np.random.default_rng(list(s) if isinstance(s, tuple) else s) for s in seeds]
        self.block = block
        self.buf = np.stack([g.random(block) for g in self.gens])
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos >= self.block:
            self.buf = np.stack([g.random(self.block) for g in self.gens])
            self.pos = 0
        u = self.buf[:, self.pos]
        self.pos += 1
        return torch.from_numpy(u)


Array = torch.Tensor | np.ndarray


def _np(a: Array) -> np.ndarray:
    """A tensor's data as numpy (no copy for a CPU tensor; numpy arrays pass through)."""
    return a.numpy(force=True) if isinstance(a, torch.Tensor) else np.asarray(a)


def sample_next(logits: Array, cfg: SamplingConfig, uniform: Array, mask: Array | None = None) -> torch.Tensor:
    """One token per row from ``logits`` [B, V]: mask, temperature, top-k, top-p, then the
    inverse-CDF draw with this row's ``uniform`` number in [0, 1). Each row must allow at
    least one token (:class:`Constraints` masks always do).

    numpy in float64 on the CPU, for every batch size: for one row (live play) a torch op's
    call overhead would cost more than its arithmetic, and one code path for all batch sizes
    keeps row i's result independent of how many rows are sampled with it.
    """
    x32 = _np(logits)
    x = x32.astype(np.float64) if mask is None else np.where(_np(mask), x32, np.float64(-np.inf))
    if cfg.temperature == 0:
        return torch.from_numpy(x.argmax(-1))
    x /= cfg.temperature
    v = x.shape[-1]
    if cfg.top_k and cfg.top_k < v:
        kth = np.partition(x, v - cfg.top_k, axis=-1)[:, v - cfg.top_k, None]
        x[x < kth] = -np.inf
    x -= x.max(-1, keepdims=True)
    p = np.exp(x, out=x)  # unnormalised probabilities; 0 where masked
    if cfg.top_p < 1.0:  # the likeliest tokens until their mass reaches top_p (all of a tie at the edge)
        sorted_p = -np.sort(-p, axis=-1)
        before = np.add.accumulate(sorted_p, -1) - sorted_p
        kept = (before < cfg.top_p * p.sum(-1, keepdims=True)).sum(-1)  # >= 1: the top token always stays
        p[p < sorted_p[np.arange(len(p)), kept - 1][:, None]] = 0.0
    cdf = np.add.accumulate(p, -1)
    target = np.asarray(_np(uniform), dtype=np.float64)[:, None] * cdf[:, -1:]
    idx = (cdf <= target).sum(-1)  # searchsorted(right=True): never lands on a zero-probability token
    return torch.from_numpy(np.minimum(idx, v - 1))


__all__ = [
    "SamplingConfig",
    "parse_key",
    "sample_next",
    "Constraints",
    "RowRandom",
    "KIND_VELOCITY",
]
