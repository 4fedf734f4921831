"""The accompany codec: a melody and its accompaniment in one sequence of grid frames, so a model
predicts its part (the accompaniment) from everything heard so far, the current frame's melody
included.

Per frame (``steps_per_beat`` frames a beat), in this order::

    M_ON(p) | M_HOLD(p) ...   the melody's sounding pitches, ascending (ON: struck in this frame)
    ACC                       the role separator, in every frame
    VEL(b)                    only when the accompaniment strikes a note here: the bin of the
                              mean velocity of its onsets (``velocity_bins`` bins over 0-127)
    A_ON(p) | A_HOLD(p) ...   the accompaniment's sounding pitches, ascending
    STEP                      the frame ends

Roles: a note's role is its index in :attr:`AccompanyCodec.roles` (0 melody, 1 accompaniment).
``encode`` reads it from the notes' ``track`` column; ``decode`` writes it there;
``data prepare --roles`` gives it from the tracks' names (see :mod:`musicrnn.ingest`).

The per-frame API, for offline accompaniment and live play (both feed the melody part of a
frame and sample the rest until STEP, with :class:`AccompanyConstraints` masking):

- :meth:`AccompanyCodec.melody_frame_tokens` ``(sounding, struck)``: one frame's melody part
  and its ACC, from the melody pitches sounding in the frame and those struck in it.
- :meth:`AccompanyCodec.melody_frames` ``(notes)``: every frame's melody part (notes in beats).
- :meth:`AccompanyStreamEncoder.melody_frame`: the same from live note-ons and note-offs (the
  frame now ending, then the next).
- :meth:`AccompanyCodec.decode_roles` ``(tokens)``: notes per role; ``stream_decoder(roles=(1,))``
  emits the accompaniment's note events alone, frame by frame.

Kept as one file: a codec is one file plus its registry line (docs/architecture.md), and its
vocabulary, stream coders and grammar read the same token layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from musicrnn.codecs.base import (
    BOS,
    CODEC_FORMAT_VERSION,
    KIND_HOLD,
    KIND_NOTE_ON,
    KIND_ROLE,
    KIND_STEP,
    KIND_VELOCITY,
    MAX_STEPS_PER_UNIT,
    Codec,
    Constraints,
    FrameStreamEncoder,
    NoteEvent,
    StreamDecoder,
    _token_ids,
    events_to_notes,
    pitch_name,
    token_ids,
)
from musicrnn.codecs.options import PITCH_RANGE_OPTION, check_steps, parse_pitch_range, steps_option
from musicrnn.errors import CodecError
from musicrnn.notes import NOTE_DTYPE

if TYPE_CHECKING:
    from musicrnn.sample import SamplingConfig

MELODY, ACCOMPANIMENT = 0, 1  # role indices
# a piece longer than this many frames is not encoded (a piano roll of it would not fit in memory)
_MAX_FRAMES = 1 << 22


class AccompanyCodec(Codec):
    """Grid frames of a melody, a role separator, then the accompaniment (with velocity), then STEP."""

    name = "accompany"
    summary = "grid frames of a melody, then its accompaniment (needs --roles)"
    time_unit = "beats"
    roles = ("melody", "accompaniment")
    cli_options = (steps_option("steps_per_beat", "4/beat", always=True), PITCH_RANGE_OPTION)
    has_frames = True

    def __init__(self, steps_per_beat: int = 4, min_pitch: int = 21, max_pitch: int = 108, velocity_bins: int = 16,
                 velocity: int = 80) -> None:
        if not (0 <= min_pitch <= max_pitch <= 127):
            raise CodecError(f"pitch range {min_pitch}-{max_pitch} must lie within 0-127")
        if not 1 <= steps_per_beat <= MAX_STEPS_PER_UNIT:
            raise CodecError(f"steps per beat must be 1-{MAX_STEPS_PER_UNIT}, not {steps_per_beat}")
        if not 1 <= velocity_bins <= 128:
            raise CodecError(f"velocity bins must be 1-128, not {velocity_bins}")
        if not 1 <= velocity <= 127:
            raise CodecError(f"accompany codec velocity must be 1-127, not {velocity}")
        self.steps_per_beat = int(steps_per_beat)
        self.min_pitch, self.max_pitch = int(min_pitch), int(max_pitch)
        self.velocity_bins, self.velocity = int(velocity_bins), int(velocity)
        p = self.num_pitches
        self.m_on0 = 1
        self.m_hold0 = self.m_on0 + p
        self.acc_token = self.m_hold0 + p
        self.vel0 = self.acc_token + 1
        self.a_on0 = self.vel0 + self.velocity_bins
        self.a_hold0 = self.a_on0 + p
        self.step_token = self.a_hold0 + p
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
        for first, kind in ((self.m_on0, KIND_NOTE_ON), (self.m_hold0, KIND_HOLD), (self.a_on0, KIND_NOTE_ON),
                            (self.a_hold0, KIND_HOLD)):
            self.token_kind[first : first + p] = kind
            self.token_pitch[first : first + p] = pitches
        self.token_kind[self.acc_token] = KIND_ROLE
        self.token_kind[self.vel0 : self.a_on0] = KIND_VELOCITY
        self.token_kind[self.step_token] = KIND_STEP
        # each token's role: 0 melody, 1 accompaniment (VEL too), -1 for BOS, ACC and STEP
        self.token_role = np.full(self.vocab_size, -1, np.int8)
        self.token_role[self.m_on0 : self.acc_token] = MELODY
        self.token_role[self.vel0 : self.step_token] = ACCOMPANIMENT

    def token_name(self, token: int) -> str:
        if token == BOS:
            return "BOS"
        if token == self.acc_token:
            return "ACC"
        if token == self.step_token:
            return "STEP"
        if self.vel0 <= token < self.a_on0:
            return f"VEL({token - self.vel0})"
        if 0 < token < self.step_token:
            p = int(self.token_pitch[token])
            role = "M" if self.token_role[token] == MELODY else "A"
            what = "ON" if self.token_kind[token] == KIND_NOTE_ON else "HOLD"
            return f"{role}_{what}({p} {pitch_name(p)})"
        raise CodecError(f"token {token} is outside this codec's vocabulary (size {self.vocab_size})")

    # --- velocity bins ----------------------------------------------------------------------
    def velocity_bin(self, velocity: np.ndarray | int) -> np.ndarray:
        """The bin of a velocity (0-127 in ``velocity_bins`` equal bins)."""
        return np.minimum(np.asarray(velocity, np.int64) * self.velocity_bins // 128, self.velocity_bins - 1)

    def bin_velocity(self, b: int) -> int:
        """The velocity a bin plays: its middle (at least 1)."""
        return max(1, min(127, int((2 * b + 1) * 128 // (2 * self.velocity_bins))))

    # --- batch ------------------------------------------------------------------------------
    def encode(self, notes: np.ndarray) -> np.ndarray:
        """Notes (beats) -> tokens; a note's role is its ``track`` (0 melody, 1 accompaniment)."""
        notes = np.asarray(notes)
        if notes.dtype != NOTE_DTYPE:
            raise CodecError("notes must be a NOTE_DTYPE array (see musicrnn.notes.make_notes)")
        bounds = np.array([0, len(notes)])
        return self._encode_batch(notes["pitch"], notes["velocity"], notes["start"], notes["end"], bounds,
                                  roles=notes["track"])[0]

    def _encode_batch(self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray,
                      bounds: np.ndarray, roles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Without ``roles`` every note is melody (a piece given without its parts)."""
        if roles is None:
            roles = np.zeros(len(pitch), np.int64)
        roles = np.asarray(roles)
        parts, ends = [np.zeros(0, np.uint16)], [0]
        for i in range(len(bounds) - 1):
            rows = slice(int(bounds[i]), int(bounds[i + 1]))
            toks = self._encode_piece_notes(pitch[rows], velocity[rows], start[rows], end[rows], roles[rows])
            parts.append(toks)
            ends.append(ends[-1] + len(toks))
        return np.concatenate(parts), np.array(ends, np.int64)

    def _role_roll(self, pitch, velocity, start, end, frames: int | None = None):
        """One role's notes -> (sounding [F, P], struck [F, P], velocity sum and onset count per
        frame), F = its last note's end step unless ``frames`` is given."""
        pitch, on, off, vel, _, _ = self._normalise(pitch, velocity, start, end, np.array([0, len(pitch)]))
        f = int(off.max()) if frames is None and len(off) else (frames or 0)
        p = pitch - self.min_pitch
        delta = np.zeros((f + 1, self.num_pitches), np.int32)
        keep = on < f
        np.add.at(delta, (on[keep], p[keep]), 1)
        np.add.at(delta, (np.minimum(off[keep], f), p[keep]), -1)
        sounding = np.cumsum(delta[:f], axis=0) > 0
        struck = np.zeros_like(sounding)
        struck[on[keep], p[keep]] = True
        vel_sum = np.bincount(on[keep], weights=vel[keep], minlength=f)[:f].astype(np.int64)
        count = np.bincount(on[keep], minlength=f)[:f]
        return sounding, struck, vel_sum, count

    def _frame_count(self, pitch, start, end) -> int:
        """Frames of a piece: up to its last note's end step (as :meth:`_normalise` rounds it)."""
        keep = (pitch >= self.min_pitch) & (pitch <= self.max_pitch) & np.isfinite(start) & np.isfinite(end) & (start >= 0)
        if not keep.any():
            return 0
        on = np.rint(start[keep] * self.steps_per_beat).astype(np.int64)
        off = np.maximum(np.rint(end[keep] * self.steps_per_beat).astype(np.int64), on + 1)
        return int(off.max())

    def _encode_piece_notes(self, pitch, velocity, start, end, roles) -> np.ndarray:
        """One piece's notes (with roles) -> its tokens."""
        frames = self._frame_count(pitch, start, end)
        if frames == 0:
            return np.zeros(0, np.uint16)
        if frames > _MAX_FRAMES:
            raise CodecError(f"a piece of {frames} frames is longer than the {_MAX_FRAMES} the accompany codec encodes")
        m = roles == MELODY
        a = roles == ACCOMPANIMENT
        m_snd, m_str, _, _ = self._role_roll(pitch[m], velocity[m], start[m], end[m], frames)
        a_snd, a_str, vsum, vcount = self._role_roll(pitch[a], velocity[a], start[a], end[a], frames)
        return self._frames_to_tokens(m_snd, m_str, a_snd, a_str, vsum, vcount)

    def _frames_to_tokens(self, m_snd, m_str, a_snd, a_str, vsum, vcount) -> np.ndarray:
        """Rolls of both roles -> tokens, frame by frame, in the order the module docstring gives."""
        p = self.num_pitches
        width = 2 * p + 3  # slots in a frame: melody pitches, ACC, VEL, accompaniment pitches, STEP
        f = len(m_snd)
        frame = np.arange(f, dtype=np.int64)
        mr, mc = np.nonzero(m_snd)
        ar, ac = np.nonzero(a_snd)
        has_vel = vcount > 0
        vf = frame[has_vel]
        vbin = self.velocity_bin(vsum[has_vel] // vcount[has_vel])
        keys = np.concatenate([mr * width + mc, frame * width + p, vf * width + p + 1, ar * width + p + 2 + ac,
                               frame * width + 2 * p + 2])
        toks = np.concatenate([
            np.where(m_str[mr, mc], self.m_on0, self.m_hold0) + mc,
            np.full(f, self.acc_token, np.int64),
            self.vel0 + vbin,
            np.where(a_str[ar, ac], self.a_on0, self.a_hold0) + ac,
            np.full(f, self.step_token, np.int64),
        ])
        return toks[np.argsort(keys, kind="stable")].astype(np.uint16)

    def decode(self, tokens) -> np.ndarray:
        """Token ids -> the notes of both roles (``track``: 0 melody, 1 accompaniment), by start."""
        parts = self.decode_roles(tokens)
        notes = np.concatenate([parts[r] for r in self.roles])
        return notes[np.lexsort((notes["track"], notes["pitch"], notes["start"]))]

    def decode_roles(self, tokens) -> dict[str, np.ndarray]:
        """Token ids -> notes per role name (each with ``track`` = its role index)."""
        dec = AccompanyStreamDecoder(self, record=True)
        for t in _token_ids(tokens):
            dec.feed(t)
        dec.close()
        out = {}
        for i, role in enumerate(self.roles):
            notes = events_to_notes(dec.recorded[i])
            notes["track"] = i
            out[role] = notes
        return out

    def count_frames(self, tokens: np.ndarray) -> int:
        return int(np.count_nonzero(np.asarray(tokens) == self.step_token))

    # --- the melody part of frames -----------------------------------------------------------
    def melody_frame_tokens(self, sounding: Iterable[int], struck: Iterable[int]) -> list[int]:
        """One frame's melody part and its ACC: the ``sounding`` melody pitches ascending, as
        M_ON where in ``struck`` (struck in this frame) else M_HOLD; pitches out of range are
        left out. What a model of this codec is fed before it samples its part of the frame."""
        hit = set(struck)
        out = [(self.m_on0 if q in hit else self.m_hold0) + q - self.min_pitch
               for q in sorted(set(sounding) | hit) if self.min_pitch <= q <= self.max_pitch]
        return out + [self.acc_token]

    def melody_frames(self, notes: np.ndarray) -> list[np.ndarray]:
        """Every frame's melody part (ending with ACC) of ``notes`` (beats; all of them melody),
        up to the last note's end: what compose feeds, frame by frame."""
        melody = np.array(notes, NOTE_DTYPE, copy=True)
        melody["track"] = MELODY
        toks = self.encode(melody).astype(np.int64)
        ends = np.flatnonzero(toks == self.step_token)
        starts = np.concatenate([[0], ends[:-1] + 1])
        return [toks[s:e] for s, e in zip(starts.tolist(), ends.tolist())]

    # --- streaming --------------------------------------------------------------------------
    def stream_encoder(self) -> AccompanyStreamEncoder:
        return AccompanyStreamEncoder(self)

    def stream_decoder(self, roles: tuple[int, ...] = (MELODY, ACCOMPANIMENT)) -> AccompanyStreamDecoder:
        """A decoder emitting the note events of ``roles`` (indices; ``(1,)``: the accompaniment)."""
        return AccompanyStreamDecoder(self, roles)

    def constraints(self, batch: int, cfg: SamplingConfig) -> AccompanyConstraints:
        return AccompanyConstraints(self, batch, cfg)

    def live_max_note_steps(self, max_note_beats: float) -> int:
        """The accompaniment holds a note by restating it each frame: live play (accompany
        mode, :mod:`musicrnn.live.accompany`) caps it at ``max_note_beats``."""
        return max(1, int(round(self.beats_to_steps(max_note_beats)))) if max_note_beats else 0

    # --- command line ---------------------------------------------------------------------
    @classmethod
    def from_cli(cls, values: dict[str, Any], source_steps_per_beat: int | None = None) -> AccompanyCodec:
        lo, hi = parse_pitch_range(values["pitch_range"])
        steps = values["steps"]
        check_steps(steps, "beat")
        spb = steps or source_steps_per_beat or 4
        if spb != int(spb):
            raise CodecError(f"--steps {spb:g}: the accompany codec needs a whole number of steps per beat, e.g. --steps 4")
        return cls(steps_per_beat=int(spb), min_pitch=lo, max_pitch=hi)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "version": CODEC_FORMAT_VERSION, "steps_per_beat": self.steps_per_beat,
                "min_pitch": self.min_pitch, "max_pitch": self.max_pitch, "velocity_bins": self.velocity_bins,
                "velocity": self.velocity}


