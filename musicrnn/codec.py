"""Codecs: the musical vocabulary, notes ⇄ token ids, in batch and one event at a time.

Holds:
- :class:`PerformanceCodec`: NOTE_ON(p), NOTE_OFF(p), TIME_SHIFT(n), VELOCITY(bin) as in
  Performance RNN. Time unit seconds (a 10 ms grid by default) or beats (1/12 beat by default,
  so triplets and 16ths are exact and the live engine can follow the DAW's tempo).
- :class:`GridCodec`: piano-roll frames; per time step the ascending sounding pitches, then
  STEP. The product of a frame's token probabilities is the probability of its binary pitch
  vector, which makes NLL per frame comparable with the published piano-roll benchmarks.
  ``mark_restrikes`` adds HOLD(p) tokens so a re-struck note differs from a held one.
- :func:`codec_from_dict`: rebuilds the exact codec stored in a checkpoint or manifest.
- :class:`NoteEvent`: what the streaming decoder emits (velocity 0 means note-off).

Token 0 is BOS (start of piece) in every codec. Notes given to ``encode`` and returned by
``decode`` have times in the codec's unit (``codec.time_unit``: "seconds" or "beats");
``encode_piece``/``decode_piece`` convert from and to :class:`~musicrnn.midi.Piece`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

from musicrnn.errors import CodecError
from musicrnn.midi import NOTE_DTYPE, Piece, beats_to_seconds_batch, piece_index

BOS = 0
CODEC_FORMAT_VERSION = 1
MAX_VOCAB = 65536  # prepared data stores tokens as uint16
# note times (in grid steps) below this let the batch encoders sort several keys packed into
# one int64: 37 hours on a 1 ms grid; longer ones (corrupt or synthetic) use np.lexsort
_PACKED_STEPS = 1 << 27
# the grid codec's piano roll of a chunk of files stays within this many frames (~40 MB)
_GRID_ROWS = 1 << 15
MAX_STEPS_PER_UNIT = 1000  # finest time grid: 1 ms (seconds unit) or 1/1000 beat (beats unit)
PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

# token kinds, shared by all codecs so samplers can build masks without knowing the codec
KIND_BOS, KIND_NOTE_ON, KIND_NOTE_OFF, KIND_SHIFT, KIND_VELOCITY, KIND_HOLD, KIND_STEP = range(7)


def pitch_name(pitch: int) -> str:
    """60 -> 'C4' (scientific pitch notation, middle C = C4)."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


class NoteEvent(NamedTuple):
    """A note-on (velocity > 0) or note-off (velocity 0) at ``time`` in the codec's unit."""

    time: float
    pitch: int
    velocity: int

    def message(self, channel: int = 0):
        """This event as a mido message."""
        import mido

        kind = "note_on" if self.velocity > 0 else "note_off"
        return mido.Message(kind, note=self.pitch, velocity=self.velocity, channel=channel)


