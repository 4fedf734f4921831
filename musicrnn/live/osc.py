"""The OSC address space of ``musicrnn serve``: one table that drives the dispatcher, the
argument checks and ``docs/osc.md``, so the three cannot drift apart.

The live controls' routes (mode, temperature, key, ...) and the arguments of
``/musicrnn/status`` are made from :mod:`musicrnn.live.control_table`; the routes that are no
controls (notes, load, subscriptions, status) are written here.

Holds:
- :class:`Arg` (from the control table): one typed argument (int, float or string), its range
  or choices, its help.
- :class:`Route`: an address a client sends to, its arguments, help, and the handler.
- :class:`Reply`: an address musicrnn sends (notes, status, errors), its arguments, help.
- :data:`ROUTES`, :data:`REPLIES`: the table itself.
- :class:`Context`: what a handler may do besides calling the server: reply to the sender,
  do something later, manage subscriptions, run a slow job off the OSC thread.
- :func:`check_args`: OSC arguments -> Python values, or :class:`OscArgError` saying why not.
  Ints may arrive as floats (Pure Data sends floats): 60.0 is 60, 60.5 is refused.
- :func:`handle`: check and run one message; every refusal goes back as ``/musicrnn/error``.
- :func:`plain`: the text of every ``/musicrnn/error``: one line, no terminal escapes, cut at a word.
- :func:`make_dispatcher`: a python-osc ``Dispatcher`` with one handler per route.
- :func:`render_docs`: the Markdown of ``docs/osc.md``.

Handlers are plain functions ``run(server, ctx, *values)`` that return None (python-osc would
send a returned value back on its own) and reply through ``ctx``; tests call them without a
socket. The UDP side (sockets, bundles and time tags, subscribers) is ``osc_server.py``.

Regenerate the docs after changing the table::

    python -m musicrnn.live.osc --write-docs      # or --check: exit 1 if docs/osc.md is stale
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pythonosc.dispatcher import Dispatcher

from musicrnn.errors import MusicRNNError
from musicrnn.limits import PITCH, Limit
from musicrnn.live.control_table import CONTROLS, STATUS_ARGS, Arg, ArgError, Control

PREFIX = "/musicrnn"
ERROR = f"{PREFIX}/error"
STATUS = f"{PREFIX}/status"
NOTE_ON_OUT = f"{PREFIX}/out/note_on"
NOTE_OFF_OUT = f"{PREFIX}/out/note_off"
MAX_REASON = 400  # longest /musicrnn/error reason; longer ones end in "..." at a word boundary
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-_])")  # CSI, OSC, 2-byte
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "osc.md"


OscArgError = ArgError  # an OSC message whose arguments do not fit its address


class Context(Protocol):
    """What a handler can do for the client that sent the message."""

    sender: tuple[str, int]  # (ip, port) the message came from

    def reply(self, address: str, *args: Any) -> None:
        """Send to the addresses the sender subscribed, or (none) to the sender."""

    def error(self, reason: str) -> None:
        """``/musicrnn/error reason`` to the sender, and a log line."""

    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the OSC thread ``delay_s`` from now."""

    def subscribe(self, host: str | None, port: int | None) -> bool:
        """Send generated notes and status changes to (host, port) (None: the sender); True if new."""

    def unsubscribe(self, host: str | None, port: int | None) -> int:
        """Stop sending to (host, port), or (None) to everything the sender subscribed; how many."""

    def hears_status_changes(self) -> bool:
        """Did the sender subscribe an address (which gets every status change)?"""

    def background(self, name: str, job: Callable[[], None]) -> None:
        """Run a slow ``job`` (a model load) off the OSC thread, one per ``name`` at a time;
        a MusicRNNError it raises goes back as an error."""


Handler = Callable[..., None]


@dataclass(frozen=True)
class Route:
    address: str
    args: tuple[Arg, ...]
    help: str
    run: Handler

    @property
    def signature(self) -> str:
        parts = [self.address] + [f"[{a.name}]" if a.optional else a.name for a in self.args]
        return " ".join(parts)


