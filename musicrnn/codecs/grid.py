"""The grid codec: piano-roll frames; per time step the ascending sounding pitches, then STEP.

The product of a frame's token probabilities is the probability of its binary pitch vector,
which makes NLL per frame comparable with the published piano-roll benchmarks.
``mark_restrikes`` adds HOLD(p) tokens so a re-struck note differs from a held one. Holds the
codec, its stream coders, its grammar (:class:`GridConstraints`) and its live decision unit:
the next frame. Its frames are straight (``steps_per_beat`` equal steps): a grid model cannot
play swing or triplets itself; the grid follower swings its off-beat eighths on the way out
(:meth:`musicrnn.listening.Listener.warp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from musicrnn.codecs.base import (
    BOS,
    CODEC_FORMAT_VERSION,
    KIND_HOLD,
    KIND_NOTE_ON,
    KIND_STEP,
    MAX_STEPS_PER_UNIT,
    Codec,
    Constraints,
    FrameStreamEncoder,
    NoteEvent,
    StreamDecoder,
    pitch_name,
    repeat_positions,
    token_ids,
)
from musicrnn.codecs.options import PITCH_RANGE_OPTION, CliOption, check_steps, parse_pitch_range, steps_option
from musicrnn.errors import CodecError

if TYPE_CHECKING:
    from musicrnn.sample import SamplingConfig

# the grid codec's piano roll of a chunk of files stays within this many frames (~40 MB)
_GRID_ROWS = 1 << 15


class GridCodec(Codec):
    """Piano-roll frames: per step the ascending sounding pitches, then STEP."""

    name = "grid"
    summary = "piano-roll frames"
    time_unit = "beats"
    cli_options = (
        steps_option("steps_per_beat", "4/beat", always=True),
        PITCH_RANGE_OPTION,
        CliOption("--restrike/--no-restrike", "restrike", "mark re-struck notes apart from held ones.", type=bool,
                  default=False, show_default=True, key="mark_restrikes"),
    )
    live_unit = "frame"
    has_frames = True

    def __init__(
        self,
        steps_per_beat: int = 4,
        min_pitch: int = 21,
        max_pitch: int = 108,
        mark_restrikes: bool = False,
        velocity: int = 80,
    ) -> None:
        if not (0 <= min_pitch <= max_pitch <= 127):
            raise CodecError(f"pitch range {min_pitch}-{max_pitch} must lie within 0-127")
        if not 1 <= steps_per_beat <= MAX_STEPS_PER_UNIT:
            raise CodecError(f"steps per beat must be 1-{MAX_STEPS_PER_UNIT}, not {steps_per_beat}")
        self.steps_per_beat = int(steps_per_beat)
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.mark_restrikes = bool(mark_restrikes)
        self.velocity = int(velocity)
        if not 1 <= self.velocity <= 127:
            raise CodecError(f"grid codec velocity must be 1-127, not {self.velocity}")
        p = self.num_pitches
        self.pitch0 = 1  # PITCH(p): sounding (or, with mark_restrikes, struck in this step)
        self.hold0 = self.pitch0 + p if self.mark_restrikes else -1
        self.step_token = self.pitch0 + p * (2 if self.mark_restrikes else 1)
        super().__init__()

    @property
    def vocab_size(self) -> int:
        return self.step_token + 1

    @property
    def steps_per_unit(self) -> float:
        return float(self.steps_per_beat)

    def _fill_tables(self) -> None:
        p = self.num_pitches
        pitches = np.arange(self.min_pitch, self.max_pitch + 1)
        self.token_kind[self.pitch0 : self.pitch0 + p] = KIND_NOTE_ON
        self.token_pitch[self.pitch0 : self.pitch0 + p] = pitches
        if self.mark_restrikes:
            self.token_kind[self.hold0 : self.hold0 + p] = KIND_HOLD
            self.token_pitch[self.hold0 : self.hold0 + p] = pitches
        self.token_kind[self.step_token] = KIND_STEP

    def token_name(self, token: int) -> str:
        if token == BOS:
            return "BOS"
        if token == self.step_token:
            return "STEP"
        if 0 < token < self.step_token:
            p = int(self.token_pitch[token])
            if self.token_kind[token] == KIND_HOLD:
                return f"HOLD({p} {pitch_name(p)})"
            return f"{'ON' if self.mark_restrikes else 'PITCH'}({p} {pitch_name(p)})"
        raise CodecError(f"token {token} is outside this codec's vocabulary (size {self.vocab_size})")

    def _encode_batch(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pitch, on, off, _, piece, _ = self._normalise(pitch, velocity, start, end, bounds)
        note_bounds = np.searchsorted(piece, np.arange(len(bounds)))
        has_notes = np.diff(note_bounds) > 0
        frames = np.zeros(len(bounds) - 1, np.int64)
        if has_notes.any():
            frames[has_notes] = np.maximum.reduceat(off, note_bounds[:-1][has_notes])
        parts = [np.zeros(0, np.uint16)]
        for p0, p1 in _row_groups(frames + has_notes, _GRID_ROWS):
            n0, n1 = note_bounds[p0], note_bounds[p1]
            parts.append(self._encode_rolls(pitch[n0:n1], on[n0:n1], off[n0:n1], piece[n0:n1] - p0, frames[p0:p1]))
        tokens = np.concatenate(parts)
        frame_bounds = np.concatenate([[0], np.cumsum(frames)])
        step_ends = np.concatenate([[0], np.flatnonzero(tokens == self.step_token) + 1])
        return tokens, step_ends[frame_bounds]

    def _encode_rolls(
        self, pitch: np.ndarray, on: np.ndarray, off: np.ndarray, piece: np.ndarray, frames: np.ndarray
    ) -> np.ndarray:
        """Normalised notes of consecutive pieces -> their tokens, from one piano roll of all their
        frames. Each piece has ``frames + 1`` rows of note changes (none when it has no notes);
        a piece's changes sum to zero, so one cumulative sum over all the rows gives every
        piece's roll, and its last row (all silent) is left out."""
        rows = frames + (frames > 0)
        row0 = np.concatenate([[0], np.cumsum(rows)])
        frame0 = np.concatenate([[0], np.cumsum(frames)])
        p = pitch - self.min_pitch
        delta = np.zeros((int(row0[-1]), self.num_pitches), np.int32)
        np.add.at(delta, (on + row0[piece], p), 1)
        np.add.at(delta, (off + row0[piece], p), -1)
        frame_rows = np.ones(len(delta), bool)
        frame_rows[row0[1:][frames > 0] - 1] = False
        sounding = np.cumsum(delta, axis=0)[frame_rows] > 0
        onsets = (on + frame0[piece], p) if self.mark_restrikes else None
        return self.encode_roll(sounding, onsets=onsets)

    def encode_roll(self, roll: np.ndarray, onsets: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """A boolean piano roll [frames, num_pitches] -> tokens (one frame per row).

        ``onsets`` (frame indices, pitch indices) marks struck notes when ``mark_restrikes`` is
        on; without it, a pitch is struck where it was silent in the frame before.
        """
        roll = np.asarray(roll, bool)
        if roll.ndim != 2 or roll.shape[1] != self.num_pitches:
            raise CodecError(f"piano roll must be [frames, {self.num_pitches}], got {list(roll.shape)}")
        rows, cols = np.nonzero(roll)
        ids = self.pitch0 + cols
        if self.mark_restrikes:
            if onsets is None:
                prev = np.zeros_like(roll)
                prev[1:] = roll[:-1]
                struck = roll & ~prev
            else:
                struck = np.zeros_like(roll)
                struck[onsets] = True
            ids = np.where(struck[rows, cols], ids, self.hold0 + cols)
        per_frame = roll.sum(axis=1) + 1
        ends = np.cumsum(per_frame)
        out = np.full(int(ends[-1]) if len(ends) else 0, self.step_token, np.int64)
        starts = ends - per_frame
        pos, _ = repeat_positions(starts, per_frame - 1)
        out[pos] = ids
        return out.astype(np.uint16)

    def count_frames(self, tokens: np.ndarray) -> int:
        return int(np.count_nonzero(np.asarray(tokens) == self.step_token))

    def encode_frames(self, roll: np.ndarray, frame_beats: float, lowest_pitch: int) -> np.ndarray | None:
        exact = (
            self.min_pitch == lowest_pitch
            and self.num_pitches == roll.shape[1]
            and self.steps_per_beat * frame_beats == 1.0
        )
        return self.encode_roll(roll) if exact else None

    def stream_encoder(self) -> GridStreamEncoder:
        return GridStreamEncoder(self)

    def stream_decoder(self) -> GridStreamDecoder:
        return GridStreamDecoder(self)

    def constraints(self, batch: int, cfg: SamplingConfig) -> GridConstraints:
        return GridConstraints(self, batch, cfg)

    # --- live play: the next frame --------------------------------------------------------
    def live_mask(self, mask: np.ndarray, model_notes: dict[int, float], human_notes: set[int], force_note: bool,
                  after_velocity: bool = False) -> np.ndarray:
        """The model does not strike a pitch the player holds, HOLDs only a pitch that really
        sounds, and (``force_note``) strikes rather than close the frame empty."""
        # HOLD only for a pitch that really sounds (the model's or the player's), not one the
        # player released inside the last frame: the real stream will not hold it either
        holds = self.hold0 >= 0 and mask[0, self.hold0 : self.hold0 + self.num_pitches].any()
        if not human_notes and not force_note and not holds:
            return mask  # the common case while answering: nothing to add
        m = mask.copy()
        for p in human_notes:  # the player holds it: the model does not strike it too
            m[0, self.pitch0 + p - self.min_pitch] = False
        if holds:
            sounding = model_notes.keys() | human_notes
            for i in np.flatnonzero(m[0, self.hold0 : self.hold0 + self.num_pitches]):
                if int(i) + self.min_pitch not in sounding:
                    m[0, self.hold0 + i] = False
        if force_note:
            forced = m.copy()
            forced[0, self.step_token] = False
            if forced.any():
                m = forced
        return m if m.any() else mask

    def live_max_note_steps(self, max_note_beats: float) -> int:
        """A frame codec holds a note by restating it each frame: without a limit the model may
        hold one for ever, so live play caps it at ``max_note_beats``."""
        return max(1, int(round(self.beats_to_steps(max_note_beats)))) if max_note_beats else 0

    def live_strike(self, pitch: int, sounding_before: set[int]) -> int:
        # the decoder strikes the pitch at STEP where the strike is marked or it was silent before
        return self.velocity if self.mark_restrikes or pitch not in sounding_before else 0

    # --- command line ---------------------------------------------------------------------
    @classmethod
    def from_cli(cls, values: dict[str, Any], source_steps_per_beat: int | None = None) -> GridCodec:
        lo, hi = parse_pitch_range(values["pitch_range"])
        steps = values["steps"]
        check_steps(steps, "beat")
        spb = steps or source_steps_per_beat or 4
        if spb != int(spb):
            raise CodecError(f"--steps {spb:g}: the grid codec needs a whole number of steps per beat, e.g. --steps 4")
        return cls(steps_per_beat=int(spb), min_pitch=lo, max_pitch=hi, mark_restrikes=values["restrike"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "version": CODEC_FORMAT_VERSION,
            "steps_per_beat": self.steps_per_beat,
            "min_pitch": self.min_pitch,
            "max_pitch": self.max_pitch,
            "mark_restrikes": self.mark_restrikes,
            "velocity": self.velocity,
        }


class GridStreamEncoder(FrameStreamEncoder):
    """A frame: its sounding pitches ascending (HOLD for those not struck in it, with
    ``mark_restrikes``), then STEP."""

    c: GridCodec

    def frame_tokens(self, sounding: set[int], struck: set[int]) -> list[int]:
        c = self.c
        out = [(c.hold0 if c.mark_restrikes and p not in struck else c.pitch0) + p - c.min_pitch
               for p in sorted(sounding)]
        return out + [c.step_token]


class GridStreamDecoder(StreamDecoder):
    """Collects a frame's pitches; at STEP emits the changes from the frame before, stamped at
    the frame's start. A frame left incomplete at :meth:`close` is played as if STEP came."""

    def __init__(self, codec: GridCodec) -> None:
        super().__init__(codec)
        self.frame = 0
        self._pending: dict[int, bool] = {}  # pitch -> struck in this frame

    @property
    def time(self) -> float:
        return self.frame / self.c.steps_per_beat

    def feed(self, token: int) -> list[NoteEvent]:
        c = self.c
        kind = self.kind(token)
        if kind == KIND_STEP:
            return self._end_frame()
        if kind in (KIND_NOTE_ON, KIND_HOLD):
            p = int(c.token_pitch[token])
            struck = kind == KIND_NOTE_ON and c.mark_restrikes
            self._pending[p] = self._pending.get(p, False) or struck
        return []

    def _end_frame(self) -> list[NoteEvent]:
        t = self.time
        out = [NoteEvent(t, p, 0) for p in sorted(self._sounding) if p not in self._pending or self._pending[p]]
        for p in sorted(self._pending):
            if p not in self._sounding or self._pending[p]:
                out.append(NoteEvent(t, p, self.c.velocity))
        self._sounding = set(self._pending)
        self._pending = {}
        self.frame += 1
        return out

    def close(self) -> list[NoteEvent]:
        return (self._end_frame() if self._pending else []) + self._release_all()


def _row_groups(rows: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive pieces in groups of at most ``budget`` rows (a longer piece alone), so the
    grid codec's piano roll of a chunk of files takes no more memory than that of a long piece."""
    groups: list[tuple[int, int]] = []
    p0, total = 0, 0
    for i, r in enumerate(rows.tolist()):
        if total and total + r > budget:
            groups.append((p0, i))
            p0, total = i, 0
        total += r
    if p0 < len(rows):
        groups.append((p0, len(rows)))
    return groups


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

    def step_counts(self) -> np.ndarray:
        return self.frames

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

    def update(self, tokens) -> None:
        if self.batch == 1 and isinstance(tokens, (list, tuple)):
            self._update_one(int(tokens[0]))
            return
        tokens = token_ids(tokens)
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
