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
"""

from __future__ import annotations

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


def parse_key(text: str) -> frozenset[int]:
    """``"C:major"``, ``"F#:minor"``, ``"Bb:dorian"`` -> the scale's pitch classes."""
    try:
        tonic, scale = text.split(":", 1)
        pc = NOTE_NAMES[tonic[0].upper()]
        for acc in tonic[1:]:
            pc += {"#": 1, "b": -1}[acc]
        steps = SCALES[scale.lower()]
    except (ValueError, KeyError, IndexError):
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
        if self.temperature < 0 or not np.isfinite(self.temperature):
            raise MusicRNNError(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MusicRNNError(f"top-p must be in (0, 1], not {self.top_p}")
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
    """Independent uniform streams, one per sequence, drawn in blocks for speed."""

    def __init__(self, seeds: list[int], block: int = 1024) -> None:
        self.gens = [np.random.default_rng(s) for s in seeds]
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


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, uniform: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row from ``logits`` [B, V]: mask, temperature, top-k, top-p, then the
    inverse-CDF draw with this row's ``uniform`` number in [0, 1)."""
    x = logits.float()
    if mask is not None:
        x = x.masked_fill(~mask, float("-inf"))
    if cfg.temperature == 0:
        return x.argmax(-1)
    x = x / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= cfg.top_p, 0.0)  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    cdf = torch.cumsum(probs.double(), dim=-1)
    total = cdf[:, -1:]
    target = uniform.to(cdf.device).double()[:, None] * total
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # never lands on a zero-probability token
    return idx.clamp(max=logits.shape[-1] - 1)