@dataclass(frozen=True)
class Reply:
    address: str
    args: tuple[Arg, ...]
    help: str

    @property
    def signature(self) -> str:
        return " ".join([self.address] + [a.name for a in self.args])


# --- the handlers ---------------------------------------------------------------------------------
def _note_on(server, ctx: Context, pitch: int, velocity: int, channel: int = 1) -> None:
    if velocity == 0:  # the MIDI habit (and Pd's [makenote]): velocity 0 ends the note
        server.note_off(pitch, channel - 1)
    else:
        server.note_on(pitch, velocity, channel - 1)


def _note_off(server, ctx: Context, pitch: int, channel: int = 1) -> None:
    server.note_off(pitch, channel - 1)


def _note(server, ctx: Context, pitch: int, velocity: int, duration: float) -> None:
    # the note-off first: if it cannot be scheduled (too many waiting), the note is refused whole
    # rather than struck with no end (the key would stay "held" and call-response never answer)
    ctx.later(duration, lambda: server.note_off(pitch))
    server.note_on(pitch, velocity)


def _control(c: Control) -> Handler:
    """The handler of a control's route: its one check (what arguments alone cannot say, such
    as lowest <= highest), then the server's control API method."""
    def run(server, ctx: Context, *values: Any) -> None:
        values += (None,) * (len(c.args) - len(values))  # optional arguments left out
        c.check(*values)
        getattr(server, c.method)(*values)

    return run


def _load(server, ctx: Context, path: str) -> None:
    def done(status: dict, told: bool) -> None:
        if not (told and ctx.hears_status_changes()):  # else the change went out to its subscriptions already
            ctx.reply(STATUS, *status_args(status))

    def job() -> None:
        server.load_model(path, done)

    ctx.background("load", job)


def _subscribe(server, ctx: Context, host: str | None = None, port: int | None = None) -> None:
    if (host is None) != (port is None):
        raise OscArgError("give both host and port, or neither (to subscribe the sender's own address)")
    if ctx.subscribe(host, port):  # a client re-subscribing every few seconds is not answered each time
        server.request_status(lambda s: ctx.reply(STATUS, *status_args(s)))


def _unsubscribe(server, ctx: Context, host: str | None = None, port: int | None = None) -> None:
    if (host is None) != (port is None):
        raise OscArgError("give both host and port, or neither (everything the sender subscribed)")
    ctx.unsubscribe(host, port)


def _status(server, ctx: Context) -> None:
    server.request_status(lambda s: ctx.reply(STATUS, *status_args(s)))


# --- the table ------------------------------------------------------------------------------------
PITCH_ARG = Arg("pitch", "int", "MIDI note number", PITCH)
CHANNEL = Arg("channel", "int", "MIDI channel of the player's note (default 1)", Limit(1, 16), optional=True)
HOST = Arg("host", "str", "IPv4 address, or localhost", optional=True)
PORT = Arg("port", "int", "UDP port", Limit(1, 65535), optional=True)

NOTE_ROUTES: tuple[Route, ...] = (
    Route(f"{PREFIX}/note_on", (PITCH_ARG, Arg("velocity", "int", "0 ends the note (as in MIDI)", Limit(0, 127)), CHANNEL),
          "The player strikes a note (the model hears it as from a MIDI keyboard).", _note_on),
    Route(f"{PREFIX}/note_off", (PITCH_ARG, CHANNEL), "The player releases a note.", _note_off),
    Route(f"{PREFIX}/note", (PITCH_ARG, Arg("velocity", "int", "loudness", Limit(1, 127)),
                             Arg("duration", "float", "seconds until the note-off", Limit(0.001, 60))),
          "A whole note: on now, off after `duration` seconds.", _note),
)
CONTROL_ROUTES: tuple[Route, ...] = tuple(Route(f"{PREFIX}/{c.osc}", c.args, c.help, _control(c))
                                          for c in CONTROLS.values() if c.osc)
