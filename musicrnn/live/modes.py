"""What the model does when: the conductor of a live session.

Holds :class:`Conductor`, which sits between the player's events, the clock, the
:class:`~musicrnn.live.engine.Engine` and the :class:`~musicrnn.live.scheduler.Scheduler`,
and :class:`Settings`. The modes (call-response, accompany, duet, autoplay) are classes in
:mod:`musicrnn.live.play_modes`; the conductor asks its mode where they differ (listen or
play, answer when, hear the player or not). An answer starts on the next beat (or at once
with ``answer_start="now"``) and lasts ``answer_bars`` bars. A model whose codec has roles
plays accompany mode only (its engine is :class:`~musicrnn.live.accompany.AccompanyEngine`,
which decides each frame just after its beat, once the melody of the frame is heard): a
switch to another mode is refused, and loading such a model switches the session to it.

:meth:`Conductor.stop` silences the model until :meth:`Conductor.generate`: an answer in
progress ends, and duet and autoplay pause (the model keeps hearing the player meanwhile).
:meth:`~Conductor.generate` answers now in call-response (like the end-of-call control,
optionally for a given number of bars) and resumes playing in the other modes.

Switching mode, panic, reset, a model swap and a stopped or relocated MIDI clock all end the
model's sounding notes. The conductor has no thread: the server calls it from its engine thread
(``tick`` at each wake-up, ``next_wakeup`` to know when to call again), so tests can drive it
with made-up times.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from musicrnn.codecs import NoteEvent
from musicrnn.errors import MusicRNNError
from musicrnn.limits import ANSWER_BARS, LATE_S
from musicrnn.listening import Listener, fold_into
from musicrnn.live.clock import Clock, Timebase
from musicrnn.live.clock import now_ns as real_now_ns
from musicrnn.live.engine import Engine
from musicrnn.live.play_modes import check_fits, check_mode, default_mode, make_mode
from musicrnn.live.scheduler import Scheduler
from musicrnn.logit_bias import CodecBiases

log = logging.getLogger("musicrnn.live")

LOOKAHEAD_S = 0.03  # event codecs (performance): the model decides a note this long before it sounds
GRID_LOOKAHEAD = 0.45  # frame codecs (grid): decide a frame this many steps early (< 0.5: the frame before is complete)
IDLE_WAKE_S = 0.1  # while listening, let the model hear the silence this often
MAX_DECISIONS_PER_TICK = 256  # a safety valve: one tick never loops forever
INTERRUPT_AHEAD_S = 0.005  # a grid frame due later than this may give way to waiting player events


@dataclass
class Settings:
    mode: str = "call-response"
    silence_beats: float = 2.0  # call-response: answer after this much silence
    answer_bars: float = 2.0  # call-response: answer this long
    beats_per_bar: float = 4.0
    answer_start: str = "next-beat"  # next-beat | now
    lookahead_s: float = LOOKAHEAD_S

    def validate(self) -> None:
        check_mode(self.mode)
        ANSWER_BARS.check(self.answer_bars, "answer length (bars)")
        if self.silence_beats <= 0 or self.beats_per_bar <= 0:
            raise MusicRNNError("silence beats and beats per bar must be positive")
        if self.answer_start not in ("next-beat", "now"):
            raise MusicRNNError(f"answer start must be next-beat or now, not {self.answer_start!r}")


class Conductor:
    def __init__(self, engine: Engine, scheduler: Scheduler, clock: Clock, settings: Settings, t_ns: int,
                 listener: Listener | None = None) -> None:
        settings.validate()
        check_fits(settings.mode, engine.codec)
        self.engine = engine
        # what the model hears is moved into its home keys and register, its answer back out:
        # real pitch = model pitch + transpose (see musicrnn.listening)
        self.listener = listener or Listener()
        self.transpose = 0
        self.user_key = engine.cfg.key  # the player's --key / range, in real pitches
        self.user_range = engine.cfg.pitch_range
        self._heard: dict[int, int] = {}  # player's held pitch -> the pitch the model heard
        self._played: dict[int, tuple[int, int]] = {}  # model's sounding pitch -> (the pitch that sounds, since ns)
        self.biases = CodecBiases()  # the followers' nudge vectors for the engine's codec
        self.scheduler = scheduler
        self.clock = clock
        self.settings = settings
        self.play = make_mode(settings.mode)  # the mode: where call-response, duet and autoplay differ
        self.timebase = self._timebase(t_ns)
        self.held: set[int] = set()  # keys the player holds now
        self.last_human_ns: int | None = None
        self.heard_call = False  # the player played since the last answer
        self.answer: tuple[float, float] | None = None  # (start, end) codec time while answering
        self.first_note = False  # the next decision must start with a note
        self.stopped = False  # stop(): silent until generate()
        self.at_ns = t_ns  # the time of the latest tick or player's event (modes read it)
        self.notes_in = 0
        self.notes_out = 0
        self.decisions = 0
        self._wake: int | None = None
        # "is a player's event or a command waiting?" (the server's inbox): a frame decided
        # ahead is dropped for it and decided again after it, so it does not wait for the frame
        self.interrupt: Callable[[], bool] | None = None
        self.transpose = self._transposition()  # a fixed --key moves the model at once
        self._apply_pitches()

    # --- what is going on ----------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def activity(self) -> str:
        if not self.clock.running:
            return "waiting for clock"
        if self.stopped:
            return "stopped"
        return self.play.activity(self)

    def next_wakeup(self) -> int | None:
        """When :meth:`tick` has something to do next (ns), or None for "whenever"."""
        return self._wake

    def prepare(self) -> bool:
        """Idle time: while listening, let the engine step what an answer would step first (see
        :meth:`Engine.prepare`: the close of the player's frame, or the shifts to the step where
        an answer would start, then woken when that step comes), so an answer starts sooner;
        while playing, let it work its next decision ahead where it can
        (:meth:`Engine.prepare_ahead`: accompany mode). While listening it also works out the key
        prior an answer would start with (:meth:`_warm_key_prior`). True if it did model work."""
        if not self.clock.running:
            return False
        if self.play.listening(self):
            self._warm_key_prior()
            start = self.play.answer_step(self)
            edge = None if start is None else self.timebase.to_ns(start)
            if edge is not None and edge > self.at_ns:
                self._wake_at(edge)
            return self.engine.prepare(start, self.interrupt)
        return self.engine.prepare_ahead(self.interrupt)

    # --- the player ----------------------------------------------------------------------------
    def human_note(self, t_ns: int, pitch: int, velocity: int) -> None:
        t = self.timebase.to_codec(t_ns)
        beat = self._beat(t_ns)
        self.at_ns = max(self.at_ns, t_ns)
        if velocity > 0:
            self.notes_in += 1
            self.held.add(pitch)
            self.last_human_ns = t_ns
            self.heard_call = True
            if self.answer is not None:  # the player came back: stop answering at once
                self._silence(t_ns)
            self.listener.note_on(beat, pitch, velocity)
            self.listener.update_key()
            self._retune(self._transposition())
            heard = self._heard[pitch] = pitch - self.transpose
            if self.play.hears_player:
                self._play(self.engine.human_note_on(t, heard, velocity))
        else:
            if pitch in self.held:
                self.held.discard(pitch)
                self.last_human_ns = t_ns
            self.listener.note_off(beat, pitch)
            heard = self._heard.pop(pitch, pitch - self.transpose)
            if self.play.hears_player:
                self._play(self.engine.human_note_off(t, heard) or [])

    def _beat(self, t_ns: int) -> float:
        beat = self.clock.beat_at(t_ns)
        return float(beat) if beat is not None else 0.0

    def _transposition(self) -> int:
        """What the listener says the model's pitches move by now, as the mode follows it."""
        return self.listener.transpose(register=self.play.follows_register)

    def _retune(self, transpose: int) -> None:
        """Move the model's home keys and register by ``transpose`` semitones (between answers)."""
        if transpose == self.transpose or self.answer is not None:
            return
        old, self.transpose = self.transpose, transpose
        try:
            self._apply_pitches()
        except MusicRNNError:  # the player's range leaves the model no pitch there: stay where it was
            self.transpose = old
            self._apply_pitches()

    def retune(self) -> None:
        """Follow a changed follower setting at once (between answers)."""
        self.listener.update_key()
        self._retune(self._transposition())

    def _apply_pitches(self) -> None:
        """The player's key and range, as the model sees them (moved by ``transpose``)."""
        t, codec = self.transpose, self.engine.codec
        key = None if self.user_key is None else frozenset((p - t) % 12 for p in self.user_key)
        rng = None
        if self.user_range is not None:
            rng = (max(codec.min_pitch, self.user_range[0] - t), min(codec.max_pitch, self.user_range[1] - t))
        elif t:
            rng = (max(codec.min_pitch, codec.min_pitch - t), min(codec.max_pitch, codec.max_pitch - t))  # stay playable
        if rng is not None and rng[0] > rng[1]:
            raise MusicRNNError("the pitch range is outside the model's")
        self.engine.set_pitches(key, rng)

    def set_key(self, pitch_classes: frozenset[int] | None, tonic: int | None = None) -> None:
        """Keep the model's notes in these pitch classes (None: any; the heard key then leads),
        with ``tonic`` as the key's home (the model plays it transposed there)."""
        self.user_key = pitch_classes
        self.listener.fixed_tonic = tonic if pitch_classes is not None else None
        self.listener.update_key()
        self.transpose = self._transposition() if self.answer is None else self.transpose
        self._apply_pitches()

    def set_pitch_range(self, pitch_range: tuple[int, int] | None) -> None:
        self.user_range = pitch_range
        self._apply_pitches()

    def end_call(self, t_ns: int, bars: float | None = None) -> None:
        """The player says the call is over: answer now (call-response only), for ``bars``
        bars (default: the answer length setting)."""
        self.play.end_call(self, t_ns, bars)

    def generate(self, t_ns: int, bars: float | None = None) -> None:
        """Play now: call-response answers (as :meth:`end_call`); duet and autoplay resume
        after :meth:`stop`."""
        self.stopped = False
        self.end_call(t_ns, bars)

    def stop(self, t_ns: int) -> None:
        """End the model's notes and any answer; stay silent until :meth:`generate`."""
        self._silence(t_ns)
        self.stopped = True

    # --- controls ------------------------------------------------------------------------------
    def set_mode(self, mode: str, t_ns: int) -> None:
        """Switch mode (the model's notes end); refused (a one-line error, nothing changed) where
        the model cannot play it (:func:`~musicrnn.live.play_modes.check_fits`)."""
        if check_fits(mode, self.engine.codec) == self.mode:
            return
        self._silence(t_ns)
        play = make_mode(mode)
        play.enter(self, t_ns)
        self.settings.mode, self.play = mode, play
        self.heard_call = False

    def set_answer_bars(self, bars: float) -> None:
        self.settings.answer_bars = float(ANSWER_BARS.check(bars, "answer length (bars)"))

    def panic(self, t_ns: int) -> None:
        """All notes off now; an answer in progress ends."""
        self.scheduler.panic()
        self.engine.release_model_notes(self.timebase.to_codec(t_ns))
        self._played.clear()
        self.answer = None
        self.heard_call = False

    def reset(self, t_ns: int) -> None:
        """Forget the session: notes off, fresh model state, nothing heard."""
        self.scheduler.stop_notes()
        self.engine.reset()
        self.listener.reset()
        self._restart(t_ns)

    def swap_engine(self, engine: Engine, t_ns: int) -> bool:
        """A new model takes over (its codec may differ): notes off, fresh state, the player's
        key and range (the server carries the other settings over). False if the new model has
        no pitch for that key and range: it then plays without them. A model that cannot play
        the session's mode switches it: to accompany for a model with roles, from accompany to
        the first mode for one without."""
        self.scheduler.stop_notes()
        self.engine = engine
        if self.play.needs_roles != bool(engine.codec.roles):
            self.settings.mode = default_mode(engine.codec)
            self.play = make_mode(self.settings.mode)
            self.play.enter(self, t_ns)
        try:
            self._restart(t_ns)
            return True
        except MusicRNNError as exc:
            log.warning("the new model plays without the key and range: %s", exc)
            self.user_key = self.user_range = self.listener.fixed_tonic = None
            self.transpose = 0
            self._apply_pitches()
            return False

    def _restart(self, t_ns: int) -> None:
        self.timebase = self._timebase(t_ns)
        self.answer = None
        self.heard_call = False
        self.held.clear()
        self._heard.clear()
        self._played.clear()
        self._wake = None
        self.transpose = self._transposition()
        self._apply_pitches()

    def _timebase(self, t_ns: int) -> Timebase:
        codec = self.engine.codec
        return Timebase(self.clock, codec.follows_tempo, codec.steps_per_unit, t_ns)

    # --- time passing --------------------------------------------------------------------------
    def tick(self, at_ns: int, now_ns: int | None = None) -> None:
        """Do everything due by ``at_ns`` (``now_ns``: the real time, for lateness)."""
        now = at_ns if now_ns is None else now_ns
        self._wake = None
        self.at_ns = max(self.at_ns, at_ns)
        if not self.clock.running:
            if self.answer is not None or self.engine.model_notes:
                self._silence(at_ns)
            return
        if self.timebase.follow(self.engine.latest, at_ns):  # the DAW jumped: end notes, keep going on the new grid
            self.scheduler.stop_notes()
            self.engine.release_model_notes(self.timebase.to_codec(at_ns))
            self._played.clear()
            self.answer = None
        if self.play.listening(self):
            if self.engine.model_notes and self.answer is None:  # the mode stopped playing by itself (accompany)
                self._play(self.engine.release_model_notes(self.engine.time))
            self._listen(at_ns)
            if self.answer is None:
                return
        self._generate(at_ns, now)

    def _listen(self, at_ns: int) -> None:
        self.engine.catch_up(self.timebase.to_codec(at_ns))
        self._wake_at(at_ns + int(IDLE_WAKE_S * 1e9))
        trigger = self.play.answer_at(self, at_ns)
        if trigger is None:
            return
        if self.clock.beat_at(at_ns) >= trigger - 1e-9:
            self.start_answer(at_ns, trigger)
        else:
            t = self.clock.time_of(trigger)
            if t is not None:
                self._wake_at(t)

    def start_answer(self, t_ns: int, trigger_beat: float, bars: float | None = None) -> None:
        """Answer from the beat after ``trigger_beat`` (or at once: ``answer_start="now"``)
        for ``bars`` bars (default: the answer length setting). The beat is the player's when
        the grid follower heard them play off the clock's beat (beat codecs): the answer's steps
        then fall on the player's beats."""
        tb = self.timebase
        self.listener.hear_grid()
        if self.settings.answer_start == "now":
            start = tb.restart_grid_at(max(self.engine.latest, tb.to_codec(t_ns)), t_ns)
            start_beat = self.clock.beat_at(t_ns)
        else:
            phase = self.listener.beat_phase() if tb.in_beats and self.play.follows_grid else None
            if phase is None:
                start_beat = math.ceil(trigger_beat - 1e-6)
                start = tb.beat_to_codec(start_beat)
            else:
                start_beat = math.ceil(trigger_beat - phase - 1e-6) + phase
                start = tb.step_on(start_beat, self.engine.latest)
        length = self.settings.answer_bars if bars is None else bars
        end = tb.beat_to_codec(start_beat + length * self.settings.beats_per_bar)
        self.listener.start_answer(self.clock.beat_at(tb.to_ns(start) or t_ns) or start_beat)
        self.answer = (start, end)
        self.first_note = True
        self.heard_call = False

    def _end_answer(self) -> None:
        assert self.answer is not None
        self._play(self.engine.release_model_notes(self.answer[1]))
        self.answer = None

    def _generate(self, at_ns: int, now: int) -> None:
        tb = self.timebase
        la = self._lookahead_ns()
        late = int(min(LATE_S, self.engine.late_s) * 1e9)  # never later than the scheduler plays a note
        for _ in range(MAX_DECISIONS_PER_TICK):
            not_before = tb.to_codec(now - late)
            if self.answer is not None:
                not_before = max(not_before, self.answer[0])
            self._bias(not_before)
            t = self.engine.next_time(not_before, self.first_note)
            if self.answer is not None and t >= self.answer[1] - 1e-9:
                self._end_answer()
                self._listen(at_ns)
                return
            t_ns = tb.to_ns(t)
            if t_ns is None:
                return
            if t_ns - la > at_ns:
                self._wake_at(t_ns - la)
                return
            # a grid frame's notes go out as they are sampled; a frame decided ahead gives way
            # to a player's event that is already waiting (it is decided again after it)
            interrupt = self.interrupt if t_ns - now > int(INTERRUPT_AHEAD_S * 1e9) else None
            if self.engine.frames:  # a frame is sampled in decide() (an event was, in next_time())
                self._bias(t)
            deadline = real_now_ns() + (t_ns + late - now)  # on the real clock (tests tick made-up times)
            events = self.engine.decide(self._play_now, interrupt, deadline)
            if events is None:
                self._wake_at(at_ns)
                return
            self.decisions += 1
            if any(e.velocity > 0 for e in events):
                self.first_note = False
            self._play(events)
        self._wake_at(at_ns)  # more is due: come back at once

    def _warm_key_prior(self) -> None:
        """Idle time while listening: work out the key prior an answer would start with, and its
        vector (both cached by value, so nothing can go stale), so the answer's first decision
        only looks them up."""
        prior = self.listener.key_prior(self.transpose)
        if prior is not None:
            self.biases.note(self.engine.codec).prior(prior)

    def _bias(self, t: float) -> None:
        """The followers' nudge (as the mode has it) for a decision at codec time ``t``; the grid
        follower's, for event codecs, is asked at each sample (:meth:`_grid_logits`)."""
        t_ns = self.timebase.to_ns(t)
        nudge = None if t_ns is None else self.play.nudge(self, self._beat(t_ns))
        if nudge is None:
            self.engine.logit_bias = self.engine.time_logits = None
            return
        self.engine.logit_bias = self.biases.note(self.engine.codec)(*nudge)
        li = self.listener
        grid = self.play.follows_grid and li.grid_strength() > 0 and not self.engine.frames
        self.engine.time_logits = self._grid_logits if grid else None

    def _grid_logits(self, t: float, logits: np.ndarray) -> np.ndarray:
        """The grid follower's nudge on a decision at codec time ``t`` (event codecs): time
        shifts ending off the call's grid and note-ons off it lose (see GridBias)."""
        grid, strength = self.listener.grid, self.listener.grid_strength()
        if grid is None or strength <= 0:
            return logits
        codec, tb = self.engine.codec, self.timebase
        if tb.in_beats:
            beat, per_step = t + tb.origin, 1.0 / codec.steps_per_unit
        else:
            t_ns = tb.to_ns(t)
            if t_ns is None:
                return logits
            beat, per_step = self._beat(t_ns), self.clock.bpm / 60.0 / codec.steps_per_unit
        grid_bias = self.biases.grid(codec)
        bias = grid_bias(grid, strength, beat, per_step)
        return logits if bias is None else grid_bias.logits(logits, bias)

    def _lookahead_ns(self) -> int:
        """How long before a decision's time the conductor makes it (negative: after it)."""
        if self.engine.decide_after_s is not None:  # accompany: once the melody of the frame is heard
            return -int(self.engine.decide_after_s * 1e9)
        if self.engine.frames:  # a frame is decided a fraction of a step ahead
            bpm = max(self.clock.bpm, 1e-6)
            step_beats = 1.0 / self.engine.codec.beats_to_steps(1.0, bpm)
            return int(GRID_LOOKAHEAD * step_beats * 60e9 / bpm)
        return int(self.settings.lookahead_s * 1e9)

    # --- output --------------------------------------------------------------------------------
    def _play(self, events: list[NoteEvent]) -> None:
        notes = []
        for e in events:
            t_ns = self._out_ns(e.time)
            if e.velocity > 0:
                codec = self.engine.codec
                pitch = fold_into(e.pitch + self.transpose, codec.min_pitch, codec.max_pitch)
                if t_ns is None:
                    continue
                self._played[e.pitch] = (pitch, t_ns)
                self.listener.answered(e.pitch, pitch, e.velocity)
                notes.append((t_ns, pitch, self.play.velocity(self, e.velocity, self._beat(t_ns))))
                self.notes_out += 1
            else:
                played = self._played.pop(e.pitch, None)
                if played is not None and t_ns is not None:  # never before its (maybe delayed) note-on
                    notes.append((max(t_ns, played[1] + 1), played[0], 0))
        self.scheduler.play(notes)

    def _out_ns(self, t: float) -> int | None:
        """When a model event at codec time ``t`` goes out: then, except that a frame codec's
        (straight grid) off-beat eighths are delayed to the call's swing by the grid follower
        (:meth:`Listener.warp`: later, never earlier, in order)."""
        t_ns = self.timebase.to_ns(t)
        if t_ns is None or not self.engine.frames or not self.play.follows_grid or self.listener.grid_strength() <= 0:
            return t_ns
        beat = self.clock.beat_at(t_ns)
        if beat is None:
            return t_ns
        out = self.clock.time_of(self.listener.warp(beat))
        return t_ns if out is None else max(t_ns, out)

    def _play_now(self, event: NoteEvent) -> None:
        """A note-on the engine hands out in the middle of a decision: to the scheduler at once."""
        self.first_note = False
        self._play([event])

    def _silence(self, t_ns: int) -> None:
        """End the model's notes now (scheduled ones too) and stop any answer."""
        self.scheduler.stop_notes()
        self.engine.release_model_notes(self.timebase.to_codec(t_ns))
        self._played.clear()
        self.answer = None

    def _wake_at(self, t_ns: int) -> None:
        self._wake = t_ns if self._wake is None else min(self._wake, t_ns)
