"""The model's side of a live session: one RNN state for the whole session, one model step per
token, the same sampling function as ``musicrnn compose``.

Holds:
- :class:`Engine`: human notes in (:meth:`~Engine.human_note_on`, ...), the model's notes out
  (:meth:`~Engine.next_time` then :meth:`~Engine.decide`). Use it from one thread only.
- :func:`configure_torch_for_live`: one torch thread and one BLAS thread for numpy (two
  threads gave 15-120 ms spikes here).

Model steps go through a :class:`~musicrnn.inference.Stepper` of one row (numpy where the model
allows it, else torch with oneDNN off; :func:`~musicrnn.inference.stepper_for` chooses, both
compute the same function; timings in docs/benchmarks.md). Masks and sampling are numpy too.

How the token stream stays one story. Human and model notes share one token stream, written by
the codec's stream encoder, so the model always hears what really happened, in the codec it was
trained on. To play on time the model decides a little ahead: it samples its next event (a
performance event, or a whole grid frame) on a *fork* of the stream (RNN state, constraint
state, decoder), and its notes are handed to the encoder. When the encoder later writes the
real tokens, they usually equal the sampled ones and the fork is adopted as is: each token
costs one model step. If the player did something in between, the real tokens differ, the fork
is dropped, and only the real tokens are fed. Either way the cost per event does not grow with
the length of the session.

Latency. Grid: ``decide(on_note=...)`` hands a frame's struck notes out as their tokens are
sampled, so the first note of an answer does not wait for the rest of its frame;
``decide(interrupt=...)`` lets a frame decided ahead give way to a player's waiting event; and
:meth:`Engine.prepare` steps the close of the player's frame in idle time, so an answer's first
note waits for no model step at all (steps right after an idle moment are the slow ones: the
weights have left the caches). Events: :meth:`Engine.prepare` steps, on forks in idle time, the
time shifts to the step where an answer would start if the call ended now and to the step
after it (the conductor wakes at each step to move them on); the answer's first event starts
from the fork whose shifts the real stream needs, so only its sampling and at most a velocity's
step remain; ``decide(on_note=...)`` hands a note-on out before the model steps on its token
(that step is done when the fork is adopted). Forks are stepped, never sampled ahead, so the
decision samples with the settings in force then, and the session is token for token the one
without them: the player's next note, a move to another step or new pitches drop them.

Ownership: the model only ends notes it started, and (grid) does not strike a pitch the player
is holding; a player striking a pitch the model holds ends the model's note.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from musicrnn.codecs import (
    BOS,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_SHIFT,
    KIND_STEP,
    KIND_VELOCITY,
    Codec,
    NoteEvent,
)
from musicrnn.errors import MusicRNNError
from musicrnn.fast_step import single_thread_blas
from musicrnn.inference import Stepper, stepper_for
from musicrnn.limits import DENSITY, LATE_S, MAX_NOTE_BEATS, TEMPERATURE, TOP_P
from musicrnn.live.clock import now_ns
from musicrnn.live.forks import _fork, _Proposal, _Spec, _Stream
from musicrnn.model import MusicRNN
from musicrnn.sample import Constraints, RowRandom, SamplingConfig, sample_next

CLOSE_MARGIN = 0.05  # frame codecs: a frame counts as complete this many steps after its rounding window ends
LIVE_UNITS = ("event", "frame")  # the decision units (Codec.live_unit) the engine knows


def configure_torch_for_live() -> None:
    """Single-threaded torch and numpy BLAS for real-time paths (call once per process that
    plays live)."""
    torch.set_num_threads(1)
    single_thread_blas()


class Engine:
    """The model in a live session. Times are in the codec's unit (``codec.time_unit``).

    What it decides at a time is the codec's ``live_unit``: the next event ("event", e.g. the
    performance codec) or the next frame ("frame", e.g. the grid codec); the codec's ``live_*``
    methods say what its grammar adds for live play.

    ``sampling`` is shared with the constraints, so changing ``temperature`` or
    ``max_polyphony`` on it (see :meth:`set_temperature`, :meth:`set_density`) takes effect at
    the next token.

    ``model``: a model (stepped as :func:`~musicrnn.inference.stepper_for` chooses, with a copy
    of its weights as they are now) or a stepper of one row from the start. A codec with roles
    is played by :class:`~musicrnn.live.accompany.AccompanyEngine` (accompany mode).
    """

    decide_after_s: float | None = None  # decide at T + this (None: a little ahead of T, the conductor's lookahead)
    late_s: float = LATE_S  # a decision not started this long after its time is skipped

    def __init__(self, model: MusicRNN | Stepper, codec: Codec, sampling: SamplingConfig | None = None, seed: int = 0,
                 max_note_beats: float = MAX_NOTE_BEATS) -> None:
        self.stepper = model.fresh(1) if isinstance(model, Stepper) else stepper_for(model)
        self.codec = codec
        self.frames = self._live_unit(codec) == "frame"  # decides whole frames, else single events
        self.cfg = replace(sampling or SamplingConfig())
        if not self.cfg.max_note_steps:
            self.cfg.max_note_steps = codec.live_max_note_steps(max_note_beats)
        self.cfg.validate(codec)
        self.spu = codec.steps_per_unit
        self.seed = seed
        self._resets = 0
        self.steps = 0  # model steps taken in this session
        self.logit_bias: np.ndarray | None = None  # [vocab] nats added before sampling (the followers')
        # event codecs: (codec time of a decision, its logits [1, vocab]) -> the logits to sample from
        # (the grid follower's nudge depends on where in the beat the model decides, which only the
        # sampling fork knows)
        self.time_logits: Callable[[float, np.ndarray], np.ndarray] | None = None
        self.step_ns: deque[int] = deque(maxlen=512)  # recent model step times
        self.reset()

    def _live_unit(self, codec: Codec) -> str:
        """What this engine decides with ``codec`` (one of :data:`LIVE_UNITS`), or a one-line error."""
        if codec.roles:
            raise MusicRNNError(f"the {codec.name} codec has roles ({', '.join(codec.roles)}): its models play in "
                                "accompany mode (serve --mode accompany)")
        if codec.live_unit not in LIVE_UNITS:
            raise MusicRNNError(f"live play does not know the {codec.name!r} codec")
        return codec.live_unit

    def _new_decoder(self):  # the stream's decoder: which of its notes are the model's to play
        return self.codec.stream_decoder()

    # --- session -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the session: fresh RNN state from BOS, no notes."""
        cons = Constraints.for_codec(self.codec, 1, self.cfg)
        self.stream = _Stream(self.stepper.fresh(1), None, cons, self._new_decoder())
        self.encoder = self.codec.stream_encoder()
        self.rand = RowRandom([(self.seed, self._resets)])  # a fresh stream per reset: a new session, new ideas
        self._resets += 1
        self.model_notes: dict[int, float] = {}  # pitch -> onset (codec time), notes the model is sounding
        self.human_notes: set[int] = set()
        self._spec: _Spec | None = None
        self._ready: list[_Spec] = []  # event codecs: the time shifts to where an answer may start, stepped ahead
        self._proposal: _Proposal | None = None
        self._frame: tuple[int, bool] | None = None  # frames: the frame next_time() chose, and force_note
        self._next_frame = 0
        self.latest = 0.0  # the latest codec time handed to the encoder
        with self._kernels():
            self._feed(self.stream, [BOS])

    def set_temperature(self, value: float) -> None:
        self.cfg.temperature = float(TEMPERATURE.check(value, "temperature"))

    def set_density(self, max_polyphony: int) -> None:
        """Most notes at once (0 = no limit)."""
        self.cfg.max_polyphony = int(DENSITY.check(max_polyphony, "density (most notes at once)"))

    def set_top_p(self, value: float) -> None:
        """Nucleus sampling: only the likeliest tokens that together reach ``value`` (1 = off)."""
        self.cfg.top_p = float(TOP_P.check(value, "top-p"))

    def set_key(self, pitch_classes: frozenset[int] | None) -> None:
        """New notes only from these pitch classes (None = any)."""
        self._set_pitches(replace(self.cfg, key=pitch_classes))

    def set_pitches(self, pitch_classes: frozenset[int] | None, pitch_range: tuple[int, int] | None) -> None:
        """Key and range at once: a pair that fits together is taken even where neither alone
        fits the other's old value (a model load carries both over; the conductor moves both
        when it transposes)."""
        if (pitch_classes, pitch_range) == (self.cfg.key, self.cfg.pitch_range):
            return
        self._set_pitches(replace(self.cfg, key=pitch_classes, pitch_range=pitch_range))

    def set_pitch_range(self, pitch_range: tuple[int, int] | None) -> None:
        """New notes only within (lowest, highest) MIDI pitch (None = the model's range)."""
        self._set_pitches(replace(self.cfg, pitch_range=pitch_range))

    def _set_pitches(self, new: SamplingConfig) -> None:
        new.validate(self.codec)  # refuses a key and range with no pitch in common, changing nothing
        self.cfg.key, self.cfg.pitch_range = new.key, new.pitch_range
        self.stream.cons.allowed = self.cfg.allowed_pitches(self.codec)
        self._proposal = None  # sampled ahead under the old pitches: decide again
        self._spec, self._ready = None, []  # forks hold the old pitches

    @property
    def time(self) -> float:
        """Codec time the model has heard up to (its committed stream)."""
        return self.stream.decoder.time

    # --- the player ----------------------------------------------------------------------------
    def human_note_on(self, t: float, pitch: int, velocity: int) -> list[NoteEvent]:
        """The player struck ``pitch`` at codec time ``t``. Returns note-offs for model notes
        the player took over (same pitch)."""
        if not self.codec.min_pitch <= pitch <= self.codec.max_pitch:
            return []
        ended = []
        with self._kernels():
            if pitch in self.model_notes:
                del self.model_notes[pitch]
                self._commit(self.encoder.note_off(t, pitch))
                ended.append(NoteEvent(t, pitch, 0))
            self._commit(self.encoder.note_on(t, pitch, velocity))
        self.human_notes.add(pitch)
        self._seen(t)
        return ended

    def human_note_off(self, t: float, pitch: int) -> None:
        if pitch not in self.human_notes:
            return
        self.human_notes.discard(pitch)
        with self._kernels():
            self._commit(self.encoder.note_off(t, pitch))
        self._seen(t)

    def release_human_notes(self, t: float) -> None:
        """Treat every held human note as released (the model stops listening)."""
        for pitch in sorted(self.human_notes):
            self.human_note_off(t, pitch)

    def catch_up(self, t: float) -> None:
        """Let the model hear that time passed up to ``t`` with nothing new, as far as it can be
        written already (complete frames; whole longest waits), so a long silence does not
        cost a burst of steps later."""
        with self._kernels():
            if self.frames:
                k = math.floor(t * self.spu + 0.5 - CLOSE_MARGIN)
                if k > self.encoder.frame:
                    self._commit(self.encoder.advance(k / self.spu))
                    self._next_frame = max(self._next_frame, k)
            else:
                longest = self.codec.longest_wait
                while t - self.time >= longest:
                    self._commit(self.encoder.advance(self.time + longest))
        self._seen(t)

    def prepare(self, answer_at: float | None = None, interrupt: Callable[[], bool] | None = None) -> bool:
        """Idle time while listening: step on a fork what an answer would step first if the call
        ended now, so that its first note waits for few model steps or none. Frame codecs: the
        tokens that close the player's current frame if nothing else happens in it. Event
        codecs: the time shifts to ``answer_at`` (where the answer would start) and to the step
        after it (the time it moves on to next); sampling waits for the decision (its settings
        may change at the answer's start). Whatever the player does next drops the forks, as
        does another ``answer_at`` (the next idle moment prepares again); ``interrupt``: stop
        before a step when it says True. True if it stepped."""
        if not self.frames:
            return self._prepare_shifts(answer_at, interrupt) if answer_at is not None else False
        enc = _fork(self.encoder)
        tokens = [int(t) for t in enc.advance((enc.frame + 1) / self.spu)]
        spec = self._spec
        if spec is not None and spec.tokens == tokens:
            return False
        fork = self.stream.fork()
        with self._kernels():
            events = self._feed(fork, tokens)
        self._spec = _Spec(tokens, fork, events)
        return True

    def _prepare_shifts(self, answer_at: float, interrupt: Callable[[], bool] | None) -> bool:
        """Event codecs' :meth:`prepare`: keep a fork per target step, step only new ones."""
        k = round(answer_at * self.spu)
        ready, stepped = [], False
        for target in (k / self.spu, (k + 1) / self.spu):
            tokens = [int(t) for t in _fork(self.encoder).advance(target)]
            spec = next((s for s in self._ready if s.tokens == tokens), None)
            if spec is None and tokens:
                if interrupt is not None and interrupt():
                    break
                fork = self.stream.fork()
                with self._kernels():
                    spec = _Spec(tokens, fork, self._feed(fork, tokens))
                stepped = True
            if spec is not None:
                ready.append(spec)
        self._ready = ready
        return stepped

    def prepare_ahead(self, interrupt: Callable[[], bool] | None = None) -> bool:
        """Idle time while playing: work the next decision ahead (accompany mode); here nothing."""
        return False

    # --- the model -----------------------------------------------------------------------------
    def next_time(self, not_before: float, force_note: bool = False) -> float:
        """Codec time of the model's next decision, not earlier than ``not_before``.
        ``force_note``: the next event must be a note (an answer starts with one)."""
        if self.frames:
            k = max(self._next_frame, self.encoder.frame, math.ceil(not_before * self.spu - 1e-6))
            self._frame = (k, force_note)
            return k / self.spu
        p = self._proposal
        if p is None or p.force_note != force_note:
            p = self._proposal = self._propose_event(not_before, force_note)
        return p.time

    def decide(self, on_note: Callable[[NoteEvent], None] | None = None, interrupt: Callable[[], bool] | None = None,
               deadline_ns: int | None = None) -> list[NoteEvent] | None:
        """Play the decision :meth:`next_time` announced; returns the model's note events.

        ``on_note``: called with a note-on the moment it is known, so it can sound while the
        model works on (a note-on the model then has already started; it is not in the
        returned list). Event codecs: before the model's step on its token. Frame codecs: when
        its token is sampled, before the frame's other tokens; only a pitch the model is not
        sounding goes out early (a re-strike needs its note-off, which is known at the end of
        the frame): those, and every note-off, are returned, all at the frame's time.

        ``interrupt`` (frame codecs): asked before each token while no note of the frame is out
        yet; if it returns True the frame is dropped (None is returned, nothing changed but
        what the model heard) and :meth:`next_time` announces it again. For a frame decided
        ahead while the player's next event is already waiting. ``deadline_ns``: when the notes
        must sound by (an engine deciding after the step's time ends its frame there)."""
        if self.frames:
            if self._frame is None:
                raise RuntimeError("decide() without next_time()")
            (k, force), self._frame = self._frame, None
            return self._decide_frame(k, force, on_note, interrupt, deadline_ns)
        if self._proposal is None:
            raise RuntimeError("decide() without next_time()")
        return self._decide_event(self._proposal, on_note)

    def release_model_notes(self, t: float) -> list[NoteEvent]:
        """End every model note at ``t`` (in the model's view); returns the note-offs."""
        out = []
        with self._kernels():
            for pitch in sorted(self.model_notes):
                self._commit(self.encoder.note_off(t, pitch))
                out.append(NoteEvent(t, pitch, 0))
        self.model_notes.clear()
        self._proposal = None
        self._seen(t)
        return out

    # --- inside --------------------------------------------------------------------------------
    def _kernels(self):
        """The stepper's settings around a run of model steps (none on the numpy path)."""
        return self.stepper.kernels()

    def _seen(self, t: float) -> None:
        self.latest = max(self.latest, t)

    def _feed(self, stream: _Stream, tokens: list[int], step: bool = True) -> list[NoteEvent]:
        """The stream hears ``tokens`` (``step=False``: its constraints and decoder only, the
        model's step on the token is left to :meth:`_step_stream`)."""
        events: list[NoteEvent] = []
        for tok in tokens:
            if step:
                self._step_stream(stream, tok)
            stream.cons.update((tok,))
            events += stream.decoder.feed(tok)
        return events

    def _step_stream(self, stream: _Stream, tok: int) -> None:
        t0 = now_ns()
        stream.logits = self._step(stream.stepper, tok)
        self.step_ns.append(now_ns() - t0)
        self.steps += 1

    def _step(self, stepper: Stepper, tok: int) -> np.ndarray:
        """One model step (the one seam every token goes through): logits [1, vocab]."""
        return stepper.step_one(tok)

    def _commit(self, tokens: list[int]) -> list[NoteEvent]:
        """Tokens of the real stream: adopt the fork that predicted them, feed the rest."""
        if not tokens:
            return []
        tokens = [int(t) for t in tokens]
        specs = ([self._spec] if self._spec is not None else []) + self._ready
        self._spec, self._ready, self._proposal = None, [], None
        for spec in specs:
            if tokens[: len(spec.tokens)] == spec.tokens:
                self.stream = spec.stream
                if spec.pending:
                    self._step_stream(self.stream, spec.tokens[-1])
                return spec.events + self._feed(self.stream, tokens[len(spec.tokens):])
        return self._feed(self.stream, tokens)

    def _sample(self, stream: _Stream, mask: np.ndarray) -> int:
        logits = stream.logits
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        if self.time_logits is not None and not self.frames:
            logits = self.time_logits(stream.decoder.time, logits)
        return int(sample_next(logits, self.cfg, self.rand.next(), mask).item())

    def _mask(self, stream: _Stream, force_note: bool, after_velocity: bool = False) -> np.ndarray:
        """The grammar's mask, with what the codec adds for live play (who owns which note)."""
        return self.codec.live_mask(stream.cons.mask(), self.model_notes, self.human_notes, force_note, after_velocity)

    def _propose_event(self, not_before: float, force_note: bool) -> _Proposal:
        c = self.codec
        with self._kernels():
            tokens = [int(t) for t in _fork(self.encoder).advance(not_before)]
            ready = next((s for s in self._ready if s.tokens == tokens), None)  # stepped in idle time
            fork = (self.stream if ready is None else ready.stream).fork()
            if ready is None:
                self._feed(fork, tokens)
            base = fork.decoder.time
            after_velocity = False
            events: list[NoteEvent] = []
            for _ in range(4):  # at most one velocity, then a note or a shift (the mask sees to it)
                x = self._sample(fork, self._mask(fork, force_note, after_velocity))
                tokens.append(x)
                # a note-on's step waits until the fork is adopted, after its note went out
                events = self._feed(fork, [x], step=c.token_kind[x] != KIND_NOTE_ON)
                if c.token_kind[x] != KIND_VELOCITY:
                    break
                after_velocity = True
        kind = int(c.token_kind[x])
        spec = _Spec(tokens, fork, events, pending=kind == KIND_NOTE_ON)
        if kind in (KIND_NOTE_ON, KIND_NOTE_OFF) and events:
            ev = events[-1]
            return _Proposal(spec, base, ev.time, kind, ev.pitch, ev.velocity, force_note)
        return _Proposal(spec, base, fork.decoder.time, KIND_SHIFT, force_note=force_note)

    def _decide_event(self, p: _Proposal, on_note: Callable[[NoteEvent], None] | None = None) -> list[NoteEvent]:
        enc = self.encoder
        tokens = list(enc.advance(p.base))
        if p.kind == KIND_NOTE_ON:
            tokens += enc.note_on(p.time, p.pitch, p.velocity)
        elif p.kind == KIND_NOTE_OFF:
            tokens += enc.note_off(p.time, p.pitch)
        else:
            tokens += enc.advance(p.time)
        if p.kind == KIND_NOTE_ON and on_note is not None:  # out before the model's step on it
            self.model_notes[p.pitch] = p.time
            on_note(NoteEvent(p.time, p.pitch, p.velocity))
        self._spec = p.spec
        with self._kernels():
            self._commit(tokens)
        t = self.time
        self._seen(t)
        if p.kind == KIND_NOTE_ON:
            if on_note is not None:
                return []
            self.model_notes[p.pitch] = t
            return [NoteEvent(t, p.pitch, p.velocity)]
        if p.kind == KIND_NOTE_OFF:
            self.model_notes.pop(p.pitch, None)
            return [NoteEvent(t, p.pitch, 0)]
        return []

    def _decide_frame(self, k: int, force_note: bool, on_note: Callable[[NoteEvent], None] | None = None,
                      interrupt: Callable[[], bool] | None = None, deadline_ns: int | None = None) -> list[NoteEvent] | None:
        c = self.codec
        t = k / self.spu
        early: set[int] = set()  # note-ons handed to on_note while the frame was being sampled
        with self._kernels():
            self._commit(self.encoder.advance(t))
            fork = self.stream.fork()
            before = fork.decoder._sounding  # the frame before (the decoder swaps in a new set at STEP)
            tokens: list[int] = []
            events: list[NoteEvent] = []
            struck: set[int] = set()
            for _ in range(c.num_pitches + 1):
                if interrupt is not None and not early and interrupt():
                    return None  # the fork is dropped; the frame stays the next one
                x = self._sample(fork, self._mask(fork, force_note and not struck))
                if c.token_kind[x] == KIND_STEP:
                    tokens.append(x)
                    events += self._feed(fork, [x])
                    break
                if c.token_kind[x] == KIND_NOTE_ON:
                    p = int(c.token_pitch[x])
                    struck.add(p)
                    # where the codec knows the strike already (e.g. a marked strike, or p silent the
                    # frame before) it goes out now; the model's own sounding pitch needs its
                    # note-off first: that waits for STEP
                    velocity = c.live_strike(p, before) if on_note is not None and p not in self.model_notes else 0
                    if velocity:
                        early.add(p)
                        self.model_notes[p] = t
                        self.encoder.note_on(t, p, velocity)
                        on_note(NoteEvent(t, p, velocity))
                tokens.append(x)
                events += self._feed(fork, [x])
        out = []
        for ev in events:  # the decoder's view of the frame, cut down to the model's own notes
            if ev.pitch in early:
                continue  # already out (and a note-off for it here was the player's, not ours)
            if ev.velocity == 0 and ev.pitch in self.model_notes:
                del self.model_notes[ev.pitch]
                self.encoder.note_off(t, ev.pitch)
                out.append(ev)
            elif ev.velocity > 0 and ev.pitch in struck:
                self.model_notes[ev.pitch] = t
                self.encoder.note_on(t, ev.pitch, ev.velocity)
                out.append(ev)
        self._spec = _Spec(tokens, fork, events)
        self._next_frame = k + 1
        self._seen(t)
        return out

    # --- numbers -------------------------------------------------------------------------------
    def step_ms(self) -> tuple[float, float]:
        """(median, max) of recent model step times in ms."""
        if not self.step_ns:
            return 0.0, 0.0
        arr = np.fromiter(self.step_ns, dtype=np.int64)
        return float(np.median(arr)) / 1e6, float(arr.max()) / 1e6
