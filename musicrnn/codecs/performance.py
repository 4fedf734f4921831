"""The performance codec: NOTE_ON(p), NOTE_OFF(p), TIME_SHIFT(n), VELOCITY(bin) events as in
Performance RNN (Oore et al. 2018).

Time unit seconds (a 10 ms grid by default) or beats (1/12 beat by default, so triplets and
16ths are exact and the live engine can follow the DAW's tempo). Holds the codec, its stream
coders, its grammar (:class:`PerformanceConstraints`) and its live decision unit: the next
event (a note, or time passing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from musicrnn.codecs.base import (
    BOS,
    CODEC_FORMAT_VERSION,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_SHIFT,
    KIND_VELOCITY,
    MAX_STEPS_PER_UNIT,
    PACKED_STEPS,
    Codec,
    Constraints,
    NoteEvent,
    StreamDecoder,
    StreamEncoder,
    inverse_order,
    pitch_name,
    token_ids,
)
from musicrnn.codecs.options import PITCH_RANGE_OPTION, CliOption, check_steps, parse_pitch_range, steps_option
from musicrnn.errors import CodecError

if TYPE_CHECKING:
    from musicrnn.sample import SamplingConfig


class PerformanceCodec(Codec):
    """NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY events (Oore et al. 2018, Performance RNN)."""

    name = "performance"
    summary = "note-on/off + time-shift events"
    cli_options = (
        CliOption("--time-unit", "time_unit", "time shifts in seconds (10 ms grid) or beats (follows tempo).",
                  type=("seconds", "beats"), default="beats", show_default=True, key="time_unit", always=True),
        steps_option("steps_per_unit", "100/s or 12/beat"),
        CliOption("--max-shift", "max_shift", "longest single time shift in steps (default 1 s or 4 beats).", type=int,
                  key="max_shift_steps"),
        CliOption("--velocity-bins", "velocity_bins", "velocity levels (0 = no velocity tokens).", type=int, default=32,
                  show_default=True, key="velocity_bins"),
        PITCH_RANGE_OPTION,
    )
    live_unit = "event"
    can_stretch = True

    def __init__(
        self,
        time_unit: str = "seconds",
        steps_per_unit: float | None = None,
        max_shift_steps: int | None = None,
        velocity_bins: int = 32,
        min_pitch: int = 21,
        max_pitch: int = 108,
        default_velocity: int = 80,
    ) -> None:
        if time_unit not in ("seconds", "beats"):
            raise CodecError(f"performance codec time unit must be 'seconds' or 'beats', not {time_unit!r}")
        if not (0 <= min_pitch <= max_pitch <= 127):
            raise CodecError(f"pitch range {min_pitch}-{max_pitch} must lie within 0-127")
        if not (0 <= velocity_bins <= 127):
            raise CodecError(f"velocity bins must be 0-127 (0 = no velocity tokens), not {velocity_bins}")
        self.time_unit = time_unit
        self._steps = float(steps_per_unit or (100 if time_unit == "seconds" else 12))
        self.max_shift_steps = int(max_shift_steps or (100 if time_unit == "seconds" else 48))
        if not (0 < self._steps <= MAX_STEPS_PER_UNIT) or self.max_shift_steps < 1:  # also refuses NaN
            raise CodecError(f"steps per unit must be in (0, {MAX_STEPS_PER_UNIT}] and max shift steps positive, "
                             f"not {self._steps} and {self.max_shift_steps}")
        self.velocity_bins = int(velocity_bins)
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.default_velocity = int(default_velocity)
        if not 1 <= self.default_velocity <= 127:
            raise CodecError(f"default velocity must be 1-127, not {self.default_velocity}")
        p = self.num_pitches
        self.on0 = 1
        self.off0 = self.on0 + p
        self.shift0 = self.off0 + p  # SHIFT(k) = shift0 + k - 1, k = 1..max_shift_steps
        self.vel0 = self.shift0 + self.max_shift_steps
        super().__init__()

    @property
    def vocab_size(self) -> int:
        return self.vel0 + self.velocity_bins

    @property
    def steps_per_unit(self) -> float:
        return self._steps

    def _fill_tables(self) -> None:
        p = self.num_pitches
        self.token_kind[self.on0 : self.on0 + p] = KIND_NOTE_ON
        self.token_kind[self.off0 : self.off0 + p] = KIND_NOTE_OFF
        self.token_kind[self.shift0 : self.vel0] = KIND_SHIFT
        self.token_kind[self.vel0 :] = KIND_VELOCITY
        pitches = np.arange(self.min_pitch, self.max_pitch + 1)
        self.token_pitch[self.on0 : self.on0 + p] = pitches
        self.token_pitch[self.off0 : self.off0 + p] = pitches
        self.shift_steps = np.zeros(self.vocab_size, np.int64)
        self.shift_steps[self.shift0 : self.vel0] = np.arange(1, self.max_shift_steps + 1)

    def token_name(self, token: int) -> str:
        if token == BOS:
            return "BOS"
        if self.on0 <= token < self.off0:
            p = token - self.on0 + self.min_pitch
            return f"NOTE_ON({p} {pitch_name(p)})"
        if self.off0 <= token < self.shift0:
            p = token - self.off0 + self.min_pitch
            return f"NOTE_OFF({p} {pitch_name(p)})"
        if self.shift0 <= token < self.vel0:
            k = token - self.shift0 + 1
            if self.time_unit == "seconds":
                return f"SHIFT({k / self._steps * 1000:g}ms)"
            return f"SHIFT({k}/{self._steps:g} beat)"
        if self.vel0 <= token < self.vocab_size:
            return f"VELOCITY({self.bin_velocity(token - self.vel0)})"
        raise CodecError(f"token {token} is outside this codec's vocabulary (size {self.vocab_size})")

    def velocity_bin(self, velocity):
        return (np.asarray(velocity) * self.velocity_bins) // 128

    def bin_velocity(self, b: int) -> int:
        """The velocity a bin decodes to (its centre)."""
        # rounded, not truncated: with more than 64 bins a truncated centre can fall in the bin below
        return int(min(127, max(1, round((b + 0.5) * 128 / self.velocity_bins))))

    def _encode_batch(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pitch, on, off, vel, piece, rank = self._normalise(pitch, velocity, start, end, bounds)
        n = len(pitch)
        if n == 0:
            return np.zeros(0, np.uint16), np.zeros(len(bounds), np.int64)
        # events: sorted by piece, time, then offs before ons, then pitch
        by_time = inverse_order(rank)
        base = (piece << 42) | (pitch << 7)
        off_keys = (base | (off << 15))[by_time]
        on_keys = (base | (on << 15) | (128 << 7) | self.velocity_bin(vel))[by_time]  # bins below 128
        if on.min() >= 0 and off.max() < PACKED_STEPS and len(bounds) <= 1 << 21:
            # the keys are distinct, so sorting them packed in one int64 (with the velocity bin
            # as payload) gives np.lexsort's order, several times faster; in time order already
            # but for the offs, timsort (kind="stable") merges them in a few passes
            keys = np.sort(np.concatenate([off_keys, on_keys]), kind="stable")
            ev_piece, times = keys >> 42, (keys >> 15) & (PACKED_STEPS - 1)
        else:  # the same order by (piece, time, kind and pitch); the keys' low 15 bits (kind,
            # pitch, bin) are right even where the shifts above overflowed
            ev_piece = np.concatenate([piece[by_time], piece[by_time]])
            times = np.concatenate([off[by_time], on[by_time]])
            keys = np.concatenate([off_keys, on_keys]) & ((1 << 15) - 1)
            order = np.lexsort((keys, times, ev_piece))
            keys, ev_piece, times = keys[order], ev_piece[order], times[order]
        kind_pitch, vbin = (keys >> 7) & 255, keys & 127
        dt = times.copy()
        dt[1:] -= times[:-1]
        new_piece = np.flatnonzero(ev_piece[1:] != ev_piece[:-1]) + 1
        dt[new_piece] = times[new_piece]  # each piece starts at time 0
        full, rem = np.divmod(dt, self.max_shift_steps)
        is_on = kind_pitch >= 128
        on_at = np.flatnonzero(is_on)
        with_vel = np.zeros(2 * n, bool)  # a VELOCITY token before each on whose bin differs (or a piece's first on)
        if self.velocity_bins:
            changed = np.ones(n, bool)
            changed[1:] = (vbin[on_at[1:]] != vbin[on_at[:-1]]) | (ev_piece[on_at[1:]] != ev_piece[on_at[:-1]])
            with_vel[on_at] = changed
        # each event: SHIFT(max) x full, SHIFT(rem) if rem > 0, VELOCITY if with_vel, then the
        # NOTE_ON/NOTE_OFF itself; the array starts as SHIFT(max) and the rest is written over
        with_rem = rem > 0
        ends = np.cumsum(full + with_rem + with_vel + 1)
        tokens = np.full(int(ends[-1]), self.shift0 + self.max_shift_steps - 1, np.uint16)
        note_at = ends - 1
        tokens[note_at] = kind_pitch + np.where(is_on, self.on0 - 128 - self.min_pitch, self.off0 - self.min_pitch)
        tokens[note_at[with_vel] - 1] = self.vel0 + vbin[with_vel]
        tokens[(note_at - with_vel - 1)[with_rem]] = self.shift0 + rem[with_rem] - 1
        token_bounds = np.concatenate([[0], ends])[np.searchsorted(ev_piece, np.arange(len(bounds)))]
        return tokens, token_bounds

    def stretch(self, tokens: np.ndarray, factor: float) -> np.ndarray:
        """Time-stretch augmentation: every TIME_SHIFT scaled by ``factor`` (rounded, kept
        within 1..max_shift_steps), so the token count and alignment stay the same."""
        out = tokens.copy()
        is_shift = self.token_kind[tokens] == KIND_SHIFT
        k = self.shift_steps[tokens[is_shift]]
        k = np.clip(np.round(k * factor), 1, self.max_shift_steps).astype(np.int64)
        out[is_shift] = self.shift0 + k - 1
        return out

    def stream_encoder(self) -> PerformanceStreamEncoder:
        return PerformanceStreamEncoder(self)

    def stream_decoder(self) -> PerformanceStreamDecoder:
        return PerformanceStreamDecoder(self)

    def constraints(self, batch: int, cfg: SamplingConfig) -> PerformanceConstraints:
        return PerformanceConstraints(self, batch, cfg)

    # --- live play: the next event --------------------------------------------------------
    @property
    def longest_wait(self) -> float:
        return self.max_shift_steps / self.steps_per_unit

    def live_mask(self, mask: np.ndarray, model_notes: dict[int, float], human_notes: set[int], force_note: bool,
                  after_velocity: bool = False) -> np.ndarray:
        """The model ends only its own notes, sets a velocity only once before a note, and
        (``force_note``) plays a note now rather than end one or wait."""
        m = mask.copy()
        own = np.zeros(self.num_pitches, dtype=bool)
        for p in model_notes:
            own[p - self.min_pitch] = True
        m[0, self.off0 : self.off0 + self.num_pitches] &= own  # the model ends only its own notes
        if after_velocity:
            m[0, self.vel0 :] = False
        if force_note:
            forced = m.copy()
            forced[0, self.off0 : self.vel0] = False  # no note-off, no time shift: a note now
            if forced[0, self.on0 : self.off0].any():
                m = forced
        return m if m.any() else mask

    # --- command line ---------------------------------------------------------------------
    @classmethod
    def from_cli(cls, values: dict[str, Any], source_steps_per_beat: int | None = None) -> PerformanceCodec:
        lo, hi = parse_pitch_range(values["pitch_range"])
        time_unit, steps = values["time_unit"], values["steps"]
        check_steps(steps, "beat" if time_unit == "beats" else "second")
        return cls(time_unit=time_unit, steps_per_unit=steps, max_shift_steps=values["max_shift"],
                   velocity_bins=values["velocity_bins"], min_pitch=lo, max_pitch=hi)

    def cli_reference(self) -> PerformanceCodec:
        return PerformanceCodec(time_unit=self.time_unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "version": CODEC_FORMAT_VERSION,
            "time_unit": self.time_unit,
            "steps_per_unit": self._steps,
            "max_shift_steps": self.max_shift_steps,
            "velocity_bins": self.velocity_bins,
            "min_pitch": self.min_pitch,
            "max_pitch": self.max_pitch,
            "default_velocity": self.default_velocity,
        }


class PerformanceStreamEncoder(StreamEncoder):
    def __init__(self, codec: PerformanceCodec) -> None:
        self.c = codec
        self.step = 0
        self.vbin: int | None = None
        self.on_step: dict[int, int] = {}

    def _shift_to(self, time: float) -> list[int]:
        target = max(self.step, int(round(time * self.c.steps_per_unit)))
        out: list[int] = []
        dt = target - self.step
        while dt > 0:
            k = min(dt, self.c.max_shift_steps)
            out.append(self.c.shift0 + k - 1)
            dt -= k
        self.step = target
        return out

    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]:
        c = self.c
        if not (c.min_pitch <= pitch <= c.max_pitch) or velocity <= 0:
            return [] if velocity > 0 else self.note_off(time, pitch)
        out = self._shift_to(time)
        if pitch in self.on_step:  # re-strike: close the sounding note first (at least 1 step)
            out += self.note_off(time, pitch)
        if c.velocity_bins:
            b = int(c.velocity_bin(min(velocity, 127)))  # as batch encode clips; keeps the token in range
            if b != self.vbin:
                out.append(c.vel0 + b)
                self.vbin = b
        out.append(c.on0 + pitch - c.min_pitch)
        self.on_step[pitch] = self.step
        return out

    def note_off(self, time: float, pitch: int) -> list[int]:
        if pitch not in self.on_step:
            return []
        out = self._shift_to(time)
        if self.on_step.pop(pitch) == self.step:  # every note lasts at least one step
            out += self._shift_to((self.step + 1) / self.c.steps_per_unit)
        out.append(self.c.off0 + pitch - self.c.min_pitch)
        return out

    def advance(self, time: float) -> list[int]:
        return self._shift_to(time)


class PerformanceStreamDecoder(StreamDecoder):
    def __init__(self, codec: PerformanceCodec) -> None:
        super().__init__(codec)
        self.step = 0
        self.velocity = codec.default_velocity

    @property
    def time(self) -> float:
        return self.step / self.c.steps_per_unit

    def feed(self, token: int) -> list[NoteEvent]:
        c = self.c
        kind = self.kind(token)
        if kind == KIND_SHIFT:
            self.step += int(c.shift_steps[token])
        elif kind == KIND_VELOCITY:
            self.velocity = c.bin_velocity(token - c.vel0)
        elif kind == KIND_NOTE_ON:
            p = int(c.token_pitch[token])
            out = [NoteEvent(self.time, p, 0)] if p in self._sounding else []
            self._sounding.add(p)
            return out + [NoteEvent(self.time, p, self.velocity)]
        elif kind == KIND_NOTE_OFF:
            p = int(c.token_pitch[token])
            if p in self._sounding:  # a note-off without its note-on is never emitted
                self._sounding.discard(p)
                return [NoteEvent(self.time, p, 0)]
        return []

    def close(self) -> list[NoteEvent]:
        return self._release_all()


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

    def step_counts(self) -> np.ndarray:
        return self.time

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
        m[:, c.vel0 :] = True
        if cfg.max_note_steps:
            oldest = np.where(self.sounding, age, 0).max(1)
            longest_shift = np.maximum(cfg.max_note_steps - oldest, 0)
            m[:, c.shift0 : c.vel0] = self.shift_lengths[None, :] <= longest_shift[:, None]
            # a note at its longest must end now, before anything else: with only the waits
            # masked, a model unsure how to end it struck note after note (time cannot pass),
            # and every piece that met the cap became a cluster of dozens of held notes
            due = self.sounding & (age >= cfg.max_note_steps)
            overdue = due.any(1)
            if overdue.any():
                m[overdue] = False
                m[overdue, c.off0 : c.off0 + c.num_pitches] = due[overdue]
        else:
            m[:, c.shift0 : c.vel0] = True
        # a row that may do nothing else may always wait
        m[~m.any(1), c.shift0] = True
        return m

    def update(self, tokens) -> None:
        tokens = token_ids(tokens)
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
