"""The one place that opens MIDI ports: mido with python-rtmidi underneath.

Holds:
- :data:`APIS`: our API names (``alsa``, ``jack``, ``coremidi``, ``windows``) and rtmidi's.
- :func:`choose_api`: ``auto`` or a named API -> one that works here, or a one-line error.
- :func:`list_ports`: inputs and outputs per API (``musicrnn ports``).
- :func:`readable_ports`: those names as a user passes them (JACK's and ALSA's ``client:port``
  shortened where a shorter part still finds the port), with who owns each (a serve's own ports).
- :func:`open_input` / :func:`open_output`: a port by name (exact, or a unique part of the
  name, case-insensitive), ``virtual`` (a new port others connect to), or ``none``.
- :class:`NullOutput`: where notes go with ``--midi-out none``.
- :class:`MidiPortError`: every problem here, one line, naming what is available.

Virtual ports are called ``<name> in`` and ``<name> out`` (``musicrnn in`` / ``musicrnn out``),
seen from musicrnn: a DAW sends to ``musicrnn in`` and records from ``musicrnn out``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import mido

from musicrnn.errors import MusicRNNError
from musicrnn.live.clock import now_ns

APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "windows": "WINDOWS_MM"}
API_LABELS = {"alsa": "ALSA", "jack": "JACK", "coremidi": "CoreMIDI", "windows": "Windows MIDI"}
LOOPMIDI = "loopMIDI (https://www.tobias-erichsen.de/software/loopmidi.html)"
OSC_ONLY = "--midi-in none --midi-out none --osc-port 9000"  # serve with no MIDI system at all


class MidiPortError(MusicRNNError):
    """A MIDI port or MIDI system that cannot be used, with what to do instead."""


@dataclass
class ApiPorts:
    api: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    problem: str | None = None  # why this API cannot be used here


class NullOutput:
    """An output that drops everything (``--midi-out none``)."""

    name = "none"
    closed = False

    def send(self, msg: mido.Message) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def virtual_names(port_name: str) -> tuple[str, str]:
    """Names of our virtual (input, output) ports."""
    return f"{port_name} in", f"{port_name} out"


def platform_apis() -> list[str]:
    """The APIs worth trying on this platform, preferred first."""
    if sys.platform == "darwin":
        return ["coremidi", "jack"]
    if sys.platform.startswith("win"):
        return ["windows"]
    return ["alsa", "jack"]


def _backend(api: str) -> mido.Backend:
    return mido.Backend(f"mido.backends.rtmidi/{APIS[api]}", load=True)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide what C libraries print while probing (ALSA and JACK complain loudly when absent)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _probe(api: str) -> str | None:
    """None if ``api`` can open ports here, else why not."""
    import mido.backends.rtmidi as mido_rtmidi
    import rtmidi

    if APIS[api] not in mido_rtmidi.get_api_names():
        return "not built into python-rtmidi on this system"
    if api == "alsa" and not os.path.exists("/dev/snd/seq"):
        return "no ALSA sequencer (/dev/snd/seq missing; load snd-seq, or use JACK)"
    try:
        with _quiet_stderr():
            probe = rtmidi.MidiOut(rtapi=getattr(rtmidi, f"API_{APIS[api]}"))
            probe.delete()
    except Exception as exc:  # rtmidi raises its own SystemError subclasses
        msg = " ".join(str(exc).split())
        if api == "jack":
            return "no JACK server running (start one, e.g. jackd -d alsa, or use QjackCtl)"
        return msg or type(exc).__name__
    return None


def choose_api(requested: str = "auto") -> str:
    """The API to use: ``requested`` if it works, or for ``auto`` the first that works."""
    if requested != "auto":
        if requested not in APIS:
            raise MidiPortError(f"unknown MIDI API {requested!r}; choose auto, {', '.join(APIS)}")
        problem = _probe(requested)
        if problem:
            raise MidiPortError(f"{API_LABELS[requested]} MIDI cannot be used: {problem}; "
                                f"or play over OSC with no MIDI: {OSC_ONLY}")
        return requested
    problems = []
    for api in platform_apis():
        problem = _probe(api)
        if problem is None:
            return api
        problems.append(f"{API_LABELS[api]}: {problem}")
    hint = f"; on Windows install {LOOPMIDI}" if sys.platform.startswith("win") else ""
    raise MidiPortError(f"no MIDI system is usable here ({'; '.join(problems)}){hint}; "
                        f"or play over OSC with no MIDI (Pd, Max, SuperCollider): {OSC_ONLY}")


def list_ports(requested: str = "auto") -> list[ApiPorts]:
    """Ports of every API worth trying here (``auto``), or of one API."""
    apis = platform_apis() if requested == "auto" else [requested]
    out = []
    for api in apis:
        if api not in APIS:
            raise MidiPortError(f"unknown MIDI API {api!r}; choose auto, {', '.join(APIS)}")
        problem = _probe(api)
        if problem:
            out.append(ApiPorts(api, problem=problem))
            continue
        backend = _backend(api)
        with _quiet_stderr():
            out.append(ApiPorts(api, backend.get_input_names(), backend.get_output_names()))
    return out


@dataclass(frozen=True)
class PortName:
    """A port as ``musicrnn ports`` shows it: ``short`` (what to pass to --midi-in/--midi-out:
    it finds this port and no other), ``client`` (the program that owns it, where the short
    name does not say), ``ours`` (a virtual port of a running ``musicrnn serve``)."""

    full: str
    short: str
    client: str | None = None
    ours: bool = False


_ALSA_NUMBERS = re.compile(r" \d+:\d+$")  # ALSA names end in "client:port" numbers, which change between boots


def _split(full: str, api: str) -> tuple[str | None, str]:
    """(client, port) of a JACK or ALSA name ``client:port``; (None, name) elsewhere."""
    if api not in ("jack", "alsa") or ":" not in full:
        return None, full
    client, port = full.split(":", 1)
    return client, _ALSA_NUMBERS.sub("", port) if api == "alsa" else port


def _matches(name: str, available: list[str]) -> list[str]:
    """The ports ``name`` selects: an exact name, else every name it is a part of (any case)."""
    if name in available:
        return [name]
    return [p for p in available if name.lower() in p.lower()]


def readable_ports(names: list[str], api: str, direction: str) -> list[PortName]:
    """``names`` (one direction of one API) as users read and pass them. JACK and rtmidi's ALSA
    repeat the client in every name (``musicrnn out:musicrnn out``): the port part alone is
    shown when it still selects just this port. ``direction``: input or output, as listed
    (our virtual output ``<name> out`` is an input to others, and the other way round)."""
    own_suffix = " out" if direction == "input" else " in"
    out = []
    for full in names:
        client, port = _split(full, api)
        short = port if client is not None and _matches(port, names) == [full] else full
        ours = client is not None and client == port and port.endswith(own_suffix)
        shown_client = client if client is not None and client.lower() not in short.lower() else None
        out.append(PortName(full, short, shown_client, ours))
    return out


def _resolve(name: str, available: list[str], direction: str, api: str) -> str:
    matches = _matches(name, available)
    if len(matches) == 1:
        return matches[0]
    flag = "--midi-in" if direction == "input" else "--midi-out"
    if matches:
        raise MidiPortError(f"MIDI {direction} {name!r} matches several {API_LABELS[api]} ports: "
                            f"{', '.join(repr(m) for m in matches)}; give more of the name")
    have = ", ".join(repr(p.short) for p in readable_ports(available, api, direction)) if available else "none"
    hint = f"; create one with {LOOPMIDI}" if api == "windows" else f", or {flag} virtual to create one"
    raise MidiPortError(f"MIDI {direction} {name!r} not found ({API_LABELS[api]}); available {direction}s: {have}{hint}")


def _check_virtual(api: str) -> None:
    if api == "windows":
        raise MidiPortError(f"Windows MIDI has no virtual ports; install {LOOPMIDI}, create a port there and pass its name")


class QueuedInput:
    """A MIDI input read through python-rtmidi's own queue by a Python thread.

    Not mido's callback: that runs in the MIDI system's thread (JACK's process thread) and must
    take the GIL first; when the wait outlasts a JACK period, RtMidi hands the period's previous
    event again in place of the rest and the periods it missed are lost (a chord can come back as
    one note repeated, a note-off can vanish and leave a key held). RtMidi's queue is filled in C
    without the GIL; this thread drains it and stamps each message from RtMidi's deltas, so the
    times stay those of arrival even when the drain runs late.
    """

    QUEUE = 8192  # messages RtMidi may hold while Python is busy (a flood beyond it is dropped there)
    POLL_S = 0.00025  # the drain's nap when the queue is empty: the most a message waits
    BURST = 1024  # most messages in one ``around`` block (a flood still gets worked off)

    def __init__(self, api: str, port: str | None, name: str, callback: Callable[..., None],
                 around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext) -> None:
        import rtmidi

        self.name = port if port is not None else name  # what the user sees: the port we listen to
        self.closed = False
        self._callback = callback
        self._around = around  # each burst (what the queue holds when the drain looks) goes in one block
        with _quiet_stderr():
            self._rt = rtmidi.MidiIn(getattr(rtmidi, f"API_{APIS[api]}"), name=name, queue_size_limit=self.QUEUE)
        self._rt.ignore_types(sysex=True, timing=False, active_sense=True)  # MIDI clock is wanted
        try:
            if port is None:
                self._rt.open_virtual_port(name)
            else:
                self._rt.open_port(self._rt.get_ports().index(port), name="in")
        except BaseException:
            self._rt.delete()
            raise
        self._last: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name=f"midi-in {name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        got = None
        while not self._stop.is_set():
            if got is None:
                got = self._rt.get_message()
                if got is None:
                    time.sleep(self.POLL_S)
                    continue
            with self._around():
                for _ in range(self.BURST):
                    self._deliver(*got)
                    got = self._rt.get_message()
                    if got is None or self._stop.is_set():
                        break

    def _deliver(self, data: list[int], delta: float) -> None:
        t = now_ns()
        if self._last is not None:  # RtMidi's delta says when it arrived; our clock is an upper bound
            t = min(t, self._last + int(delta * 1e9))
        self._last = t
        try:
            msg = mido.Message.from_bytes(data)
        except ValueError:  # a malformed message from the wire: not ours to crash on
            return
        self._callback(msg, t)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._rt.close_port()
        self._rt.delete()


def open_input(spec: str, api: str, port_name: str, callback: Callable[..., None],
               around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext):
    """Open the input ``spec`` (a port name, ``virtual`` or ``none``); each message goes to
    ``callback(msg, t_ns)`` (``t_ns``: its arrival on :func:`musicrnn.live.clock.now_ns`'s clock)
    from a reader thread (see :class:`QueuedInput`), each burst of messages inside one
    ``with around():``. Returns the port, or None for ``none``."""
    if spec == "none":
        return None
    try:
        if spec == "virtual":
            _check_virtual(api)
            name = virtual_names(port_name)[0]
            return QueuedInput(api, None, name, callback, around)
        with _quiet_stderr():
            available = _backend(api).get_input_names()
        port = _resolve(spec, available, "input", api)
        return QueuedInput(api, port, port_name, callback, around)
    except MidiPortError:
        raise
    except Exception as exc:  # OSError, and rtmidi's own errors (RtMidiError and its subclasses)
        raise MidiPortError(f"could not open MIDI input {spec!r} ({API_LABELS[api]}): {' '.join(str(exc).split())}") from None


def open_output(spec: str, api: str, port_name: str):
    """Open the output ``spec`` (a port name, ``virtual`` or ``none``)."""
    if spec == "none":
        return NullOutput()
    backend = _backend(api)
    try:
        if spec == "virtual":
            _check_virtual(api)
            name = virtual_names(port_name)[1]
            return backend.open_output(name, client_name=name)
        with _quiet_stderr():
            available = backend.get_output_names()
        return backend.open_output(_resolve(spec, available, "output", api))
    except (OSError, RuntimeError) as exc:
        raise MidiPortError(f"could not open MIDI output {spec!r} ({API_LABELS[api]}): {' '.join(str(exc).split())}") from None