class AccompanyStreamEncoder(FrameStreamEncoder):
    """The melody's live note-ons and note-offs -> its frames (see :class:`FrameStreamEncoder`).

    Live play feeds :meth:`melody_frame` (the ending frame's melody part and ACC), then samples
    the accompaniment and the STEP itself; :meth:`advance` gives whole frames with no
    accompaniment (melody, ACC, STEP), for time that passed without the model."""

    c: AccompanyCodec

    def frame_tokens(self, sounding: set[int], struck: set[int]) -> list[int]:
        return self.c.melody_frame_tokens(sounding, struck) + [self.c.step_token]

    def melody_frame(self) -> list[int]:
        """The melody part (and ACC) of the frame now ending; the next frame begins."""
        return self.close_frame(self.c.melody_frame_tokens)


class _Voice:
    """One role's notes while decoding: what sounds, and the pitches of the frame being read."""

    def __init__(self) -> None:
        self.sounding: set[int] = set()
        self.pending: dict[int, bool] = {}  # pitch -> struck in this frame

    def copy(self) -> _Voice:
        new = _Voice()
        new.sounding, new.pending = set(self.sounding), dict(self.pending)
        return new

    def end_frame(self, time: float, velocity: int) -> list[NoteEvent]:
        """The frame's changes: offs (ended or re-struck notes), then ons, at ``time``."""
        out = [NoteEvent(time, p, 0) for p in sorted(self.sounding) if p not in self.pending or self.pending[p]]
        out += [NoteEvent(time, p, velocity) for p in sorted(self.pending) if p not in self.sounding or self.pending[p]]
        self.sounding = set(self.pending)
        self.pending = {}
        return out