SESSION_ROUTES: tuple[Route, ...] = (
    Route(f"{PREFIX}/load", (Arg("path", "str", "a .pt checkpoint or a run folder, on the server's machine"),),
          "Swap in another model (notes off, fresh state; key, range, temperature, top-p and density stay, and a model "
          "with no pitch in that key and range is refused). Only files that load with `weights_only=True` and hold a "
          "codec live play knows are accepted; nothing in the file runs. Replies with one status when done (to the "
          "subscribed addresses, which get it as a status change), or an error.", _load),
    Route(f"{PREFIX}/subscribe", (HOST, PORT),
          "Send generated notes and status changes to host:port (no arguments: to the sender's own address). "
          "Idempotent; the oldest of more than 16 subscriptions is dropped. A new subscription is answered "
          "with status.", _subscribe),
    Route(f"{PREFIX}/unsubscribe", (HOST, PORT),
          "Stop sending to host:port (no arguments: to every address the sender subscribed). Notes sounding "
          "there get their note-off first.", _unsubscribe),
    Route(f"{PREFIX}/status", (), "Ask for `/musicrnn/status` (after every earlier message has taken effect).", _status),
)
ROUTES: tuple[Route, ...] = NOTE_ROUTES + CONTROL_ROUTES + SESSION_ROUTES

REPLIES: tuple[Reply, ...] = (
    Reply(NOTE_ON_OUT, (PITCH_ARG, Arg("velocity", "int", "1-127", Limit(1, 127))),
          "The model strikes a note (to subscribers, at the moment it sounds on MIDI)."),
    Reply(NOTE_OFF_OUT, (PITCH_ARG,), "The model's note ends. Every note_on gets one: on stop, panic, mode switch, model load, "
                                      "unsubscribe and shutdown too."),
    Reply(STATUS, tuple(a.arg for a in STATUS_ARGS),
          "The session's state: the reply to `status`, `subscribe` and `load`, and sent to subscribers whenever "
          "one of these values changes."),
    Reply(ERROR, (Arg("reason", "str", "one line: the address, then what is wrong"),),
          "A message was refused (unknown address, wrong arguments, out of range, malformed packet, failed load). "
          "Sent to the sender; the server carries on."),
)

_BY_ADDRESS = {r.address: r for r in ROUTES}


def status_args(s: dict) -> list[Any]:
    """The arguments of ``/musicrnn/status`` from :meth:`Server.status`, in table order."""
    return [a.get(s) for a in STATUS_ARGS]


# --- checking and dispatching ---------------------------------------------------------------------
def check_args(route: Route, values: Sequence[Any]) -> list[Any]:
    """The OSC arguments of one message -> the handler's arguments (or :class:`OscArgError`)."""
    required = sum(not a.optional for a in route.args)
    if not required <= len(values) <= len(route.args):
        want = f"{required}" if required == len(route.args) else f"{required}-{len(route.args)}"
        usage = route.signature
        raise OscArgError(f"takes {want} argument{'s' if want != '1' else ''} ({usage}), got {len(values)}")
    return [arg.check(v) for arg, v in zip(route.args, values)]


def handle(route: Route, server, ctx: Context, address: str, values: Sequence[Any]) -> None:
    """Check and run one message; anything refused goes back to the sender as an error."""
    try:
        route.run(server, ctx, *check_args(route, values))
    except MusicRNNError as exc:
        ctx.error(f"{address}: {exc}")


def plain(text: str, limit: int = MAX_REASON) -> str:
    """``text`` as one line of plain text for a client's console (Pd, Max and SuperCollider show
    terminal escapes raw, and library messages carry them): escapes and control characters
    removed, whitespace collapsed; longer than ``limit``: cut at a word boundary, ending in "..."."""
    text = _ESCAPES.sub("", text)
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary near the end (else one very long word: cut inside it)
        cut = cut[:space]
    return cut.rstrip(" ,;:(-") + "..."


def unknown(address: str) -> str:
    return f"{address}: unknown address (musicrnn's addresses are in docs/osc.md; try {STATUS})"


def make_dispatcher(server, context_for: Callable[[tuple[str, int]], Context]) -> Dispatcher:
    """A python-osc dispatcher with every route of the table mapped for ``server``; handlers
    return None (a returned value would be sent back by python-osc on its own)."""
    d = Dispatcher()
    for route in ROUTES:
        def run(sender: tuple[str, int], address: str, *values: Any, route: Route = route) -> None:
            handle(route, server, context_for(sender), address, values)

        d.map(route.address, run, needs_reply_address=True)
    return d


