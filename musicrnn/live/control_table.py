"""Every live control of ``musicrnn serve`` in one table; the transports and docs are made from it.

A control is one row (:class:`Control`): its name, help, arguments (type and range or choices,
:class:`Arg`), the one check of its values (each range a :class:`~musicrnn.limits.Limit` of
:mod:`musicrnn.limits`, plus ``validate`` for what ranges cannot say), the start value and
``serve`` flag, what it does to the session (``apply``, in the engine thread), the server
method that is its Python API, its MIDI CC (default number and what a CC value 0-127 means),
its OSC address and its status field. Made from the table:

- the MIDI CC map and ``--cc``/``--learn`` (:mod:`musicrnn.live.controls`: rows with a ``cc``);
- the OSC routes of the controls and the ``/musicrnn/status`` arguments (:mod:`musicrnn.live.osc`),
  and so docs/osc.md;
- the server's control API (:meth:`Server.control <musicrnn.live.server.Server.control>`:
  check, refuse at once, queue ``apply``) and its status message (``status``/``read``);
- ``serve``'s ``--learn`` and ``--mode`` choices and its CC help (musicrnn/cli/live.py).

Add a control: a row here (its ``apply`` calls the conductor or engine method that does it;
write that method if it is new behaviour), a one-line method on ``Server`` named by ``method``,
then ``python -m musicrnn.live.osc --write-docs``. A status value is appended to :data:`STATUS_ARGS`
(clients read ``/musicrnn/status`` by position). This module imports nothing heavy (the CLI
reads it at startup); what needs numpy or torch is imported where it is used.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from musicrnn.errors import MusicRNNError
from musicrnn.limits import (
    ANSWER_BARS,
    DENSITY,
    FOLLOW_STRENGTH,
    PITCH,
    TEMPERATURE,
    TEMPO,
    TOP_P,
    Limit,
)
from musicrnn.live.play_modes import MODES, activities, modes_help

MAX_STRING = 4096  # longest string argument (a path) we look at


class ArgError(MusicRNNError):
    """A value that does not fit a control's (or an OSC message's) argument."""


@dataclass(frozen=True)
class Arg:
    """One typed value a control (or OSC message) takes: int, float or str, in ``range`` or
    one of ``choices``."""

    name: str
    kind: str  # int | float | str
    help: str
    range: Limit | None = None
    choices: Sequence[str] = ()
    optional: bool = False

    def check(self, value: Any, label: str | None = None) -> int | float | str:
        """``value`` as this argument takes it, or :class:`ArgError` (naming ``label`` or the
        argument). Ints may arrive as floats (Pure Data sends floats): 60.0 is 60, 60.5 is refused."""
        name = label or self.name
        if self.kind == "str":
            if not isinstance(value, str):
                raise ArgError(f"{name} must be a string (symbol), not {_show(value)}")
            if len(value) > MAX_STRING:
                raise ArgError(f"{name} is longer than {MAX_STRING} characters")
            if self.choices and value not in self.choices:
                raise ArgError(f"{name} must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgError(f"{name} must be a number, not {_show(value)}")
        if not math.isfinite(value):
            raise ArgError(f"{name} must be a finite number, not {value}")
        if self.kind == "int":
            if value != round(value):
                raise ArgError(f"{name} must be a whole number, not {value}")
            value = int(round(value))
        else:
            value = float(value)
        if self.range is not None:
            try:
                self.range.check(value, name)
            except MusicRNNError as exc:
                raise ArgError(str(exc)) from None
        return value

    @property
    def range_text(self) -> str:
        if self.choices:
            return " \\| ".join(self.choices)
        return self.range.text() if self.range is not None else ""


def _same(value: object) -> object:
    return value


@dataclass(frozen=True)
class Control:
    """One live control. ``apply(session, conductor, t_ns, *values)`` runs in the engine thread
    with the values ``check`` returned; ``session`` is the :class:`~musicrnn.live.server.Server`."""

    name: str  # --cc/--learn name, and the key of CONTROLS
    help: str  # what it does (docs/osc.md)
    apply: Callable[..., None]
    method: str  # the Server method that is its Python API (OSC calls it)
    args: tuple[Arg, ...] = ()
    what: str = ""  # how messages name the value (default: the name)
    validate: Callable[..., tuple] | None = None  # checked args -> what apply takes (beyond each Arg's range)
    check_now: Callable[..., None] | None = None  # (session, *values): what the session cannot take, refused at once
    osc: str | None = None  # OSC address under /musicrnn; None: not over OSC
    cc: int | None = None  # default MIDI CC number; None: not on CC
    cc_value: Callable[[int], object] | None = None  # CC value 0-127 -> the value; None: a switch (fires at >= 64)
    cc_help: str = ""
    cli: str | None = None  # serve's option for the start value
    default: object = None  # the start value (serve's default)
    status: str | None = None  # its key in Server.status()
    read: Callable[[Any, Any], object] | None = None  # (session, conductor) -> the status value
    watch: Callable[[object], object] = _same  # the part of the status value whose change is news

    def check(self, *values: Any) -> tuple:
        """The control API's values -> what ``apply`` takes, or one-line :class:`MusicRNNError`:
        the one check of this control, whoever sends it (Python, OSC)."""
        required = sum(not a.optional for a in self.args)
        if not required <= len(values) <= len(self.args):
            want = f"{required}" if required == len(self.args) else f"{required}-{len(self.args)}"
            raise ArgError(f"{self.name} takes {want} value{'' if want == '1' else 's'}, got {len(values)}")
        label = (self.what or self.name) if len(self.args) == 1 else None
        checked = tuple(None if v is None and a.optional else a.check(v, label)
                        for a, v in zip(self.args, values))
        checked += (None,) * (len(self.args) - len(values))
        return self.validate(*checked) if self.validate else checked


# --- the values a CC sends (0-127) --------------------------------------------------------------
def _cc_temperature(v: int) -> float:
    return round(2.0 * v / 127, 3)  # 64 is about 1.0 (the model as trained); 0 = always the likeliest


def _cc_answer_bars(v: int) -> int:
    return 1 + round(v * 15 / 127)  # 1-16 bars


def _cc_density(v: int) -> int:
    return 0 if v == 127 else 1 + v * 12 // 127  # most notes at once: 1-12, top = no limit


def _cc_mode(v: int) -> str:
    return MODES[min(v * len(MODES) // 128, len(MODES) - 1)]


def _cc_mode_help() -> str:
    """``"0-31 call-response, 32-63 accompany, 64-95 duet, 96-127 autoplay"`` (the inverse of :func:`_cc_mode`)."""
    n = len(MODES)
    return ", ".join(f"{-(-i * 128 // n)}-{-(-(i + 1) * 128 // n) - 1} {m}" for i, m in enumerate(MODES))


# --- checks beyond one argument's range (the limits are musicrnn.limits') -----------------------
def _check_range(lowest: int, highest: int) -> tuple:
    if lowest > highest:
        raise ArgError(f"lowest ({lowest}) is above highest ({highest})")
    return lowest, highest


def _check_key(key: str | None) -> tuple:
    """``"A:minor"`` -> (name, pitch classes); None or any/none/off -> (None, None)."""
    if key is None or key.lower() in ("any", "none", "off"):
        return None, None
    from musicrnn.sample import parse_key

    return key, parse_key(key)


def _check_follow(name: str, strength: float) -> tuple:
    from musicrnn.listening import Follow

    Follow().set(name, strength)  # the followers' own check (names and strength)
    return name, strength


def _check_velocity(how: str) -> tuple:
    from musicrnn.listening import parse_velocity

    return parse_velocity(how)


def _internal_clock(session, bpm: float) -> None:
    from musicrnn.live.clock import InternalClock

    if not isinstance(session.clock, InternalClock):
        raise MusicRNNError("the tempo follows MIDI clock; change it in the DAW (or serve with --clock internal)")


# --- what the controls do (engine thread) -------------------------------------------------------
def _set_key(session, c, t: int, name: str | None, pcs: frozenset[int] | None) -> None:
    c.set_key(pcs, key_tonic(pcs))
    session.key_name = name


def _set_follow(session, c, t: int, name: str, strength: float) -> None:
    c.listener.follow.set(name, strength)
    c.retune()


def _set_velocity(session, c, t: int, strength: float | None, fixed: int) -> None:
    if strength is not None:
        c.listener.follow.velocity = strength
    c.listener.follow.fixed_velocity = fixed


def _pitch_range(session, c) -> tuple[int, int]:
    codec = c.engine.codec
    return c.user_range or (codec.min_pitch, codec.max_pitch)


class _Followers(Sequence[str]):
    """The followers' names (musicrnn.listening.FOLLOWERS), looked up when first needed: the
    CLI imports this table at startup and need not import numpy for it."""

    def _names(self) -> tuple[str, ...]:
        from musicrnn.listening import FOLLOWERS

        return FOLLOWERS

    def __getitem__(self, i):  # type: ignore[override]
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


BARS = "answer length in bars (default: `length`)"

# The table. Order: the OSC docs' order of these routes.
CONTROLS: dict[str, Control] = {c.name: c for c in (
    Control("end_call", "Answer now (the end of the call).", lambda s, c, t: c.end_call(t), "end_call",
            cc=24, cc_help="switch: answer now (end of the call)"),
    Control("generate", "Play now. call-response: answer at once (as the end-of-call control; starts on the next beat "
            "unless serve runs with `--answer-start now`). duet/autoplay: resume after `stop`.",
            lambda s, c, t, bars=None: c.generate(t, bars), "generate",
            (Arg("bars", "float", BARS, ANSWER_BARS, optional=True),), what="answer length (bars)", osc="generate"),
    Control("stop", "The model's notes end and it stays silent (still listening) until `generate`.",
            lambda s, c, t: c.stop(t), "stop", osc="stop"),
    Control("panic", "All notes off now (also All Notes Off on MIDI); an answer in progress ends.",
            lambda s, c, t: c.panic(t), "panic", osc="panic", cc=25, cc_help="switch: all notes off now"),
    Control("reset", "Forget the session (fresh model state); all notes off.", lambda s, c, t: c.reset(t), "reset",
            osc="reset", cc=26, cc_help="switch: forget the session (fresh model state), all notes off"),
    Control("mode", modes_help(), lambda s, c, t, mode: c.set_mode(mode, t), "set_mode",
            (Arg("mode", "str", "what the model does", choices=MODES),), check_now=lambda s, mode: s.check_mode(mode),
            osc="mode",
            cc=23, cc_value=_cc_mode, cc_help=_cc_mode_help(), cli="--mode", default=MODES[0],
            status="mode", read=lambda s, c: c.mode),
    Control("temperature", "Sampling temperature.", lambda s, c, t, v: c.engine.set_temperature(v), "set_temperature",
            (Arg("value", "float", "1 = as trained; lower safer, higher wilder; 0 = always the likeliest", TEMPERATURE),),
            osc="temperature", cc=20, cc_value=_cc_temperature,
            cc_help="0-2 (64 = 1.0, as trained; lower safer, higher wilder)", cli="--temperature", default=1.0,
            status="temperature", read=lambda s, c: c.engine.cfg.temperature),
    Control("top_p", "Nucleus sampling: only the likeliest tokens that together reach this probability.",
            lambda s, c, t, v: c.engine.set_top_p(v), "set_top_p", (Arg("value", "float", "1 = off", TOP_P),),
            what="top-p", osc="top_p", cli="--top-p", default=1.0, status="top_p", read=lambda s, c: c.engine.cfg.top_p),
    Control("density", "Most model notes at once.", lambda s, c, t, n: c.engine.set_density(n), "set_density",
            (Arg("notes", "int", "0 = no limit", DENSITY),), what="density (most notes at once)", osc="density",
            cc=22, cc_value=_cc_density, cc_help="most notes at once, 1-12 (127 = no limit)", cli="--max-polyphony",
            default=0, status="density", read=lambda s, c: c.engine.cfg.max_polyphony),
    Control("tempo", "Tempo of the internal clock (refused while following MIDI clock).",
            lambda s, c, t, bpm: c.clock.set_tempo(bpm), "set_tempo", (Arg("bpm", "float", "beats per minute", TEMPO),),
            check_now=_internal_clock, osc="tempo", cli="--tempo", default=120.0,
            status="tempo", read=lambda s, c: round(s.clock.bpm, 2), watch=round),
    Control("key", "Keep the model's new notes in a key.", _set_key, "set_key",
            (Arg("key", "str", "TONIC:SCALE, e.g. C:major, A:minor, F#:dorian; any = no key"),), validate=_check_key,
            check_now=lambda s, name, pcs: s.check_pitches(key=pcs), osc="key", cli="--key",
            status="key", read=lambda s, c: s.key_name or "any"),
    Control("range", "Keep the model's new notes within a pitch range (0 127 = no limit).",
            lambda s, c, t, lo, hi: c.set_pitch_range((lo, hi)), "set_pitch_range",
            (Arg("lowest", "int", "lowest MIDI pitch", PITCH), Arg("highest", "int", "highest MIDI pitch", PITCH)),
            validate=_check_range, check_now=lambda s, lo, hi: s.check_pitches(pitch_range=(lo, hi)), osc="range",
            cli="--pitch-range", status="pitch_range", read=_pitch_range),
    Control("follow", "How strongly answers follow the player's key (answers in the heard key), register (octaves), "
            "velocity (level and contour), density (notes per beat), motif (the call's rhythm), grid (straight, swung "
            "or triplet: where the call's onsets fall in the beat) or chords (accompany: new notes lean to the chord "
            "the melody implies in the beat).", _set_follow,
            "set_follow", (Arg("follower", "str", "what to follow", choices=_Followers()),
                           Arg("strength", "float", "0 = off, 1 = full", FOLLOW_STRENGTH)),
            validate=_check_follow, osc="follow", status="follow", read=lambda s, c: c.listener.follow.as_dict()),
    Control("velocity", "Answer velocities: the player's dynamics (follow), the model's own (model), or fixed.",
            _set_velocity, "set_velocity", (Arg("how", "str", "follow, model, or a velocity 1-127"),),
            validate=_check_velocity, osc="velocity"),  # its state is part of the status' "follow"
    Control("answer_bars", "call-response: how long each answer lasts; accompany: how long the accompaniment plays "
            "on after the melody stops.", lambda s, c, t, bars: c.set_answer_bars(bars),
            "set_answer_bars", (Arg("bars", "float", "bars", ANSWER_BARS),), what="answer length (bars)", osc="length",
            cc=21, cc_value=_cc_answer_bars, cc_help="call-response answer length (accompany: rest after), 1-16 bars",
            cli="--answer-bars",
            default=2.0, status="answer_bars", read=lambda s, c: c.settings.answer_bars),
)}


def lookup(name: str) -> Control:
    """The control called ``name`` (``-`` may stand for ``_``), or a one-line error listing them."""
    c = CONTROLS.get(name.replace("-", "_"))
    if c is None:
        raise MusicRNNError(f"unknown control {name!r}; controls: {', '.join(CONTROLS)}")
    return c


# --- the status message: /musicrnn/status's arguments, in wire order ----------------------------
@dataclass(frozen=True)
class StatusArg:
    arg: Arg
    get: Callable[[dict], Any]  # Server.status() -> this argument


def _pitch(s: dict, i: int) -> int:
    return int((s.get("pitch_range") or (0, 127))[i])


# Clients read the status by position: a new value goes at the end.
STATUS_ARGS: tuple[StatusArg, ...] = (
    StatusArg(Arg("mode", "str", f"{', '.join(MODES[:-1])} or {MODES[-1]}"), lambda s: s["mode"]),
    StatusArg(Arg("tempo", "float", "BPM"), lambda s: float(s["tempo"])),
    StatusArg(Arg("state", "str", f"{', '.join(a.replace(' ', '-') for a in activities()[:-1])} or "
                                  f"{activities()[-1].replace(' ', '-')}"),
              lambda s: str(s["activity"]).replace(" ", "-")),
    StatusArg(Arg("model", "str", "checkpoint path"), lambda s: str(s["model"])),
    StatusArg(Arg("temperature", "float", ""), lambda s: float(s["temperature"])),
    StatusArg(Arg("top_p", "float", ""), lambda s: float(s.get("top_p", 1.0))),
    StatusArg(Arg("length", "float", "answer length in bars"), lambda s: float(s["answer_bars"])),
    StatusArg(Arg("density", "int", "most notes at once, 0 = no limit"), lambda s: int(s["density"])),
    StatusArg(Arg("key", "str", "as set, or any"), lambda s: str(s.get("key") or "any")),
    StatusArg(Arg("lowest", "int", ""), lambda s: _pitch(s, 0)),
    StatusArg(Arg("highest", "int", ""), lambda s: _pitch(s, 1)),
    StatusArg(Arg("heard_key", "str", "the key heard in the player's part, e.g. F#:major, or -"),
              lambda s: str(s.get("heard_key", "-"))),
    StatusArg(Arg("level", "int", "the player's velocity level (0 before any note)"), lambda s: int(s.get("heard_level", 0))),
    StatusArg(Arg("grid", "str", "the grid the answer follows: straight, swing 0.67 (where the off-beat eighth "
                                 "falls), triplet, or - (none heard)"), lambda s: str(s.get("heard_grid", "-"))),
)


def status_values(session, conductor) -> dict[str, object]:
    """Every control's status field, read from a running session."""
    return {c.status: c.read(session, conductor) for c in CONTROLS.values() if c.status and c.read}


