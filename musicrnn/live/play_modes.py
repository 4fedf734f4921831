"""The live modes, one class each, and their registry: what the model does when.

- **call-response** (:class:`CallResponse`): listen while the player plays; after a silence of
  ``silence_beats`` (no key held, nothing struck) or an end-of-call control, answer for
  ``answer_bars`` bars; stop answering as soon as the player comes back. The model hears the
  player all the time.
- **duet** (:class:`Duet`): play all the time, hearing everything the player plays.
- **autoplay** (:class:`Autoplay`): play alone; the player's notes are not heard (controls
  still steer it).
- **accompany** (:class:`Accompany`): the player plays a melody, the model its accompaniment,
  frame by frame (a model whose codec has roles, e.g. ``--model accompany``; such a model plays
  no other mode: :func:`check_fits`). It rests when the melody has been silent for
  ``answer_bars`` bars and comes in again with the melody's next note.

A mode decides; the :class:`~musicrnn.live.modes.Conductor` does (it owns the clock, the
engine, the answer window and the scheduler) and asks its mode at the few points where modes
differ: :meth:`LiveMode.listening`, :meth:`~LiveMode.answer_at`, :meth:`~LiveMode.end_call`,
:meth:`~LiveMode.answer_step`, :meth:`~LiveMode.enter`, :meth:`~LiveMode.activity`, :meth:`~LiveMode.velocity`,
:attr:`~LiveMode.hears_player`, :attr:`~LiveMode.follows_register`, :attr:`~LiveMode.follows_grid` and
:attr:`~LiveMode.needs_roles`.

Add a mode: a subclass here and its line in :data:`MODE_CLASSES`. The CLI's ``--mode``
choices, the CC ``mode`` control's value ranges, the OSC ``/musicrnn/mode`` choices and
docs/osc.md (regenerate it) follow from the registry. This module imports nothing heavy:
the CLI reads :data:`MODES` at startup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from musicrnn.errors import MusicRNNError

if TYPE_CHECKING:
    from musicrnn.codecs import Codec
    from musicrnn.live.modes import Conductor


class LiveMode:
    """One way of playing. Modes keep no state of their own (the conductor has it all), so a
    switch of mode loses nothing."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""  # a few words: --help and the OSC docs
    hears_player: ClassVar[bool] = True  # does the model hear the player's notes?
    activities: ClassVar[tuple[str, ...]] = ("playing",)  # what :meth:`activity` may say
    follows_register: ClassVar[bool] = True  # may the register follower move the model by octaves?
    follows_grid: ClassVar[bool] = True  # may the grid follower move the model's notes onto a call's grid?
    needs_roles: ClassVar[bool] = False  # True: only a model whose codec has roles plays it (and plays only it)

    def activity(self, c: Conductor) -> str:
        """What the status line shows while the clock runs and the model is not stopped."""
        return "playing"

    def listening(self, c: Conductor) -> bool:
        """Does the model only listen now (no decisions of its own)? Here: while stopped."""
        return c.stopped and c.answer is None

    def answer_at(self, c: Conductor, at_ns: int) -> float | None:
        """While listening: the beat at which to start answering (the conductor answers then,
        or at once if it has passed), or None: not asked to. Here: never."""
        return None

    def end_call(self, c: Conductor, t_ns: int, bars: float | None) -> None:
        """The player says the call is over (an end-of-call control, or ``generate``)."""

    def answer_step(self, c: Conductor) -> float | None:
        """While listening: the codec time an answer would start at if the call ended now, where
        an event codec's engine prepares it (:meth:`Engine.prepare`), or None. Here: none."""
        return None

    def enter(self, c: Conductor, t_ns: int) -> None:
        """The session switches to this mode; the model's notes have ended already."""

    def velocity(self, c: Conductor, model_velocity: int, beat: float) -> int:
        """The velocity a model note struck at ``beat`` plays with (the velocity follower's)."""
        return c.listener.velocity(model_velocity, beat)

    def nudge(self, c: Conductor, beat: float) -> tuple | None:
        """The followers' nudge to the model's note onsets for a decision at ``beat``: (onset
        nats, register tilt, key prior) for :class:`~musicrnn.logit_bias.NoteBias`, or None.
        Here: while answering, the density and motif onsets, the register tilt and the key prior."""
        if c.answer is None:
            return None
        li = c.listener
        return li.onset_bias(beat), li.register_tilt(c.transpose), li.key_prior(c.transpose)


class CallResponse(LiveMode):
    name = "call-response"
    help = "answer after the player stops"
    activities = ("listening", "answering")

    def activity(self, c: Conductor) -> str:
        return "answering" if c.answer else "listening"

    def listening(self, c: Conductor) -> bool:
        return c.answer is None

    def answer_at(self, c: Conductor, at_ns: int) -> float | None:
        """``silence_beats`` after the player's last key went up, once a call was heard."""
        if c.stopped or not c.heard_call or c.held or c.last_human_ns is None:
            return None
        return c.clock.beat_at(c.last_human_ns) + c.settings.silence_beats

    def end_call(self, c: Conductor, t_ns: int, bars: float | None) -> None:
        if c.answer is None and c.clock.running:
            c.start_answer(t_ns, c.clock.beat_at(t_ns), bars)

    def answer_step(self, c: Conductor) -> float | None:
        """With ``answer_start="now"`` (event codecs): the step :meth:`Conductor.start_answer`
        would start on at the latest tick (a frame codec's first note waits for no step)."""
        if c.settings.answer_start != "now" or c.engine.frames or c.stopped:
            return None
        tb = c.timebase
        return tb.step_at_or_after(max(c.engine.latest, tb.to_codec(c.at_ns)))


