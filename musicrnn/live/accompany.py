"""The model's side of accompany mode: the player plays a melody, the model its accompaniment,
frame by frame, in a codec with roles (:mod:`musicrnn.codecs.accompany`).

Per grid frame k (``1/steps_per_beat`` beat, sounding at time T_k) the model is fed the melody
part of the frame (the pitches the player sounds in it, those struck in it marked), then ACC,
and samples the accompaniment until STEP (an optional VEL, its pitches); their note-ons and
note-offs play at T_k, as in offline ``compose --accompany`` (:mod:`musicrnn.accompaniment`).
The model was trained to hear a frame's melody before it plays that frame, so:

- a note struck up to half a frame before T_k belongs to frame k (the codec's rounding), and so
  does one struck up to :data:`MELODY_WAIT_S` after it (a player a little late): the conductor
  decides frame k at T_k + MELODY_WAIT_S (:attr:`AccompanyEngine.decide_after_s`) and its notes
  go out at once, a few ms after T_k (the goal: at most 15 ms; benchmarks/accompany_live.py
  measures it over JACK). A note struck later than that joins the next frame;
- in idle time :meth:`AccompanyEngine.prepare_ahead` works frame k ahead on a fork: its melody
  part as it stands (the notes held, those struck so far), then the accompaniment sampled after
  it. At the decision, if the melody part is the one prepared, the fork is adopted and the
  notes go out with no model step; otherwise the melody part is fed then and the accompaniment
  sampled (a few tokens; a note-on goes out the moment its token is drawn);
- a frame whose decision could not start by :data:`ACCOMPANY_LATE_S` after T_k (the machine
  stalled) is not played late: the accompaniment holds what it sounds through it, and the model
  hears that; a frame still being sampled then ends there (the notes drawn so far, the others
  held).

The followers' nudge (:attr:`logit_bias`: the key prior, and the chords follower's prior towards
the chord the melody implies in the current beat) moves the accompaniment's new notes between
pitches without changing how likely a new note is (:func:`musicrnn.harmony.lean`), as offline.

What sounds is what the model hears: notes ended between frames (stop, panic, a mode switch,
the melody's end) leave its view of the frame before (its decoder and grammar), so it never
"holds" a note that no longer sounds; frames that pass while it rests are fed with no
accompaniment.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from musicrnn.codecs import KIND_NOTE_ON, KIND_STEP, Codec, NoteEvent
from musicrnn.codecs.accompany import ACCOMPANIMENT, AccompanyCodec
from musicrnn.errors import MusicRNNError
from musicrnn.harmony import lean
from musicrnn.limits import MAX_NOTE_BEATS
from musicrnn.live.clock import now_ns
from musicrnn.live.engine import Engine, _fork, _Stream
from musicrnn.sample import sample_next

MELODY_WAIT_S = 0.005  # a frame's accompaniment waits this long after its beat for the melody struck at its start
# a frame whose decision has not started this long after its beat holds the accompaniment instead, and one
# still sampling then ends there (STEP): its notes sound within 15 ms of the beat, with room for a last model
# step, the output's wake-up and a JACK period on a busy CPU (13 ms gave a p99 of 15.6 ms over JACK there)
ACCOMPANY_LATE_S = 0.011
HISTORY = 4096  # tokens of the model's stream kept for inspection (tests, debugging)


@dataclass
class _Ahead:
    """Frame ``frame`` worked ahead on ``stream`` (a fork, or the stream itself while deciding):
    its melody part fed, then the accompaniment's tokens sampled so far."""

    frame: int
    melody: list[int]
    stream: _Stream
    tokens: list[int] = field(default_factory=list)
    events: list[NoteEvent] = field(default_factory=list)  # the decoder's, at STEP
    done: bool = False  # STEP was sampled


