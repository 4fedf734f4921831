"""``musicrnn serve``'s session: MIDI and OSC in -> model -> MIDI and OSC out, in time, with no
note left hanging. This module wires the parts together and is the control API.

Holds:
- :class:`ServeOptions`: every setting of a session (ports, OSC, mode, tempo, clock, channel, ...).
- :class:`Server`: opens the ports, builds the engine, conductor and scheduler, and is the
  control API that every transport uses (MIDI CC and OSC): ``note_on``, ``note_off``,
  ``control`` (any control of :mod:`musicrnn.live.control_table` by name) and one method per
  control (``end_call``, ``generate``, ``stop``, ``set_mode``, ``set_temperature``, ``set_top_p``,
  ``set_key``, ``set_pitch_range``, ``set_follow``, ``set_velocity``, ``set_answer_bars``,
  ``set_density``, ``set_tempo``, ``panic``, ``reset``), and ``load_model``, ``learn``,
  ``status``, ``request_status`` and ``watch`` (status changes).

Elsewhere: the inbox and the threads that work it off (:mod:`musicrnn.live.inbox`, which draws
the threads and queues), the terminal app that runs a session until Ctrl-C
(:mod:`musicrnn.live.terminal`), the controls themselves (:mod:`musicrnn.live.control_table`).

Shutdown (signal, error, or normal end) always runs :meth:`Server.close`: the inputs (MIDI,
OSC) close, the engine thread stops, the scheduler ends every sounding note (MIDI and OSC),
then the outputs close.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import mido

from musicrnn.errors import MusicRNNError
from musicrnn.inference import stepper_for
from musicrnn.limits import MAX_NOTE_BEATS, PITCH, check_tempo
from musicrnn.listening import Follow, Listener
from musicrnn.live import midi_ports
from musicrnn.live.accompany import engine_class
from musicrnn.live.clock import Clock, InternalClock, MidiClock, now_ns
from musicrnn.live.control_table import CONTROLS as TABLE
from musicrnn.live.control_table import key_name, key_tonic, lookup, status_values, watched
from musicrnn.live.controls import CONTROLS, ControlChange, ControlMap
from musicrnn.live.engine import Engine, configure_torch_for_live
from musicrnn.live.inbox import Inbox, Worker
from musicrnn.live.modes import Conductor, Settings
from musicrnn.live.play_modes import check_fits
from musicrnn.live.scheduler import ECHO_WINDOW_S, EchoFilter, Scheduler
from musicrnn.sample import SamplingConfig

log = logging.getLogger("musicrnn.live")

FLUSH_S = 0.03  # after the last note-offs, let the MIDI system deliver them before the port closes
SWITCH_INTERVAL_S = 0.001  # the scheduler thread gets the interpreter within ~1 ms of its wake-up
CLOCK_TYPES = ("clock", "start", "stop", "continue", "songpos")
NOTE_TYPES = ("note_on", "note_off")


@dataclass
class ServeOptions:
    quantize: str = "none"  # "int8": int8 weights for faster model steps on CPU (see musicrnn.inference.quantized)
    midi_in: str = "virtual"  # a port name (or a unique part of one), virtual, or none
    midi_out: str = "virtual"
    midi_api: str = "auto"  # auto | alsa | jack | coremidi | windows
    port_name: str = "musicrnn"  # virtual ports are "<port_name> in" and "<port_name> out"
    mode: str = TABLE["mode"].default  # type: ignore[assignment]
    tempo: float = TABLE["tempo"].default  # type: ignore[assignment]  # BPM of the internal clock (and the guess until MIDI clock arrives)
    clock: str = "internal"  # internal | midi (follow MIDI clock on the input)
    channel: int = 1  # MIDI channel of our notes, 1-16
    silence_beats: float = 2.0
    answer_bars: float = TABLE["answer_bars"].default  # type: ignore[assignment]
    beats_per_bar: float = 4.0
    answer_start: str = "next-beat"
    max_note_beats: float = MAX_NOTE_BEATS  # no model note lasts longer (the scheduler cuts at this, at the start tempo)
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    cc: dict[str, int] = field(default_factory=dict)  # control -> CC number, over the defaults
    learn: str | None = None  # bind the first CC that arrives to this control
    echo_window_s: float = ECHO_WINDOW_S
    osc_port: int | None = None  # UDP port for OSC control (None = no OSC; 0 = any free port)
    osc_host: str = "127.0.0.1"  # interface OSC listens on; another one only when asked
    osc_allow: tuple[str, ...] = ()  # client addresses or networks allowed to send OSC (empty = any that can reach it)
    follow: Follow = field(default_factory=Follow)  # what the answers follow of the player (key, register, ...)

    def validate(self) -> None:
        if self.clock not in ("internal", "midi"):
            raise MusicRNNError(f"clock must be internal or midi, not {self.clock!r}")
        if self.clock == "midi" and self.midi_in == "none":
            raise MusicRNNError("--clock midi follows the MIDI input; give --midi-in (a port or virtual)")
        check_tempo(self.tempo)
        # the start values pass the same checks as the live controls
        sampling = self.sampling
        for name, value in (("temperature", sampling.temperature), ("top_p", sampling.top_p),
                            ("density", sampling.max_polyphony)):
            lookup(name).check(value)
        if not 1 <= self.channel <= 16:
            raise MusicRNNError(f"MIDI channel must be 1-16, not {self.channel}")
        if self.max_note_beats <= 0:
            raise MusicRNNError("the maximum note length must be positive")
        if self.osc_port is not None and not 0 <= self.osc_port <= 65535:
            raise MusicRNNError(f"OSC port must be 0-65535 (0 = any free port), not {self.osc_port}")
        if self.osc_allow and self.osc_port is None:
            raise MusicRNNError("--osc-allow limits who may send OSC; give --osc-port too")
        Settings(self.mode, self.silence_beats, self.answer_bars, self.beats_per_bar, self.answer_start).validate()

    def check_reachable(self) -> None:
        """A session run on its own (``musicrnn serve``) must hear or play through something;
        a Python caller of :class:`Server` drives it through the control API instead."""
        if self.midi_in == "none" and self.midi_out == "none" and self.osc_port is None:
            raise MusicRNNError("with --midi-in none and --midi-out none the server can neither hear nor play; "
                                "give --osc-port (e.g. --osc-port 9000 for OSC only) or a MIDI port "
                                "(--midi-in/--midi-out virtual or a port name)")


class Server:
    """A live session. ``start()`` it, talk to it from any thread, and always ``close()`` it
    (or use ``with Server(...) as s:``). ``output`` replaces the MIDI output port (tests)."""

    def __init__(self, checkpoint, options: ServeOptions | None = None, output=None) -> None:
        self.options = opts = options or ServeOptions()
        opts.validate()
        self.checkpoint = checkpoint
        self.model_name = str(getattr(checkpoint, "path", "model"))
        self._given_output = output
        self.input_port = None
        self.output_port = None
        self.api: str | None = None
        self.inbox = Inbox()
        self.echo = EchoFilter(opts.echo_window_s)
        self.controls = ControlMap(opts.cc)
        if opts.learn:
            self.controls.learn(opts.learn)
        self.clock: Clock = MidiClock(opts.tempo) if opts.clock == "midi" else InternalClock(opts.tempo)
        self.scheduler: Scheduler | None = None
        self.conductor: Conductor | None = None
        self.events: deque[str] = deque(maxlen=20)  # recent things worth telling the user
        self.worker = Worker(self.inbox, self._handle, self._publish, self.events)
        self._closed = False
        self._status: dict = {}
        self._watchers: list[Callable[[dict], None]] = []
        self._watched: tuple | None = None
        self._old_switch = sys.getswitchinterval()
        self.key_name = key_name(opts.sampling.key)
        self.osc = None  # the OSC server (musicrnn.live.osc_server.OscServer) when options.osc_port is set

    # --- life cycle ----------------------------------------------------------------------------
    def start(self) -> Server:
        opts = self.options
        configure_torch_for_live()
        engine = self._make_engine(self.checkpoint)
        check_fits(opts.mode, engine.codec, self.model_name)  # e.g. accompany needs a model with roles
        try:
            sinks = []
            if opts.osc_port is not None:
                from musicrnn.live.osc_server import OscServer

                self.osc = OscServer(self, opts.osc_host, opts.osc_port, opts.osc_allow)
                sinks.append(self.osc.notes)
            self._open_ports()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
            beat_s = 60.0 / opts.tempo
            self.scheduler = Scheduler(self.output_port, opts.channel - 1, max_note_s=opts.max_note_beats * beat_s,
                                       on_sent=self.echo.sent, sinks=sinks).start()
            settings = Settings(opts.mode, opts.silence_beats, opts.answer_bars, opts.beats_per_bar, opts.answer_start)
            listener = Listener(follow=replace(opts.follow), fixed_tonic=key_tonic(opts.sampling.key))
            self.conductor = Conductor(engine, self.scheduler, self.clock, settings, now_ns(), listener)
            self.conductor.interrupt = self.inbox.waiting
            self._publish()
            self.worker.start(self.conductor)
            if self.osc is not None:
                self.osc.start()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything; every note-on sent gets its note-off first (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.worker.halt()
        if self.input_port is not None:
            _quiet_close(self.input_port)
        if self.osc is not None:
            self.osc.stop_input()
        self.worker.join(5.0)
        if self.scheduler is not None:
            self.scheduler.close()
            if self.scheduler.stats["notes_on"]:
                time.sleep(FLUSH_S)
        if self.output_port is not None and self._given_output is None:
            _quiet_close(self.output_port)
        if self.osc is not None:
            self.osc.close()  # after the scheduler: the last note-offs went out on its socket
        sys.setswitchinterval(self._old_switch)

    @property
    def running(self) -> bool:
        return self.worker.running

    @property
    def error(self) -> BaseException | None:
        """What stopped the session by itself (None while it plays, or after a clean close)."""
        return self.worker.error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops by itself (an error); True if it did."""
        return self.worker.wait(timeout)

    def working_here(self):
        """For input threads: do the engine's work for what they queue in this block, in their
        own thread (see :meth:`Worker.working_here <musicrnn.live.inbox.Worker.working_here>`)."""
        return self.worker.working_here()

    def _open_ports(self) -> None:
        opts = self.options
        needs_api = opts.midi_in != "none" or (opts.midi_out != "none" and self._given_output is None)
        self.api = midi_ports.choose_api(opts.midi_api) if needs_api else None
        if self._given_output is not None:
            self.output_port = self._given_output
        else:
            self.output_port = midi_ports.open_output(opts.midi_out, self.api or "", opts.port_name)
        self.input_port = midi_ports.open_input(opts.midi_in, self.api or "", opts.port_name, self._on_midi,
                                                self.working_here)

    def _make_engine(self, checkpoint, sampling: SamplingConfig | None = None) -> Engine:
        opts = self.options
        sampling = SamplingConfig(**vars(sampling or opts.sampling))
        stepper = stepper_for(checkpoint.model, quantize=opts.quantize)
        return engine_class(checkpoint.codec)(stepper, checkpoint.codec, sampling, opts.seed, opts.max_note_beats)

    def _live_sampling(self) -> SamplingConfig:
        """The sampling settings as the player has them now (the start options, changed live by
        OSC or CC), for a new model: what a model load must not throw away."""
        c = self.conductor
        if c is None:
            return self.options.sampling
        cur = c.engine.cfg  # key and range: the player's (the engine has them moved into the model's home key)
        return replace(self.options.sampling, temperature=cur.temperature, top_p=cur.top_p, key=c.user_key,
                       pitch_range=c.user_range, max_polyphony=cur.max_polyphony)

    # --- input thread --------------------------------------------------------------------------
    def _on_midi(self, msg: mido.Message, t: int | None = None) -> None:
        """One message from the MIDI input (its reader thread, inside :meth:`working_here`)."""
        t = now_ns() if t is None else t
        kind = msg.type
        if kind in CLOCK_TYPES:
            if isinstance(self.clock, MidiClock):
                self.clock.feed(kind, t, getattr(msg, "pos", None))
                self.inbox.wake()
            return
        if kind in NOTE_TYPES or kind == "control_change":
            if self.echo.is_echo(msg, t):
                return
            self.inbox.put_event(t, msg, self.worker.notify)

    # --- the control API (any thread) ----------------------------------------------------------
    def note_on(self, pitch: int, velocity: int = 100, channel: int = 0) -> None:
        PITCH.check(pitch, "pitch")
        self.inbox.put_event(now_ns(), mido.Message("note_on", channel=channel, note=pitch, velocity=max(1, min(velocity, 127))),
                             self.worker.notify)

    def note_off(self, pitch: int, channel: int = 0) -> None:
        PITCH.check(pitch, "pitch")
        self.inbox.put_event(now_ns(), mido.Message("note_off", channel=channel, note=pitch), self.worker.notify)

    def control(self, name: str, *values) -> None:
        """Any control of :mod:`musicrnn.live.control_table` by name: its values are checked
        here, in the caller's thread (a one-line :class:`MusicRNNError`, nothing changed), then
        it takes effect in the engine thread, in order with everything sent before it."""
        row = lookup(name)
        checked = row.check(*values)
        if row.check_now is not None:
            row.check_now(self, *checked)
        self._command(lambda c: row.apply(self, c, now_ns(), *checked))

    def end_call(self) -> None:
        self.control("end_call")

    def generate(self, bars: float | None = None) -> None:
        """Play now: call-response answers (for ``bars`` bars, default the answer length);
        duet and autoplay resume after :meth:`stop`."""
        self.control("generate", bars)

    def stop(self) -> None:
        """The model's notes end and it stays silent (still listening) until :meth:`generate`."""
        self.control("stop")

    def set_mode(self, mode: str) -> None:
        self.control("mode", mode)

    def check_mode(self, mode: str) -> None:
        """Refuse at once (in the caller's thread) a mode the session's model cannot play."""
        if self.conductor is not None:
            check_fits(mode, self.conductor.engine.codec, self.model_name)

    def set_temperature(self, value: float) -> None:
        self.control("temperature", value)

    def set_top_p(self, value: float) -> None:
        self.control("top_p", value)

    def set_key(self, key: str | None) -> None:
        """Keep the model's new notes in ``key`` (e.g. ``"A:minor"``); None or ``"any"`` = no key."""
        self.control("key", "any" if key is None else key)

    def set_pitch_range(self, lo: int, hi: int) -> None:
        """Keep the model's new notes within MIDI pitches ``lo``-``hi``."""
        self.control("range", lo, hi)

    def set_follow(self, name: str, strength: float) -> None:
        """How strongly the answers follow the player's ``name`` (key, register, velocity, density,
        motif, grid): 0 = off, 1 = full."""
        self.control("follow", name, strength)

    def set_velocity(self, how: str) -> None:
        """follow (the player's dynamics), model (the model's own) or a fixed velocity 1-127."""
        self.control("velocity", how)

    def set_density(self, max_polyphony: int) -> None:
        self.control("density", max_polyphony)

    def set_answer_bars(self, bars: float) -> None:
        self.control("answer_bars", bars)

    def set_tempo(self, bpm: float) -> None:
        self.control("tempo", bpm)

    def panic(self) -> None:
        self.control("panic")

    def reset(self) -> None:
        self.control("reset")

    def check_pitches(self, **change) -> None:
        """Refuse at once (in the caller's thread) a key/range that leaves the model no pitch."""
        engine = self.conductor.engine if self.conductor else None
        if engine is not None:
            replace(engine.cfg, **change).validate(engine.codec)

    def learn(self, name: str) -> None:
        """The next CC that arrives drives control ``name``."""
        if name not in CONTROLS:
            raise MusicRNNError(f"unknown control {name!r}; controls: {', '.join(CONTROLS)}")
        self._command(lambda c: self.controls.learn(name))

    def load_model(self, path: str | Path, on_done: Callable[[dict, bool], None] | None = None) -> None:
        """Load a checkpoint (here, in the caller's thread) and swap it in: notes off, fresh state;
        the player's temperature, top-p, density, key and range stay. Only a regular file (or a
        run folder) is read, and only through the safe loader (``weights_only=True``); the
        model's codec must be one live play knows and leave pitches for the session's key and
        range (else it is refused and the old model plays on). A model with roles switches the
        session to accompany mode (the only one it plays); one without switches an accompany
        session to the first mode. ``on_done(status, told)`` runs in the engine thread once the
        new model plays; ``told``: the status watchers heard of it already (so a reply would
        repeat it)."""
        from musicrnn.checkpoint import load_checkpoint

        p = Path(path)
        if p.exists() and not (p.is_file() or p.is_dir()):
            raise MusicRNNError(f"{p}: not a regular file; give a checkpoint (.pt) or a run folder")
        ckpt = load_checkpoint(p)
        engine = self._make_engine(ckpt, self._live_sampling())  # refuses settings the new model cannot honour

        def swap(c: Conductor) -> None:
            _carry_settings(c.engine, engine)  # what changed since the snapshot (controls sent before the load)
            mode = c.mode
            if not c.swap_engine(engine, now_ns()):
                self.key_name = key_name(c.user_key)
            self.model_name = str(ckpt.path)
            self.events.append(f"model {ckpt.path}")
            if c.mode != mode:  # a model with roles plays accompany only, and only it does
                self.events.append(f"mode {c.mode}: the only mode {ckpt.path.name} plays" if engine.codec.roles
                                   else f"mode {c.mode}: {ckpt.path.name} has no roles to accompany with")
            told = self._publish()
            if on_done is not None:
                _safely(lambda s: on_done(s, told), self.status())

        self._command(swap)

    def status(self) -> dict:
        """A snapshot: mode, activity, tempo and clock source, notes in/out, model step time..."""
        s = dict(self._status)
        sched = self.scheduler
        s.update(
            tempo=round(self.clock.bpm, 2), clock=self.clock.source, clock_running=self.clock.running,
            dropped_input=self.inbox.dropped, echoes=self.echo.echoes, learning=self.controls.learning,
            sounding=sched.sounding if sched else 0, notes_sent=sched.stats["notes_on"] if sched else 0,
            late=sched.stats["late"] if sched else 0, error=str(self.error) if self.error else None,
        )
        return s

    def request_status(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(status)`` (in the engine thread) once every control sent before
        this one has taken effect."""

        def answer(c: Conductor) -> None:
            self._publish()
            _safely(callback, self.status())

        self._command(answer)

    def watch(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(status)`` (in the engine thread) whenever mode, activity, tempo,
        model or a sampling setting changes. Call before :meth:`start`."""
        self._watchers.append(callback)

    def _command(self, fn: Callable[[Conductor], None]) -> None:
        if self._closed:
            raise MusicRNNError("the server is closed")
        if not self.inbox.put_command(lambda: fn(self.conductor), self.worker.notify):  # type: ignore[arg-type]
            raise MusicRNNError("too many control requests at once; try again")

    # --- what an event does (engine thread, or the input thread working here) -----------------
    def _handle(self, t: int, msg: mido.Message) -> None:
        c = self.conductor
        assert c is not None
        if msg.type == "control_change" and msg.control in (120, 123):
            # the player's All Sound Off / All Notes Off: every key is up, even if a note-off was lost
            for pitch in sorted(c.held):
                c.human_note(t, pitch, 0)
        if msg.type == "note_on" and msg.velocity > 0:
            c.human_note(t, msg.note, msg.velocity)
        elif msg.type in NOTE_TYPES:
            c.human_note(t, msg.note, 0)
        elif msg.type == "control_change":
            change = self.controls.handle(msg.control, msg.value)
            if change is not None:
                self._apply_control(change, t)

    def _apply_control(self, change: ControlChange, t: int) -> None:
        """A CC moved: do what the control's row says (the value is in range by construction)."""
        if change.name == "learned":
            name, cc = change.value  # type: ignore[misc]
            self.events.append(f"learned: CC {cc} -> {name} (next time: --cc {name}={cc})")
            log.warning("learned: CC %d -> %s (next time: --cc %s=%d)", cc, name, name, cc)
            return
        row = CONTROLS[change.name]
        try:
            row.apply(self, self.conductor, t, *(() if row.cc_value is None else (change.value,)))
        except MusicRNNError as exc:  # e.g. the mode CC on a mode this model cannot play: told (once a sweep), nothing changed
            if not self.events or self.events[-1] != f"refused: {exc}":
                self.events.append(f"refused: {exc}")
                log.warning("%s", exc)

    def _publish(self) -> bool:
        """Refresh the status; tell the watchers if something they show changed (True if told)."""
        c = self.conductor
        assert c is not None
        med, worst = c.engine.step_ms()
        self._status = {
            "activity": c.activity, "notes_in": c.notes_in, "notes_out": c.notes_out, "step_ms": round(med, 3),
            "step_max_ms": round(worst, 3), "model": self.model_name, "codec": c.engine.codec.name, "steps": c.engine.steps,
            "transpose": c.transpose, **{f"heard_{k}": v for k, v in c.listener.heard().items()},
            **status_values(self, c),  # every control's value (musicrnn.live.control_table)
        }
        if self._watchers:
            s = self._status
            now = (s["activity"], s["model"], s["heard_key"], *watched(s))
            if now != self._watched:
                self._watched = now
                status = self.status()
                for fn in self._watchers:
                    _safely(fn, status)
                return True
        return False


def _safely(fn: Callable[[dict], None], status: dict) -> None:
    """Run a status callback in the engine thread: whatever it does wrong, the music goes on."""
    try:
        fn(status)
    except Exception as exc:
        log.error("status callback %s: %s", getattr(fn, "__name__", fn), exc)


def _carry_settings(old: Engine, new: Engine) -> None:
    """The player's live sampling settings from the engine that played to the one that takes
    over (key and range live in the conductor, which gives them to the new engine)."""
    new.set_temperature(old.cfg.temperature)
    new.set_top_p(old.cfg.top_p)
    new.set_density(old.cfg.max_polyphony)


def _quiet_close(port) -> None:
    try:
        port.close()
    except Exception as exc:  # closing must never stop the rest of the shutdown
        log.error("closing %s: %s", getattr(port, "name", "port"), exc)