class Codec(ABC):
    """Common interface of the codecs. Subclasses fill ``token_kind`` and ``token_pitch``."""

    name: str
    time_unit: str
    min_pitch: int
    max_pitch: int

    def __init__(self) -> None:
        if self.vocab_size > MAX_VOCAB:
            raise CodecError(f"vocabulary of {self.vocab_size} tokens is more than the {MAX_VOCAB} that token files hold")
        self.token_kind = np.zeros(self.vocab_size, np.int8)
        self.token_pitch = np.full(self.vocab_size, -1, np.int16)
        self._fill_tables()
        # a token's pitch index, for vectorised transposition; -1 where the token has no pitch
        self._pitch_index = np.where(self.token_pitch >= 0, self.token_pitch - self.min_pitch, -1)

    # --- vocabulary -------------------------------------------------------------------------
    @property
    def num_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def _fill_tables(self) -> None: ...

    @abstractmethod
    def token_name(self, token: int) -> str:
        """A readable name such as ``NOTE_ON(60 C4)`` for debugging."""

    def names(self, tokens) -> list[str]:
        return [self.token_name(int(t)) for t in tokens]

    @property
    @abstractmethod
    def steps_per_unit(self) -> float:
        """Grid steps per second (seconds unit) or per beat (beats unit)."""

    # --- batch ------------------------------------------------------------------------------
    def encode(self, notes: np.ndarray) -> np.ndarray:
        """Notes (times in the codec unit) -> uint16 token ids, without BOS."""
        notes = np.asarray(notes)
        if notes.dtype != NOTE_DTYPE:
            raise CodecError("notes must be a NOTE_DTYPE array (see musicrnn.midi.make_notes)")
        bounds = np.array([0, len(notes)])
        return self._encode_batch(notes["pitch"], notes["velocity"], notes["start"], notes["end"], bounds)[0]

    @abstractmethod
    def _encode_batch(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` on the note columns of several pieces at once (piece ``i`` is rows
        ``bounds[i]:bounds[i + 1]``): all their tokens, and the pieces' bounds in them. Each
        piece's tokens are exactly what it gives alone."""

    def decode(self, tokens) -> np.ndarray:
        """Token ids -> notes (times in the codec unit). Any token sequence decodes to valid
        notes: unmatched offs are ignored and every open note is closed at the end."""
        dec = self.stream_decoder()
        events: list[NoteEvent] = []
        for t in _token_ids(tokens):
            events.extend(dec.feed(t))
        events.extend(dec.close())
        return events_to_notes(events)

    def quantize(self, notes: np.ndarray) -> np.ndarray:
        """What ``decode(encode(notes))`` returns: the notes as this codec represents them."""
        return self.decode(self.encode(notes))

    def encode_piece(self, piece: Piece) -> np.ndarray:
        """A :class:`Piece` -> tokens (no BOS); drum notes are left out."""
        notes = piece.notes
        pitched = ~notes["is_drum"]
        pitch, velocity, start, end = (notes[k][pitched] for k in ("pitch", "velocity", "start", "end"))
        return self.encode_batch(pitch, velocity, start, end, np.array([0, len(pitch)]), [piece.tempos])[0]

    def encode_batch(
        self,
        pitch: np.ndarray,
        velocity: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        bounds: np.ndarray,
        tempo_maps: list[list[tuple[float, float]]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_piece` for several pieces at once, given as note columns (times in
        beats, no drums; no structured array to build or copy): piece ``i`` is rows
        ``bounds[i]:bounds[i + 1]`` with tempo map ``tempo_maps[i]``. Returns all the tokens and
        the pieces' bounds in them. ``prepare`` encodes a chunk of files this way, with one
        numpy call per step instead of one per file."""
        if self.time_unit == "seconds":  # one pass through the tempo maps
            start, end = beats_to_seconds_batch(tempo_maps, bounds, np.stack([start, end]))
        return self._encode_batch(pitch, velocity, start, end, bounds)

    def decode_piece(self, tokens, bpm: float = 120.0, program: int = 0) -> Piece:
        """Tokens -> a :class:`Piece` in beats at ``bpm`` (seconds-unit codecs are converted)."""
        notes = self.decode(tokens)
        if self.time_unit == "seconds":
            notes["start"] *= bpm / 60.0
            notes["end"] *= bpm / 60.0
        notes["program"] = program
        return Piece(notes, tempos=[(0.0, float(bpm))])

    # --- streaming --------------------------------------------------------------------------
    @abstractmethod
    def stream_encoder(self) -> "StreamEncoder": ...

    @abstractmethod
    def stream_decoder(self) -> "StreamDecoder": ...

    # --- augmentation -----------------------------------------------------------------------
    def transpose(self, tokens: np.ndarray, semitones: int) -> np.ndarray | None:
        """Tokens moved by ``semitones``, or None if a pitch would leave the codec's range."""
        if semitones == 0:
            return tokens
        idx = self._pitch_index[tokens]
        has = idx >= 0
        moved = idx[has] + semitones
        if moved.size and (moved.min() < 0 or moved.max() >= self.num_pitches):
            return None
        out = tokens.copy()
        out[has] = tokens[has].astype(np.int64) + semitones  # uint16 tokens cannot take a negative int
        return out

    def transpose_range(self, tokens: np.ndarray) -> tuple[int, int]:
        """The (down, up) semitone shifts that keep every pitch of ``tokens`` in range."""
        idx = self._pitch_index[tokens]
        idx = idx[idx >= 0]
        if idx.size == 0:
            return 0, 0
        return -int(idx.min()), int(self.num_pitches - 1 - idx.max())

    # --- persistence ------------------------------------------------------------------------
    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k not in ("type", "version"))
        return f"{type(self).__name__}({args})"

    # --- shared helpers ---------------------------------------------------------------------
    def _normalise(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Quantise to the grid, keep in-range pitches, make same-pitch notes not overlap.

        Returns (pitch, on_step, off_step, velocity, piece, rank) sorted by (piece, pitch,
        on_step); every note is at least one step long and ends no later than the next note of
        the same pitch in its piece starts. ``rank`` orders the notes by (piece, on_step,
        -off_step) (see :func:`_inverse_order`): nearly sorted keys sort fast.
        """
        piece = piece_index(bounds)
        keep = (
            (pitch >= self.min_pitch)
            & (pitch <= self.max_pitch)
            & np.isfinite(start)
            & np.isfinite(end)
            & (start >= 0)
        )
        if not keep.all():
            pitch, velocity, start, end, piece = pitch[keep], velocity[keep], start[keep], end[keep], piece[keep]
        res = self.steps_per_unit
        on = np.rint(start * res).astype(np.int64)  # np.round's result, without its Python wrapper
        off = np.maximum(np.rint(end * res).astype(np.int64), on + 1)
        vel = np.minimum(np.maximum(velocity.astype(np.int64), 1), 127)
        piece = piece.astype(np.int64)
        # np.lexsort's order in two stable passes, several times faster: (piece, on, -off), packed
        # in one key when it fits (notes come roughly in that order, which timsort uses), then
        # (piece, pitch) (pitch is 0..127 here: a radix sort as int16 for up to 256 pieces)
        if len(on) and on.min() >= 0 and off.max() < _PACKED_STEPS and len(bounds) <= 513:
            by_time = np.argsort((piece << 54) | (on << 27) | (_PACKED_STEPS - 1 - off), kind="stable")
        else:
            by_time = np.lexsort((-off, on, piece))
        major = (piece << 7) | pitch
        rank = np.argsort((major.astype(np.int16) if len(bounds) <= 257 else major)[by_time], kind="stable")
        order = by_time[rank]
        pitch = pitch.astype(np.int64)
        pitch, on, off, vel, piece = pitch[order], on[order], off[order], vel[order], piece[order]
        if len(pitch):
            same = (pitch[1:] == pitch[:-1]) & (piece[1:] == piece[:-1])
            first = np.ones(len(pitch), bool)
            first[1:] = ~same | (on[1:] != on[:-1])
            if not first.all():
                pitch, on, off, vel, piece, rank = pitch[first], on[first], off[first], vel[first], piece[first], rank[first]
                same = (pitch[1:] == pitch[:-1]) & (piece[1:] == piece[:-1])
            off[:-1] = np.where(same, np.minimum(off[:-1], on[1:]), off[:-1])  # a fresh array
        return pitch, on, off, vel, piece, rank


def _token_ids(tokens) -> list[int]:
    """Token ids as Python ints (the stream decoders ignore ids outside the vocabulary)."""
    try:
        return np.asarray(tokens, dtype=np.int64).ravel().tolist()
    except OverflowError:  # Python ints beyond int64: outside every vocabulary, but not an error
        return [int(t) for t in np.asarray(tokens, dtype=object).ravel()]


def _inverse_order(rank: np.ndarray) -> np.ndarray:
    """Indices that put items in the order of their ``rank`` (distinct ints, not necessarily
    0..n-1): ``np.argsort(rank)`` without a sort."""
    slot = np.full(int(rank.max()) + 1 if len(rank) else 0, -1, np.int64)
    slot[rank] = np.arange(len(rank))
    return slot[slot >= 0]


def _repeat_positions(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of ``counts`` slots starting at ``starts``: (absolute slot, index in group)."""
    total = int(counts.sum())
    group_first = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(total) - group_first
    return np.repeat(starts, counts) + within, within


def events_to_notes(events: list[NoteEvent]) -> np.ndarray:
    """Pair note-ons with note-offs (events in time order) into a note array."""
    open_notes: dict[int, tuple[float, int]] = {}
    rows: list[tuple[int, int, float, float]] = []
    for ev in events:
        if ev.velocity > 0:
            if ev.pitch in open_notes:  # a re-strike ends the sounding note first
                s, v = open_notes.pop(ev.pitch)
                if ev.time > s:
                    rows.append((ev.pitch, v, s, ev.time))
            open_notes[ev.pitch] = (ev.time, ev.velocity)
        elif ev.pitch in open_notes:
            s, v = open_notes.pop(ev.pitch)
            if ev.time > s:
                rows.append((ev.pitch, v, s, ev.time))
    out = np.zeros(len(rows), NOTE_DTYPE)
    if rows:
        arr = np.array(rows, dtype=np.float64)
        out["pitch"], out["velocity"], out["start"], out["end"] = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
    return out[np.lexsort((out["pitch"], out["start"]))]


class StreamEncoder(ABC):
    """Live events in, tokens out, one event at a time. Times are in the codec's unit and must
    not go backwards (a late event is treated as happening now)."""

    @abstractmethod
    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]: ...

    @abstractmethod
    def note_off(self, time: float, pitch: int) -> list[int]: ...

    @abstractmethod
    def advance(self, time: float) -> list[int]:
        """Tokens for time passing up to ``time`` with nothing played."""


