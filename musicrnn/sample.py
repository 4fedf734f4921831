"""Sampling: the one function that turns logits into tokens, for compose and live play alike.

Holds:
- :class:`SamplingConfig`: temperature, top-k, top-p and the musical constraints (key/scale,
  pitch range, max polyphony, min/max note length in codec steps).
- :func:`parse_key`: ``"A:minor"`` -> allowed pitch classes.
- :class:`Constraints` (``GridConstraints``, ``PerformanceConstraints``): per-sequence state
  that masks the logits *while* sampling, so timing is never broken by post-hoc filtering.
  They also enforce the codec's grammar: grid pitches ascend within a frame; a performance
  note-off only follows its note-on.
- :class:`RowRandom`: one random stream per sequence, so piece i of a batch depends only on
  its own seed, not on how many pieces are generated with it.
- :func:`sample_next`: masked temperature/top-k/top-p sampling of one token per sequence.

Sampling and constraints run in numpy on the CPU whatever the batch: live play asks for one
row per token, where torch's per-op call overhead (a few us per op on tensors this small)
would cost more than the arithmetic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from musicrnn.codec import (
    KIND_HOLD,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_SHIFT,
    KIND_STEP,
    KIND_VELOCITY,
    Codec,
    GridCodec,
    PerformanceCodec,
)
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


def _ids(tokens: Array | list[int]) -> np.ndarray:
    return np.asarray(_np(tokens) if isinstance(tokens, torch.Tensor) else tokens, dtype=np.int64)


class Constraints:
    """Masks for a batch of sequences of one codec; ``update`` with each sampled token.

    numpy inside (a live session asks for one row per token, where torch's per-op overhead
    would dominate); :meth:`mask` gives a numpy bool array [B, vocab], :attr:`steps` a tensor.
    """

    _state: tuple[str, ...] = ()  # the arrays that change as tokens come in (copied by fork)

    def __init__(self, codec: Codec, batch: int, cfg: SamplingConfig) -> None:
        self.codec, self.batch, self.cfg = codec, batch, cfg
        self.kind = codec.token_kind.astype(np.int64)
        pitch = codec.token_pitch.astype(np.int64)
        self.pidx = np.where(pitch >= 0, pitch - codec.min_pitch, 0)
        self.allowed = cfg.allowed_pitches(codec)  # replace (never edit) to change the pitches
        self.rows = np.arange(batch)

    def mask(self) -> np.ndarray:
        raise NotImplementedError

    def update(self, tokens: Array | list[int]) -> None:
        raise NotImplementedError

    @property
    def steps(self) -> torch.Tensor:
        """Codec steps generated so far per row (frames, or time-shift steps)."""
        raise NotImplementedError

    def fork(self) -> "Constraints":
        """An independent copy (the live engine samples ahead on one)."""
        new = copy.copy(self)
        for name in self._state:
            setattr(new, name, getattr(self, name).copy())
        return new

    @staticmethod
    def for_codec(codec: Codec, batch: int, cfg: SamplingConfig) -> "Constraints":
        if isinstance(codec, GridCodec):
            return GridConstraints(codec, batch, cfg)
        if isinstance(codec, PerformanceCodec):
            return PerformanceConstraints(codec, batch, cfg)
        raise MusicRNNError(f"no sampling constraints for codec {codec.name!r}")


class GridConstraints(Constraints):
    """Grid grammar (ascending pitches, then STEP; HOLD only for a sounding pitch) plus key,
    range, polyphony and note-length limits in frames."""

    codec: GridCodec
    _state = ("last", "count", "prev", "cur", "struck", "age", "frames")

    def __init__(self, codec: GridCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        p = codec.num_pitches
        self.last = np.full(batch, -1, dtype=np.int64)
        self.count = np.zeros(batch, dtype=np.int64)
        self.prev = np.zeros((batch, p), dtype=bool)
        self.cur = np.zeros((batch, p), dtype=bool)
        self.struck = np.zeros((batch, p), dtype=bool)
        self.age = np.zeros((batch, p), dtype=np.int64)  # frames sounded so far, per note
        self.frames = np.zeros(batch, dtype=np.int64)
        self.is_on = self.kind == KIND_NOTE_ON
        self.is_pitch = self.is_on | (self.kind == KIND_HOLD)
        self.is_step = self.kind == KIND_STEP
        self.pitch_ids = np.arange(p)

    @property
    def steps(self) -> torch.Tensor:
        return torch.from_numpy(self.frames)

    def mask(self) -> np.ndarray:
        c, cfg = self.codec, self.cfg
        after_last = self.pitch_ids[None, :] > self.last[:, None]  # [B, P]
        base = after_last & (self.count < cfg.max_polyphony)[:, None] if cfg.max_polyphony else after_last
        continuing = self.prev  # a pitch token for these continues the note (no restrike marking)
        may_continue = continuing & (self.age < cfg.max_note_steps) if cfg.max_note_steps else continuing
        m = np.zeros((self.batch, c.vocab_size), dtype=bool)
        if cfg.min_note_steps:
            required = self.prev & (self.age < cfg.min_note_steps) & after_last
            # a pitch must not be skipped while a younger-than-minimum note waits below it
            lowest_req = np.where(required, self.pitch_ids[None, :], c.num_pitches).min(1)
            below_req = self.pitch_ids[None, :] <= lowest_req[:, None]
            base = base & below_req
            next_required = required & below_req  # the lowest waiting note: always allowed, even past the key
            m[:, c.step_token] = ~required.any(1)
        else:
            next_required = None
            m[:, c.step_token] = True
        if c.mark_restrikes:
            on_ok = base & self.allowed[None, :]
            hold_ok = base & may_continue
            if next_required is not None:
                hold_ok |= next_required
            m[:, c.hold0 : c.hold0 + c.num_pitches] = hold_ok
        else:
            on_ok = base & ((self.allowed[None, :] & ~continuing) | may_continue)
            if next_required is not None:
                on_ok |= next_required
        m[:, c.pitch0 : c.pitch0 + c.num_pitches] = on_ok
        return m

    def update(self, tokens: Array | list[int]) -> None:
        if self.batch == 1 and isinstance(tokens, (list, tuple)):
            self._update_one(int(tokens[0]))
            return
        tokens = _ids(tokens)
        is_pitch = self.is_pitch[tokens]
        if is_pitch.any():
            rows, pp = self.rows[is_pitch], self.pidx[tokens[is_pitch]]
            self.cur[rows, pp] = True
            self.struck[rows, pp] = self.is_on[tokens[is_pitch]] if self.codec.mark_restrikes else ~self.prev[rows, pp]
            self.last[rows] = pp
            self.count[rows] += 1
        is_step = self.is_step[tokens]
        if is_step.any():
            r = self.rows[is_step]
            cur, struck, age = self.cur[r], self.struck[r], self.age[r]
            self.age[r] = np.where(cur, np.where(struck, 1, age + 1), 0)
            self.prev[r] = cur
            self.cur[r] = False
            self.struck[r] = False
            self.last[r] = -1
            self.count[r] = 0
            self.frames[r] += 1

    def _update_one(self, tok: int) -> None:
        """:meth:`update` for one row and one token in plain Python: a live session updates
        once per model step, where a dozen numpy calls on one row cost more than the step's
        bookkeeping itself."""
        if self.is_pitch[tok]:
            p = int(self.pidx[tok])
            self.cur[0, p] = True
            self.struck[0, p] = bool(self.is_on[tok]) if self.codec.mark_restrikes else not self.prev[0, p]
            self.last[0] = p
            self.count[0] += 1
        elif self.is_step[tok]:
            cur, struck = self.cur[0], self.struck[0]
            age = self.age[0]
            age += 1
            age[struck] = 1
            age[~cur] = 0
            self.prev[0] = cur
            cur[:] = False
            struck[:] = False
            self.last[0] = -1
            self.count[0] = 0
            self.frames[0] += 1


class PerformanceConstraints(Constraints):
    """Performance grammar (note-off only for a sounding note, no double note-on) plus key,
    range, polyphony and note-length limits in time-shift steps."""

    codec: PerformanceCodec
    _state = ("sounding", "onset", "time")

    def __init__(self, codec: PerformanceCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        p = codec.num_pitches
        self.sounding = np.zeros((batch, p), dtype=bool)
        self.onset = np.zeros((batch, p), dtype=np.int64)
        self.time = np.zeros(batch, dtype=np.int64)
        self.shift_k = np.where(self.kind == KIND_SHIFT, codec.shift_steps.astype(np.int64), 0)
        self.shift_lengths = np.arange(1, codec.max_shift_steps + 1)

    @property
    def steps(self) -> torch.Tensor:
        return torch.from_numpy(self.time)

    def mask(self) -> np.ndarray:
        c, cfg = self.codec, self.cfg
        on_ok = self.allowed[None, :] & ~self.sounding
        if cfg.max_polyphony:
            on_ok &= (self.sounding.sum(1, keepdims=True) < cfg.max_polyphony)
        age = self.time[:, None] - self.onset
        off_ok = self.sounding & (age >= cfg.min_note_steps) if cfg.min_note_steps else self.sounding
        m = np.zeros((self.batch, c.vocab_size), dtype=bool)
        m[:, c.on0 : c.on0 + c.num_pitches] = on_ok
        m[:, c.off0 : c.off0 + c.num_pitches] = off_ok
        if cfg.max_note_steps:
            oldest = np.where(self.sounding, age, 0).max(1)
            longest_shift = np.maximum(cfg.max_note_steps - oldest, 0)
            m[:, c.shift0 : c.vel0] = self.shift_lengths[None, :] <= longest_shift[:, None]
        else:
            m[:, c.shift0 : c.vel0] = True
        m[:, c.vel0 :] = True
        # a row that may do nothing else may always wait
        m[~m.any(1), c.shift0] = True
        return m

    def update(self, tokens: Array | list[int]) -> None:
        tokens = _ids(tokens)
        kind = self.kind[tokens]
        p = self.pidx[tokens]
        on = kind == KIND_NOTE_ON
        if on.any():
            r = self.rows[on]
            self.sounding[r, p[on]] = True
            self.onset[r, p[on]] = self.time[r]
        off = kind == KIND_NOTE_OFF
        if off.any():
            self.sounding[self.rows[off], p[off]] = False
        self.time += self.shift_k[tokens]


__all__ = [
    "SamplingConfig",
    "parse_key",
    "sample_next",
    "Constraints",
    "GridConstraints",
    "PerformanceConstraints",
    "RowRandom",
    "KIND_VELOCITY",
]