class AccompanyStreamDecoder(StreamDecoder):
    """Collects a frame's pitches per role; at STEP emits the changes of the chosen roles
    (offs then ons, melody first) stamped at the frame's start. A token counts for its role
    wherever it comes; an onset without a VEL in its frame plays the last velocity read."""

    def __init__(self, codec: AccompanyCodec, roles: tuple[int, ...] = (MELODY, ACCOMPANIMENT),
                 record: bool = False) -> None:
        self.c = codec
        self.roles = tuple(roles)
        self.frame = 0
        self.voices = (_Voice(), _Voice())
        self.acc_velocity = codec.velocity
        self.recorded: tuple[list[NoteEvent], list[NoteEvent]] | None = ([], []) if record else None

    def __copy__(self) -> AccompanyStreamDecoder:
        """A copy that shares no voice (the live engine samples ahead on copies of its decoder)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.voices = tuple(_Voice.copy(v) for v in self.voices)
        if self.recorded is not None:
            new.recorded = tuple(list(r) for r in self.recorded)
        return new

    @property
    def time(self) -> float:
        return self.frame / self.c.steps_per_beat

    @property
    def sounding(self) -> set[int]:
        return set().union(*(self.voices[r].sounding for r in self.roles))

    def feed(self, token: int) -> list[NoteEvent]:
        c = self.c
        if not 0 <= token < c.vocab_size:
            return []
        kind = c.token_kind[token]
        if kind == KIND_STEP:
            return self._end_frame()
        if kind == KIND_VELOCITY:
            self.acc_velocity = c.bin_velocity(token - c.vel0)
        elif kind in (KIND_NOTE_ON, KIND_HOLD):
            voice = self.voices[c.token_role[token]]
            p = int(c.token_pitch[token])
            voice.pending[p] = voice.pending.get(p, False) or kind == KIND_NOTE_ON
        return []

    def _end_frame(self) -> list[NoteEvent]:
        t = self.time
        out: list[NoteEvent] = []
        for r, (voice, velocity) in enumerate(zip(self.voices, (self.c.velocity, self.acc_velocity))):
            events = voice.end_frame(t, velocity)
            if self.recorded is not None:
                self.recorded[r].extend(events)
            if r in self.roles:
                out += events
        self.frame += 1
        return out

    def close(self) -> list[NoteEvent]:
        out = self._end_frame() if any(v.pending for v in self.voices) else []
        for r, voice in enumerate(self.voices):
            offs = [NoteEvent(self.time, p, 0) for p in sorted(voice.sounding)]
            voice.sounding.clear()
            if self.recorded is not None:
                self.recorded[r].extend(offs)
            if r in self.roles:
                out += offs
        return out


class AccompanyConstraints(Constraints):
    """The accompany grammar. In the melody part (fed while accompanying; sampled only when a
    model composes both parts): melody pitches ascending (M_HOLD only for a pitch the melody
    sounded in the frame before), then ACC. In the accompaniment part: an optional VEL first,
    then pitches strictly ascending (A_HOLD only for a pitch the accompaniment sounded in the
    frame before), then STEP; melody tokens and ACC are never allowed there. The sampling
    config's pitch range and key hold for new notes, its polyphony for the accompaniment's
    pitches in a frame, its longest note for how long the accompaniment holds one (its
    shortest note is not enforced). ``allowed`` may be replaced by one row of pitches per
    sequence ([batch, pitches]): melodies in different keys accompanied at once."""

    codec: AccompanyCodec
    _state = ("part", "after_vel", "last", "count", "m_prev", "m_cur", "a_prev", "a_cur", "a_struck", "a_age", "frames")

    def __init__(self, codec: AccompanyCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        p = codec.num_pitches
        self.part = np.zeros(batch, np.int64)  # 0: the melody part of the frame, 1: after ACC
        self.after_vel = np.zeros(batch, bool)
        self.last = np.full(batch, -1, np.int64)  # the last pitch index of this part
        self.count = np.zeros(batch, np.int64)  # accompaniment pitches in this frame
        self.m_prev = np.zeros((batch, p), bool)
        self.m_cur = np.zeros((batch, p), bool)
        self.a_prev = np.zeros((batch, p), bool)
        self.a_cur = np.zeros((batch, p), bool)
        self.a_struck = np.zeros((batch, p), bool)
        self.a_age = np.zeros((batch, p), np.int64)  # frames each accompaniment note has sounded
        self.frames = np.zeros(batch, np.int64)
        self.role = codec.token_role.astype(np.int64)
        self.is_on = self.kind == KIND_NOTE_ON
        self.is_pitch = self.is_on | (self.kind == KIND_HOLD)
        self.pitch_ids = np.arange(p)

    def step_counts(self) -> np.ndarray:
        return self.frames

    def mask(self) -> np.ndarray:
        c, cfg = self.codec, self.cfg
        p = c.num_pitches
        after_last = self.pitch_ids[None, :] > self.last[:, None]
        melody = self.part == 0
        acc = ~melody
        allowed = self.allowed if self.allowed.ndim == 2 else self.allowed[None, :]  # per row, or for all
        m = np.zeros((self.batch, c.vocab_size), bool)
        # melody part
        m[:, c.m_on0 : c.m_on0 + p] = melody[:, None] & after_last & allowed
        m[:, c.m_hold0 : c.m_hold0 + p] = melody[:, None] & after_last & self.m_prev
        m[:, c.acc_token] = melody
        # accompaniment part
        room = after_last & (self.count < cfg.max_polyphony)[:, None] if cfg.max_polyphony else after_last
        held = self.a_prev & (self.a_age < cfg.max_note_steps) if cfg.max_note_steps else self.a_prev
        m[:, c.vel0 : c.a_on0] = (acc & ~self.after_vel & (self.count == 0))[:, None]
        m[:, c.a_on0 : c.a_on0 + p] = acc[:, None] & room & allowed
        m[:, c.a_hold0 : c.a_hold0 + p] = acc[:, None] & room & held
        m[:, c.step_token] = acc
        return m

    def update(self, tokens) -> None:
        c = self.codec
        tokens = token_ids(tokens)
        rows = self.rows
        role = self.role[tokens]
        pitch = self.is_pitch[tokens]
        pp = self.pidx[tokens]
        mel = pitch & (role == MELODY)
        if mel.any():
            self.m_cur[rows[mel], pp[mel]] = True
            self.last[mel] = pp[mel]
        acc_pitch = pitch & (role == ACCOMPANIMENT)
        if acc_pitch.any():
            r = rows[acc_pitch]
            self.a_cur[r, pp[acc_pitch]] = True
            self.a_struck[r, pp[acc_pitch]] = self.is_on[tokens[acc_pitch]]
            self.last[r] = pp[acc_pitch]
            self.count[r] += 1
        is_sep = tokens == c.acc_token
        if is_sep.any():
            self.part[is_sep] = 1
            self.last[is_sep] = -1
        self.after_vel |= (tokens >= c.vel0) & (tokens < c.a_on0)
        is_step = tokens == c.step_token
        if is_step.any():
            r = rows[is_step]
            cur, struck, age = self.a_cur[r], self.a_struck[r], self.a_age[r]
            self.a_age[r] = np.where(cur, np.where(struck, 1, age + 1), 0)
            self.a_prev[r] = cur
            self.a_cur[r] = False
            self.a_struck[r] = False
            self.m_prev[r] = self.m_cur[r]
            self.m_cur[r] = False
            self.part[r] = 0
            self.after_vel[r] = False
            self.last[r] = -1
            self.count[r] = 0
            self.frames[r] += 1