def route_for(address: str) -> Route | None:
    return _BY_ADDRESS.get(address)


# --- docs -----------------------------------------------------------------------------------------
DOC_INTRO = """\
`musicrnn serve --osc-port 9000` listens for OSC over UDP (beside MIDI; either can be off:
`musicrnn serve --midi-in none --midi-out none --osc-port 9000` needs no MIDI system at all).

- **Where**: 127.0.0.1 only, unless you pass `--osc-host` (e.g. `--osc-host 0.0.0.0`); then
  `--osc-allow ADDR` (repeatable; an address or a network such as `192.168.1.0/24`) limits who may
  send. Loopback clients are always allowed. Packets from anyone else are dropped unanswered.
- **Replies** (`/musicrnn/status`, `/musicrnn/error`) go to the addresses the sender subscribed,
  or, if it subscribed none, to the address the message came from. **Generated notes** and status
  changes go to subscribers: send `/musicrnn/subscribe` (no arguments: the sender's own address;
  or a host and port, e.g. where Pd's `[netreceive -u -b 9001]` or Max's `[udpreceive 9001]` listens).
- **Types**: where an int is meant, a float with a whole value is accepted (Pure Data sends
  floats); ints are fine for floats. NaN, infinity, out-of-range values, wrong types, missing or
  extra arguments and unknown addresses are refused with `/musicrnn/error` and a log line; so are
  truncated or garbage packets. Nothing a client sends stops the server.
- **Bundles**: messages in a bundle run in order; a bundle with a future time tag runs at that time
  (time tags are NTP wall-clock time, up to 60 s ahead), never early.
- **Timing**: generated notes leave from the same thread, at the same moment, as the MIDI output,
  with the same guarantee: every `/musicrnn/out/note_on` gets its `/musicrnn/out/note_off`.
"""


def _arg_rows(args: tuple[Arg, ...]) -> list[str]:
    rows = ["| argument | type | range | meaning |", "|---|---|---|---|"]
    for a in args:
        name = f"{a.name} (optional)" if a.optional else a.name
        rows.append(f"| {name} | {a.kind} | {a.range_text} | {a.help} |")
    return rows


def render_docs() -> str:
    """The Markdown of docs/osc.md, from the table."""
    lines = ["# OSC address space", "",
             "<!-- Generated from the table in musicrnn/live/osc.py by `python -m musicrnn.live.osc --write-docs`; "
             "do not edit by hand (tests/test_live_osc.py compares). -->", "", DOC_INTRO.rstrip(), "",
             "## Messages to musicrnn", "", "| message | what it does |", "|---|---|"]
    for r in ROUTES:
        lines.append(f"| `{r.signature}` | {r.help} |")
    for r in ROUTES:
        lines += ["", f"### `{r.address}`", "", r.help, ""]
        lines += _arg_rows(r.args) if r.args else ["No arguments."]
    lines += ["", "## Messages from musicrnn", "", "| message | when |", "|---|---|"]
    for r in REPLIES:
        lines.append(f"| `{r.signature}` | {r.help} |")
    for r in REPLIES:
        lines += ["", f"### `{r.address}`", ""]
        lines += _arg_rows(r.args)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m musicrnn.live.osc", description="Write or check docs/osc.md from the OSC table.")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--write-docs", nargs="?", const=str(DOCS_PATH), metavar="PATH", help=f"write the docs (default {DOCS_PATH})")
    group.add_argument("--check", nargs="?", const=str(DOCS_PATH), metavar="PATH", help="exit 1 if the docs differ from the table")
    args = ap.parse_args(argv)
    text = render_docs()
    if args.write_docs:
        Path(args.write_docs).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write_docs).write_text(text, encoding="utf-8")
        print(f"wrote {args.write_docs}")
    elif args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date; run: python -m musicrnn.live.osc --write-docs", file=sys.stderr)
            return 1
        print(f"{path} matches the table")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