class Duet(LiveMode):
    name = "duet"
    help = "play along"


class Autoplay(LiveMode):
    name = "autoplay"
    help = "play alone"
    hears_player = False

    def enter(self, c: Conductor, t_ns: int) -> None:
        # the model stops listening: whatever the player holds is over for it
        c.engine.release_human_notes(c.timebase.to_codec(t_ns))


class Accompany(LiveMode):
    """The model plays the accompaniment of the melody the player plays (see
    :mod:`musicrnn.live.accompany`): from the melody's first note (with the key follower on:
    from the note where a key is first heard, a few notes in), every frame, until the melody
    has been silent for ``answer_bars`` bars (no key held); then it rests (the model hears the
    silent frames) until the next melody note. The key follower moves what it hears into its
    home key and its notes back, and its key prior leans new notes towards the key's scale; the
    chords follower leans them towards the chord the melody implies in the current beat; the
    register, density and motif followers do not apply (the accompaniment keeps the place under
    the melody that the model learnt); velocities follow the melody's level
    (:meth:`~musicrnn.listening.Listener.accompaniment_velocity`)."""

    name = "accompany"
    help = "play the accompaniment of the player's melody (a model with roles)"
    activities = ("listening", "accompanying")
    follows_register = False
    follows_grid = False  # its frames are the beat's; a melody's swing must not delay them past the beat
    needs_roles = True

    def activity(self, c: Conductor) -> str:
        return "listening" if self.resting(c) else "accompanying"

    def listening(self, c: Conductor) -> bool:
        return c.stopped or self.resting(c)

    @staticmethod
    def resting(c: Conductor) -> bool:
        """No melody yet, no key heard yet while the key is followed (the model would play in its
        home key under a melody in another), or no melody for ``answer_bars`` bars (no key held)."""
        li = c.listener
        if li.follow.key > 0 and li.fixed_tonic is None and li.key is None:
            return True
        if c.held:
            return False
        if c.last_human_ns is None:
            return True
        rest = c.settings.answer_bars * c.settings.beats_per_bar
        return c.clock.beat_at(c.at_ns) - c.clock.beat_at(c.last_human_ns) >= rest

    def velocity(self, c: Conductor, model_velocity: int, beat: float) -> int:
        return c.listener.accompaniment_velocity(model_velocity)

    def nudge(self, c: Conductor, beat: float) -> tuple | None:
        """The key prior (the heard key's scale and hierarchy) plus the chords follower's (the
        chord the melody implies in this beat so far): density, motif and register follow a
        call, not a melody to accompany."""
        import numpy as np

        key = c.listener.key_prior(c.transpose)
        chord = c.listener.chord_prior(c.transpose, beat)
        if chord is None:
            return None if key is None else (0.0, 0.0, key)
        both = chord + (np.asarray(key, np.float32) if key is not None else 0.0)
        return 0.0, 0.0, tuple(round(float(x), 3) for x in both)


# The order is the mode CC's split (4 equal ranges): accompany second keeps the values 0, 64
# and 127 on call-response, duet and autoplay, as before it came.
MODE_CLASSES: dict[str, type[LiveMode]] = {m.name: m for m in (CallResponse, Accompany, Duet, Autoplay)}
MODES: tuple[str, ...] = tuple(MODE_CLASSES)


def check_mode(name: str) -> str:
    """``name`` if it is a live mode, else a one-line :class:`MusicRNNError`."""
    if name not in MODE_CLASSES:
        raise MusicRNNError(f"unknown mode {name!r}; choose {', '.join(MODES)}")
    return name


def make_mode(name: str) -> LiveMode:
    return MODE_CLASSES[check_mode(name)]()


def check_fits(name: str, codec: Codec, model: str = "this model") -> str:
    """``name`` if ``model`` (of ``codec``) can play that mode, else a one-line
    :class:`MusicRNNError`: a model whose codec has roles plays accompany mode only, and
    accompany mode needs such a model."""
    mode = MODE_CLASSES[check_mode(name)]
    roles = bool(codec.roles)
    if mode.needs_roles and not roles:
        raise MusicRNNError(f"mode {name} needs a model with melody and accompaniment roles, and {model} ({codec.name} "
                            f"codec) has none; load one (--model accompany, or /musicrnn/load), or choose another mode")
    if roles and not mode.needs_roles:
        only = default_mode(codec)
        raise MusicRNNError(f"{model} ({codec.name} codec, roles {', '.join(codec.roles)}) plays mode {only} only, not "
                            f"{name}; use mode {only} (--mode {only}, or leave --mode out), or load a model without "
                            f"roles for {name}")
    return name


def default_mode(codec: Codec) -> str:
    """The mode a session with this model starts in when none is named: accompany for a model
    with roles (the only one it plays), else the first mode."""
    if codec.roles:
        return next(m.name for m in MODE_CLASSES.values() if m.needs_roles)
    return MODES[0]


def modes_help() -> str:
    """``"call-response: answer after the player stops; accompany: ...; duet: play along; autoplay: play alone."``"""
    return "; ".join(f"{m.name}: {m.help}" for m in MODE_CLASSES.values()) + "."


def activities() -> tuple[str, ...]:
    """Every activity a session may report, in order: the modes', then stopped and waiting for clock."""
    seen = [a for m in MODE_CLASSES.values() for a in m.activities]
    return tuple(dict.fromkeys(seen + ["stopped", "waiting for clock"]))