class Constraints:
    """Masks for a batch of sequences of one codec; ``update`` with each sampled token."""

    def __init__(self, codec: Codec, batch: int, cfg: SamplingConfig) -> None:
        self.codec, self.batch, self.cfg = codec, batch, cfg
        self.kind = torch.from_numpy(codec.token_kind.astype(np.int64))
        pitch = codec.token_pitch.astype(np.int64)
        self.pidx = torch.from_numpy(np.where(pitch >= 0, pitch - codec.min_pitch, 0))
        self.has_pitch = torch.from_numpy(pitch >= 0)
        self.allowed = torch.from_numpy(cfg.allowed_pitches(codec))
        self.rows = torch.arange(batch)

    def mask(self) -> torch.Tensor:
        raise NotImplementedError

    def update(self, tokens: torch.Tensor) -> None:
        raise NotImplementedError

    @property
    def steps(self) -> torch.Tensor:
        """Codec steps generated so far per row (frames, or time-shift steps)."""
        raise NotImplementedError

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

    def __init__(self, codec: GridCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        p = codec.num_pitches
        self.last = torch.full((batch,), -1, dtype=torch.long)
        self.count = torch.zeros(batch, dtype=torch.long)
        self.prev = torch.zeros(batch, p, dtype=torch.bool)
        self.cur = torch.zeros(batch, p, dtype=torch.bool)
        self.struck = torch.zeros(batch, p, dtype=torch.bool)
        self.age = torch.zeros(batch, p, dtype=torch.long)  # frames sounded so far, per note
        self.frames = torch.zeros(batch, dtype=torch.long)
        self.is_on = self.kind == KIND_NOTE_ON
        self.is_hold = self.kind == KIND_HOLD
        self.is_pitch = self.is_on | self.is_hold
        self.pitch_ids = torch.arange(p)

    @property
    def steps(self) -> torch.Tensor:
        return self.frames

    def mask(self) -> torch.Tensor:
        c, cfg = self.codec, self.cfg
        after_last = self.pitch_ids[None, :] > self.last[:, None]  # [B, P]
        room = (self.count < cfg.max_polyphony)[:, None] if cfg.max_polyphony else torch.ones(self.batch, 1, dtype=torch.bool)
        continuing = self.prev  # a pitch token for these continues the note (no restrike marking)
        too_long = (self.age >= cfg.max_note_steps) if cfg.max_note_steps else torch.zeros_like(self.prev)
        required = (self.prev & (self.age < cfg.min_note_steps) & after_last) if cfg.min_note_steps else torch.zeros_like(self.prev)
        # a pitch must not be skipped while a younger-than-minimum note waits below it
        big = c.num_pitches
        lowest_req = torch.where(required, self.pitch_ids[None, :], torch.full_like(self.pitch_ids[None, :], big)).min(1).values
        below_req = self.pitch_ids[None, :] <= lowest_req[:, None]
        base = after_last & below_req & room
        next_required = required & below_req  # the lowest waiting note: always allowed, even past the key
        if c.mark_restrikes:
            on_ok = base & self.allowed[None, :]
            hold_ok = (base & continuing & ~too_long) | next_required
        else:
            on_ok = base & ((self.allowed[None, :] & ~continuing) | (continuing & ~too_long))
            on_ok |= next_required
        m = torch.zeros(self.batch, c.vocab_size, dtype=torch.bool)
        m[:, c.pitch0 : c.pitch0 + c.num_pitches] = on_ok
        if c.mark_restrikes:
            m[:, c.hold0 : c.hold0 + c.num_pitches] = hold_ok
        m[:, c.step_token] = ~required.any(1)
        return m

    def update(self, tokens: torch.Tensor) -> None:
        tokens = tokens.long()
        is_step = self.kind[tokens] == KIND_STEP
        is_pitch = self.is_pitch[tokens]
        p = self.pidx[tokens]
        rows = self.rows[is_pitch]
        if len(rows):
            pp = p[is_pitch]
            self.cur[rows, pp] = True
            struck = self.is_on[tokens][is_pitch]
            if not self.codec.mark_restrikes:
                struck = ~self.prev[rows, pp]
            self.struck[rows, pp] = struck
            self.last[rows] = pp
            self.count[rows] += 1
        if is_step.any():
            r = self.rows[is_step]
            cur, struck = self.cur[r], self.struck[r]
            self.age[r] = torch.where(cur, torch.where(struck, torch.ones_like(self.age[r]), self.age[r] + 1), torch.zeros_like(self.age[r]))
            self.prev[r] = cur
            self.cur[r] = False
            self.struck[r] = False
            self.last[r] = -1
            self.count[r] = 0
            self.frames[r] += 1


class PerformanceConstraints(Constraints):
    """Performance grammar (note-off only for a sounding note, no double note-on) plus key,
    range, polyphony and note-length limits in time-shift steps."""

    codec: PerformanceCodec

    def __init__(self, codec: PerformanceCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        p = codec.num_pitches
        self.sounding = torch.zeros(batch, p, dtype=torch.bool)
        self.onset = torch.zeros(batch, p, dtype=torch.long)
        self.time = torch.zeros(batch, dtype=torch.long)
        self.shift_k = torch.from_numpy(codec.shift_steps.astype(np.int64))

    @property
    def steps(self) -> torch.Tensor:
        return self.time

    def mask(self) -> torch.Tensor:
        c, cfg = self.codec, self.cfg
        n_sound = self.sounding.sum(1, keepdim=True)
        room = (n_sound < cfg.max_polyphony) if cfg.max_polyphony else torch.ones(self.batch, 1, dtype=torch.bool)
        age = (self.time[:, None] - self.onset)
        on_ok = self.allowed[None, :] & ~self.sounding & room
        off_ok = self.sounding & ((age >= cfg.min_note_steps) if cfg.min_note_steps else True)
        m = torch.zeros(self.batch, c.vocab_size, dtype=torch.bool)
        m[:, c.on0 : c.on0 + c.num_pitches] = on_ok
        m[:, c.off0 : c.off0 + c.num_pitches] = off_ok
        if cfg.max_note_steps:
            oldest = torch.where(self.sounding, age, torch.zeros_like(age)).max(1).values
            longest_shift = (cfg.max_note_steps - oldest).clamp(min=0)
            m[:, c.shift0 : c.vel0] = torch.arange(1, c.max_shift_steps + 1)[None, :] <= longest_shift[:, None]
        else:
            m[:, c.shift0 : c.vel0] = True
        m[:, c.vel0 :] = True
        # a row that may do nothing else may always wait
        stuck = ~m.any(1)
        m[stuck, c.shift0] = True
        return m

    def update(self, tokens: torch.Tensor) -> None:
        tokens = tokens.long()
        kind = self.kind[tokens]
        p = self.pidx[tokens]
        on = kind == KIND_NOTE_ON
        off = kind == KIND_NOTE_OFF
        if on.any():
            r = self.rows[on]
            self.sounding[r, p[on]] = True
            self.onset[r, p[on]] = self.time[r]
        if off.any():
            self.sounding[self.rows[off], p[off]] = False
        shift = kind == KIND_SHIFT
        self.time += torch.where(shift, self.shift_k[tokens], torch.zeros_like(tokens))


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