class StreamDecoder(ABC):
    """Tokens in, note events out, one token at a time."""

    @abstractmethod
    def feed(self, token: int) -> list[NoteEvent]: ...

    @abstractmethod
    def close(self) -> list[NoteEvent]:
        """Note-offs for every sounding note at the current time."""

    @property
    @abstractmethod
    def time(self) -> float:
        """Current time in the codec's unit."""

    @property
    @abstractmethod
    def sounding(self) -> set[int]:
        """Pitches currently on."""


# ============================================================================================
# performance codec
# ============================================================================================


class PerformanceCodec(Codec):
    """NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY events (Oore et al. 2018, Performance RNN)."""

    name = "performance"

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
        by_time = _inverse_order(rank)
        base = (piece << 42) | (pitch << 7)
        off_keys = (base | (off << 15))[by_time]
        on_keys = (base | (on << 15) | (128 << 7) | self.velocity_bin(vel))[by_time]  # bins below 128
        if on.min() >= 0 and off.max() < _PACKED_STEPS and len(bounds) <= 1 << 21:
            # the keys are distinct, so sorting them packed in one int64 (with the velocity bin
            # as payload) gives np.lexsort's order, several times faster; in time order already
            # but for the offs, timsort (kind="stable") merges them in a few passes
            keys = np.sort(np.concatenate([off_keys, on_keys]), kind="stable")
            ev_piece, times = keys >> 42, (keys >> 15) & (_PACKED_STEPS - 1)
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

    def stream_encoder(self) -> "PerformanceStreamEncoder":
        return PerformanceStreamEncoder(self)

    def stream_decoder(self) -> "PerformanceStreamDecoder":
        return PerformanceStreamDecoder(self)

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
        self.c = codec
        self.step = 0
        self.velocity = codec.default_velocity
        self._sounding: set[int] = set()

    @property
    def time(self) -> float:
        return self.step / self.c.steps_per_unit

    @property
    def sounding(self) -> set[int]:
        return set(self._sounding)

    def feed(self, token: int) -> list[NoteEvent]:
        c = self.c
        kind = c.token_kind[token] if 0 <= token < c.vocab_size else -1
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
        out = [NoteEvent(self.time, p, 0) for p in sorted(self._sounding)]
        self._sounding.clear()
        return out


