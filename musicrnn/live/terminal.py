"""The terminal app of ``musicrnn serve``: runs a session until Ctrl-C, with a live status line.

Holds:
- :func:`serve`: runs a :class:`~musicrnn.live.server.Server` until SIGINT/SIGTERM (or
  ``seconds``), draws the status line (rich) when stdout is a terminal, shows warnings (a
  learnt CC, an engine error) on stderr, and returns the final status; the CLI calls this.
- :func:`describe`: the one line that says where the session listens and plays.
- :func:`status_line`: the live status line.

Every way out (signal, error, end of time) closes the server, which ends all notes first.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from musicrnn.errors import MusicRNNError
from musicrnn.listening import FOLLOWERS, Follow
from musicrnn.live import midi_ports
from musicrnn.live.server import ServeOptions, Server

log = logging.getLogger("musicrnn.live")


def status_line(s: dict) -> str:
    """One line for the terminal."""
    clock = f"{s['tempo']:.0f} BPM {s['clock']}" + ("" if s["clock_running"] else " (stopped)")
    extra = f" · dropped {s['dropped_input']}" if s.get("dropped_input") else ""
    learn = f" · learning {s['learning']}: move a control" if s.get("learning") else ""
    return (f"{s['mode']} · {s['activity']} · {clock} · in {s['notes_in']} out {s['notes_out']} "
            f"· step {s['step_ms']:.2f} ms (max {s['step_max_ms']:.1f}) · temp {s['temperature']:.2f}{extra}{learn}")


def describe(server: Server) -> str:
    """What the user needs to know once the server runs: ports, mode, clock."""
    opts = server.options
    api = midi_ports.API_LABELS.get(server.api or "", "MIDI")
    vin, vout = midi_ports.virtual_names(opts.port_name)
    inp = {"virtual": f"virtual {vin!r}", "none": "none"}.get(opts.midi_in, repr(getattr(server.input_port, "name", opts.midi_in)))
    out = {"virtual": f"virtual {vout!r}", "none": "none"}.get(opts.midi_out, repr(getattr(server.output_port, "name", opts.midi_out)))
    clock = f"{opts.tempo:g} BPM internal clock" if opts.clock == "internal" else "following MIDI clock on the input"
    midi = "MIDI: none" if opts.midi_in == opts.midi_out == "none" else f"{api}: in {inp}, out {out} (channel {opts.channel})"
    osc = f"; OSC on {server.osc.host}:{server.osc.port}" if server.osc is not None else ""
    return (f"musicrnn serve: {server.model_name} ({server.conductor.engine.codec.name} codec); {midi}{osc}; "  # type: ignore[union-attr]
            f"{opts.mode}; {clock}; {follows(opts.follow)}; Ctrl-C to stop")


def follows(follow: Follow) -> str:
    """What the answers follow, as the start-up line says it (so --follow/--velocity can be checked)."""
    on = [name if strength == 1 else f"{name} {strength:g}"
          for name, strength in follow.as_dict().items() if name in FOLLOWERS and strength > 0]
    if follow.fixed_velocity:
        on = [f for f in on if not f.startswith("velocity")] + [f"velocity fixed at {follow.fixed_velocity}"]
    return "follows " + (", ".join(on) if on else "nothing (--follow none)")


def serve(checkpoint, options: ServeOptions, seconds: float | None = None, status: bool | None = None,
          echo: Callable[[str], None] = print) -> dict:
    """Run a session until SIGINT/SIGTERM (or ``seconds``); returns the final status. Every
    way out (signal, error, end of time) ends all notes first. ``status``: draw the live status
    line (default: when stdout is a terminal)."""
    options.check_reachable()
    stop = threading.Event()
    on_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if on_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    handler = _StderrHandler()
    log.addHandler(handler)  # warnings (a learnt CC, an engine error) reach the user for this session
    server = Server(checkpoint, options)
    try:
        server.start()
        echo(describe(server))
        _flush()
        deadline = None if seconds is None else time.monotonic() + seconds
        show = sys.stdout.isatty() if status is None else status
        if show:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text

            def line() -> Text:
                return Text(status_line(server.status()), no_wrap=True, overflow="ellipsis")

            with Live(line(), console=Console(), refresh_per_second=4, transient=True) as live:
                while _keep_going(stop, server, deadline, 0.25):
                    live.update(line())
        else:
            while _keep_going(stop, server, deadline, 0.25):
                pass
    finally:
        server.close()
        log.removeHandler(handler)
        for sig, old in previous.items():
            signal.signal(sig, old)
    if server.error is not None:
        if isinstance(server.error, MusicRNNError):
            raise server.error
        raise MusicRNNError(f"live engine failed: {type(server.error).__name__}: {server.error}") from server.error
    final = server.status()
    echo(f"stopped: {final['notes_in']} notes in, {final['notes_out']} out; all notes off")
    _flush()
    return final


class _StderrHandler(logging.Handler):
    """Log lines on whatever ``sys.stderr`` is at the time (it may be swapped, as in tests)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


def _keep_going(stop: threading.Event, server: Server, deadline: float | None, every: float) -> bool:
    if stop.wait(every) or server.wait(0):
        return False
    return deadline is None or time.monotonic() < deadline


def _flush() -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