class AccompanyEngine(Engine):
    """The live engine for a codec with a melody and an accompaniment role: the player's notes
    are the melody, the model decides the accompaniment of each frame (:meth:`next_time` then
    :meth:`decide`, as for grid frames, but just after the frame's beat). Use from one thread.

    ``frame_ns``: the model work of each decision after its deadline (ns); ``held_frames``:
    frames held because their decision came too late; ``cut_frames``: frames ended at their
    deadline; ``history``: the last tokens of the model's stream (melody parts, accompaniment,
    STEPs)."""

    decide_after_s = MELODY_WAIT_S
    late_s = ACCOMPANY_LATE_S
    codec: AccompanyCodec

    def __init__(self, model, codec: Codec, sampling=None, seed: int = 0, max_note_beats: float = MAX_NOTE_BEATS) -> None:
        self.frame_ns: deque[int] = deque(maxlen=512)
        self.held_frames = 0
        self.cut_frames = 0
        self.history: deque[int] = deque(maxlen=HISTORY)
        self._ahead: _Ahead | None = None
        super().__init__(model, codec, sampling, seed, max_note_beats)
        self._new_notes = (self.codec.token_kind == KIND_NOTE_ON) & (self.codec.token_role == ACCOMPANIMENT)

    def _live_unit(self, codec: Codec) -> str:
        if not isinstance(codec, AccompanyCodec):
            raise MusicRNNError(f"the {codec.name} codec has no melody and accompaniment roles: accompany mode needs "
                                "a model that has them (e.g. --model accompany)")
        return "frame"

    def _new_decoder(self):
        return self.codec.stream_decoder(roles=(ACCOMPANIMENT,))  # the model plays the accompaniment alone

    def reset(self) -> None:
        super().reset()
        self._ahead = None
        self.history.clear()

    def _set_pitches(self, new) -> None:
        super()._set_pitches(new)
        self._ahead = None  # sampled under the old pitches

    # --- the player's melody -------------------------------------------------------------------
    def human_note_on(self, t: float, pitch: int, velocity: int) -> list[NoteEvent]:
        """The player struck ``pitch`` at codec time ``t``: it joins the frame it rounds to, or
        the frame now open if that one is decided already. Returns the note-offs of model notes
        that frames passing undecided ended (none while the model accompanies)."""
        if not self.codec.min_pitch <= pitch <= self.codec.max_pitch:
            return []
        with self._kernels():
            ended = self._commit_frames(self.encoder.note_on(t, pitch, velocity))
        self.human_notes.add(pitch)
        self._seen(t)
        return ended

    def human_note_off(self, t: float, pitch: int) -> list[NoteEvent]:  # type: ignore[override]
        """The player released ``pitch``: it sounds in the open frame, not after (offs as above)."""
        if pitch not in self.human_notes:
            return []
        self.human_notes.discard(pitch)
        with self._kernels():
            ended = self._commit_frames(self.encoder.note_off(t, pitch))
        self._seen(t)
        return ended

    def release_model_notes(self, t: float) -> list[NoteEvent]:
        """End every model note at ``t``; the model hears that nothing of its part sounds."""
        out = [NoteEvent(t, p, 0) for p in sorted(self.model_notes)]
        self.model_notes.clear()
        _forget_accompaniment(self.stream)
        self._ahead = self._spec = self._proposal = None
        self._seen(t)
        return out

    # --- deciding a frame ----------------------------------------------------------------------
    def prepare_ahead(self, interrupt: Callable[[], bool] | None = None) -> bool:
        """Idle time while accompanying: work the open frame ahead on a fork, its melody part as
        it stands, then its accompaniment (see the module docstring). ``interrupt()`` True (a
        player's event waits) stops it, keeping what it sampled. True if it stepped."""
        k = self.encoder.frame
        melody = _fork(self.encoder).melody_frame()
        a = self._ahead
        if a is not None and a.frame == k and a.melody == melody:
            if a.done:
                return False
        else:
            fork = self.stream.fork()
            with self._kernels():
                self._feed(fork, melody)
            a = self._ahead = _Ahead(k, melody, fork)
        with self._kernels():
            self._sample_part(a, interrupt)
        return True

    def _decide_frame(self, k: int, force_note: bool, on_note: Callable[[NoteEvent], None] | None = None,
                      interrupt: Callable[[], bool] | None = None, deadline_ns: int | None = None) -> list[NoteEvent] | None:
        """Frame ``k`` (frames before it that passed undecided are held first): its melody part
        as the player played it, then the accompaniment (prepared ahead, or sampled now, ended
        with STEP at ``deadline_ns``)."""
        t0 = now_ns()
        t = k / self.spu
        out: list[NoteEvent] = []
        early: set[int] = set()  # note-ons handed to on_note while the frame was being sampled

        def strike(pitch: int, velocity: int) -> None:
            if on_note is not None and pitch not in self.model_notes and pitch not in early:
                early.add(pitch)  # silent before: the decoder strikes it at STEP, so it can sound now
                self.model_notes[pitch] = t
                on_note(NoteEvent(t, pitch, velocity))

        with self._kernels():
            while self.encoder.frame < k:
                out += self._hold_frame()
            melody = self.encoder.melody_frame()
            a, self._ahead, self._spec = self._ahead, None, None
            if a is None or a.frame != k or a.melody != melody:
                self._feed(self.stream, melody)
                a = _Ahead(k, melody, self.stream)
            self.stream = a.stream
            self._sample_part(a, None, strike, deadline_ns)
        self.history.extend(melody + a.tokens)
        out += self._own(a.events, early)
        self._next_frame = k + 1
        self._seen(t)
        self.frame_ns.append(now_ns() - t0)
        return out

    def _sample_part(self, a: _Ahead, interrupt: Callable[[], bool] | None = None,
                     strike: Callable[[int, int], None] | None = None, deadline_ns: int | None = None) -> None:
        """Sample ``a``'s accompaniment until STEP (or until ``interrupt()``; past ``deadline_ns``
        STEP comes next); ``strike(pitch, velocity)`` hears each A_ON as it is drawn."""
        c, stream = self.codec, a.stream
        for _ in range(c.num_pitches + 2):  # a VEL, each pitch once, STEP
            if a.done or (interrupt is not None and interrupt()):
                return
            if deadline_ns is not None and now_ns() >= deadline_ns:
                self._close_late(a)
                return
            x = self._sample(stream, self._mask(stream, False))
            if strike is not None and c.token_kind[x] == KIND_NOTE_ON:
                strike(int(c.token_pitch[x]), stream.decoder.acc_velocity)
            a.tokens.append(x)
            a.events += self._feed(stream, [x])
            a.done = bool(c.token_kind[x] == KIND_STEP)

    def _sample(self, stream: _Stream, mask: np.ndarray) -> int:
        """One token; the followers' nudge leans the new notes, their total chance kept."""
        if self.logit_bias is None:
            return super()._sample(stream, mask)
        logits = lean(np.asarray(stream.logits), self.logit_bias[None, :], self._new_notes, mask)
        return int(sample_next(logits, self.cfg, self.rand.next(), mask).item())

    def _close_late(self, a: _Ahead) -> None:
        """Out of time: the frame is what was drawn, the notes still sounding held where the
        grammar lets them be (above the last pitch drawn), then STEP."""
        c, stream = self.codec, a.stream
        self.cut_frames += 1
        for p in sorted(self.model_notes):
            hold = c.a_hold0 + p - c.min_pitch
            if stream.cons.mask()[0, hold]:
                a.tokens.append(hold)
                a.events += self._feed(stream, [hold])
        a.tokens.append(c.step_token)
        a.events += self._feed(stream, [c.step_token])
        a.done = True

    def _hold_frame(self) -> list[NoteEvent]:
        """A frame whose time passed undecided: its melody part, then the accompaniment holding
        what it sounds (what it may still hold), then STEP; no new note. Returns the note-offs."""
        c, cons = self.codec, self.stream.cons
        limit = self.cfg.max_note_steps
        held = [p for p in sorted(self.model_notes)
                if cons.a_prev[0, p - c.min_pitch] and not (limit and cons.a_age[0, p - c.min_pitch] >= limit)]
        tokens = self.encoder.melody_frame() + [c.a_hold0 + p - c.min_pitch for p in held] + [c.step_token]
        self.held_frames += 1
        self.history.extend(tokens)
        self._ahead = None
        return self._own(self._feed(self.stream, tokens), set())

    def _commit(self, tokens: list[int]) -> list[NoteEvent]:
        if tokens:
            self._ahead = None  # worked ahead on the stream as it was
            self.history.extend(int(x) for x in tokens)
        return super()._commit(tokens)

    def _commit_frames(self, tokens: list[int]) -> list[NoteEvent]:
        """Whole frames the melody's encoder wrote (time passed with no decision: no
        accompaniment in them); returns the note-offs of the model notes they ended."""
        return self._own(self._commit(tokens), set())

    def _own(self, events: list[NoteEvent], early: set[int]) -> list[NoteEvent]:
        """The decoder's accompaniment events, as the model's notes: what is already out
        (``early``) left out, a note-off only for a note that sounds."""
        out = []
        for ev in events:
            if ev.pitch in early:
                continue
            if ev.velocity > 0:
                self.model_notes[ev.pitch] = ev.time
                out.append(ev)
            elif self.model_notes.pop(ev.pitch, None) is not None:
                out.append(ev)
        return out

    # --- numbers -------------------------------------------------------------------------------
    def frame_ms(self) -> tuple[float, float]:
        """(median, max) of recent decisions' model work after their deadline, in ms."""
        if not self.frame_ns:
            return 0.0, 0.0
        arr = np.fromiter(self.frame_ns, dtype=np.int64)
        return float(np.median(arr)) / 1e6, float(arr.max()) / 1e6


def engine_class(codec: Codec) -> type[Engine]:
    """The engine that plays ``codec``: :class:`AccompanyEngine` for a codec with roles (accompany
    mode), else :class:`~musicrnn.live.engine.Engine`."""
    return AccompanyEngine if codec.roles else Engine


def _forget_accompaniment(stream: _Stream) -> None:
    """The model's notes stopped sounding between frames (stop, panic, a mode switch, the
    melody's end): in its view of the frame before nothing of its part sounds any more, so it
    cannot hold one (it may strike it again)."""
    stream.decoder.voices[ACCOMPANIMENT].sounding.clear()
    stream.cons.a_prev[:] = False
    stream.cons.a_age[:] = 0