# ============================================================================================
# grid codec
# ============================================================================================


class GridCodec(Codec):
    """Piano-roll frames: per step the ascending sounding pitches, then STEP."""

    name = "grid"
    time_unit = "beats"

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
        pos, _ = _repeat_positions(starts, per_frame - 1)
        out[pos] = ids
        return out.astype(np.uint16)

    def stream_encoder(self) -> "GridStreamEncoder":
        return GridStreamEncoder(self)

    def stream_decoder(self) -> "GridStreamDecoder":
        return GridStreamDecoder(self)

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


class GridStreamEncoder(StreamEncoder):
    """Frame k closes (its tokens are emitted) once time rounds to step k + 1 (round half to
    even, the rounding the batch encoder uses); notes struck and released inside a step still
    sound in it."""

    def __init__(self, codec: GridCodec) -> None:
        self.c = codec
        self.frame = 0
        self._sounding: set[int] = set()
        self._touched: set[int] = set()
        self._struck: set[int] = set()

    def _frame_of(self, time: float) -> int:
        return max(self.frame, int(round(time * self.c.steps_per_beat)))

    def advance(self, time: float) -> list[int]:
        target = self._frame_of(time)
        out: list[int] = []
        c = self.c
        while self.frame < target:
            for p in sorted(self._sounding | self._touched):
                held = c.mark_restrikes and p not in self._struck
                out.append((c.hold0 if held else c.pitch0) + p - c.min_pitch)
            out.append(c.step_token)
            self._touched.clear()
            self._struck.clear()
            self.frame += 1
        return out

    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]:
        if velocity <= 0:
            return self.note_off(time, pitch)
        if not (self.c.min_pitch <= pitch <= self.c.max_pitch):
            return []
        out = self.advance(time)
        self._sounding.add(pitch)
        self._touched.add(pitch)
        self._struck.add(pitch)
        return out

    def note_off(self, time: float, pitch: int) -> list[int]:
        if pitch not in self._sounding:
            return []
        out = self.advance(time)
        self._sounding.discard(pitch)
        return out