def watched(status: dict) -> tuple:
    """What of the controls' status values tells the status watchers of a change."""
    return tuple(c.watch(status[c.status]) for c in CONTROLS.values() if c.status and c.read)


# --- key names (for the status) -----------------------------------------------------------------
def _key_match(pitch_classes: frozenset[int] | None) -> tuple[int, str] | None:
    """(tonic, scale) of the first tonic:scale whose pitch classes these are (None: no match)."""
    if pitch_classes is None:
        return None
    from musicrnn.tonality import SCALES

    for scale, steps in SCALES.items():
        for pc in range(12):
            if frozenset((pc + s) % 12 for s in steps) == pitch_classes:
                return pc, scale
    return None


def key_name(pitch_classes: frozenset[int] | None) -> str | None:
    """A name for a set of pitch classes given on the command line (the first tonic:scale that fits)."""
    if pitch_classes is None:
        return None
    from musicrnn.tonality import TONIC_NAMES

    match = _key_match(pitch_classes)
    return f"{TONIC_NAMES[match[0]]}:{match[1]}" if match else "custom"


def key_tonic(pitch_classes: frozenset[int] | None) -> int | None:
    match = _key_match(pitch_classes)
    return match[0] if match else None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (bytes, bytearray)):
        return f"a blob of {len(value)} bytes"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "nil"
    return f"{type(value).__name__} {value!r}"[:60]