class GridStreamDecoder(StreamDecoder):
    """Collects a frame's pitches; at STEP emits the changes from the frame before, stamped at
    the frame's start. A frame left incomplete at :meth:`close` is played as if STEP came."""

    def __init__(self, codec: GridCodec) -> None:
        self.c = codec
        self.frame = 0
        self._sounding: set[int] = set()
        self._pending: dict[int, bool] = {}  # pitch -> struck in this frame

    @property
    def time(self) -> float:
        return self.frame / self.c.steps_per_beat

    @property
    def sounding(self) -> set[int]:
        return set(self._sounding)

    def feed(self, token: int) -> list[NoteEvent]:
        c = self.c
        kind = c.token_kind[token] if 0 <= token < c.vocab_size else -1
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
        out = self._end_frame() if self._pending else []
        out += [NoteEvent(self.time, p, 0) for p in sorted(self._sounding)]
        self._sounding.clear()
        return out


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


# ============================================================================================

CODECS = {"performance": PerformanceCodec, "grid": GridCodec}


def codec_from_dict(d: dict[str, Any]) -> Codec:
    """Rebuild a codec from :meth:`Codec.to_dict` output; unknown types or versions fail clearly."""
    if not isinstance(d, dict) or "type" not in d:
        raise CodecError("codec config is missing its 'type'; the file was not written by musicrnn")
    kind = d["type"]
    if not isinstance(kind, str) or kind not in CODECS:
        raise CodecError(f"unknown codec type {kind!r}; this musicrnn knows {sorted(CODECS)}")
    version = d.get("version")
    if version != CODEC_FORMAT_VERSION:
        raise CodecError(
            f"codec format version {version} is not supported by this musicrnn (codec format "
            f"version {CODEC_FORMAT_VERSION}); re-prepare the data or upgrade musicrnn"
        )
    args = {k: v for k, v in d.items() if k not in ("type", "version")}
    try:
        return CODECS[kind](**args)
    except (TypeError, ValueError, OverflowError) as exc:  # wrong option names or value types
        raise CodecError(f"bad {kind} codec config: {' '.join(str(exc).split())[:200]}") from None


def frame_count(codec: Codec, tokens: np.ndarray) -> int:
    """Number of grid frames (STEP tokens) in ``tokens``; 0 for non-grid codecs."""
    if isinstance(codec, GridCodec):
        return int(np.count_nonzero(np.asarray(tokens) == codec.step_token))
    return 0
