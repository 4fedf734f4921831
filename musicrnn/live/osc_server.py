"""OSC over UDP for ``musicrnn serve``: moves bytes; what messages mean is ``osc.py``.

Holds:
- :class:`OscServer`: one UDP socket and one thread. It receives packets (messages and
  bundles), drops those from clients outside ``--osc-allow``, holds messages of future-dated
  bundles until their time tag, and hands each message to the dispatcher built from the table
  in ``osc.py``; what the handlers queue for the model it then works off itself
  (:meth:`~musicrnn.live.server.Server.working_here`), so a note's answer can leave from this
  thread with no hand-off. Replies and notes leave from the same socket (so a client sees one
  address).
- :class:`Subscribers`: where generated notes and status changes go. It is a sink of the
  :class:`~musicrnn.live.scheduler.Scheduler`: whichever thread sends a note (the scheduler's,
  or one playing a note due now) hands it every note the MIDI output gets, at the same moment,
  and it keeps, per subscriber, the notes sounding there so each one gets its note-off (also
  when that subscriber unsubscribes).

Nothing a client sends stops the server: a packet that cannot be parsed, an unknown address or
a bad argument gets ``/musicrnn/error`` (to the sender) and a log line (at most
``LOG_PER_S`` per second). Sends never block: the socket is non-blocking and a datagram that
does not fit the send buffer is dropped and counted.

Time tags are NTP wall-clock times by the OSC spec, so this is the one place in the live engine
that reads the wall clock: only to turn a time tag into a delay on the monotonic clock.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import logging
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import mido
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from musicrnn.errors import MusicRNNError
from musicrnn.live import osc
from musicrnn.live.clock import now_ns

log = logging.getLogger("musicrnn.live")

MAX_DATAGRAM = 65535
MAX_AHEAD_S = 60.0  # a bundle's time tag may lie this far ahead at most
MAX_TIMERS = 4096  # messages waiting for their time tag (and note-offs of /note); more are refused
MAX_SUBSCRIBERS = 16  # more subscriptions push out the oldest
IDLE_S = 0.5  # the thread wakes at least this often
LOG_PER_S = 20  # log lines about bad packets per second, at most (a flood cannot fill the log)
BATCH = 64  # datagrams read per wake-up before timers get their turn

Address = tuple[str, int]


def encode(address: str, *args: Any) -> bytes:
    """One OSC message: ints as i, floats as f, strings as s."""
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a, OscMessageBuilder.ARG_TYPE_INT if isinstance(a, int) else
                  OscMessageBuilder.ARG_TYPE_FLOAT if isinstance(a, float) else OscMessageBuilder.ARG_TYPE_STRING)
    return b.build().dgram


# generated notes are sent for every note played: a fixed head plus packed ints, no builder
_ON_HEAD = encode(osc.NOTE_ON_OUT, 0, 0)[:-8]
_OFF_HEAD = encode(osc.NOTE_OFF_OUT, 0)[:-4]


def note_on_packet(pitch: int, velocity: int) -> bytes:
    return _ON_HEAD + struct.pack(">ii", pitch, velocity)


def note_off_packet(pitch: int) -> bytes:
    return _OFF_HEAD + struct.pack(">i", pitch)


class _RateLimitedLog:
    """At most ``per_s`` warnings a second; the rest are counted and reported later."""

    def __init__(self, per_s: int = LOG_PER_S) -> None:
        self.per_s = per_s
        self._window = 0.0
        self._count = 0
        self._hidden = 0
        self._lock = threading.Lock()

    def warning(self, text: str, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._window >= 1.0:
                if self._hidden:
                    log.warning("(%d more OSC problems not shown)", self._hidden)
                self._window, self._count, self._hidden = now, 0, 0
            if self._count >= self.per_s:
                self._hidden += 1
                return
            self._count += 1
        log.warning("%s", text, exc_info=exc_info)


class Subscribers:
    """Destinations of generated notes and status changes; the scheduler's OSC sink.

    Used from several threads (whoever sends notes; engine: status; OSC: (un)subscribe,
    replies), so everything is under one lock; sends are non-blocking."""

    def __init__(self, send: Callable[[bytes, Address], bool], limit: int = MAX_SUBSCRIBERS) -> None:
        self._send = send
        self.limit = limit
        self._lock = threading.Lock()
        self._dests: OrderedDict[Address, set[int]] = OrderedDict()  # destination -> pitches sounding there
        self._owner: dict[Address, Address] = {}  # destination -> who subscribed it

    def add(self, dest: Address, owner: Address) -> bool:
        """Subscribe ``dest`` (on behalf of ``owner``); True if it was not subscribed yet."""
        with self._lock:
            new = dest not in self._dests
            if not new:
                self._dests.move_to_end(dest)
            else:
                self._dests[dest] = set()
                while len(self._dests) > self.limit:
                    old, _ = next(iter(self._dests.items()))
                    log.warning("OSC: more than %d subscribers; %s:%d dropped", self.limit, *old)
                    self._drop(old)
            self._owner[dest] = owner
            return new

    def remove(self, dest: Address | None = None, owner: Address | None = None) -> int:
        """Remove ``dest``, or every destination ``owner`` subscribed (and ``owner`` itself)."""
        with self._lock:
            if dest is not None:
                gone = [dest] if dest in self._dests else []
            else:
                gone = [d for d in self._dests if d == owner or self._owner.get(d) == owner]
            for d in gone:
                self._drop(d)
            return len(gone)

    def _drop(self, dest: Address) -> None:
        for pitch in sorted(self._dests.pop(dest, ())):
            self._send(note_off_packet(pitch), dest)
        self._owner.pop(dest, None)

    def owned_by(self, owner: Address) -> list[Address]:
        with self._lock:
            return [d for d, o in self._owner.items() if o == owner]

    def __len__(self) -> int:
        return len(self._dests)

    def destinations(self) -> list[Address]:
        with self._lock:
            return list(self._dests)

    def broadcast(self, data: bytes) -> None:
        with self._lock:
            for dest in self._dests:
                self._send(data, dest)

    # --- the scheduler's sink --------------------------------------------------------------------
    def send(self, msg: mido.Message) -> None:
        """A message the MIDI output just got (the thread that sent it): notes go to every subscriber."""
        if msg.type == "note_on" and msg.velocity > 0:
            data = note_on_packet(msg.note, msg.velocity)
            with self._lock:
                for dest, sounding in self._dests.items():
                    if self._send(data, dest):
                        sounding.add(msg.note)
        elif msg.type in ("note_on", "note_off"):
            data = note_off_packet(msg.note)
            with self._lock:
                for dest, sounding in self._dests.items():
                    if msg.note in sounding:
                        sounding.discard(msg.note)
                        self._send(data, dest)


class _Context:
    """What a handler can do for one sender (see :class:`musicrnn.live.osc.Context`)."""

    __slots__ = ("server", "sender")

    def __init__(self, server: OscServer, sender: Address) -> None:
        self.server, self.sender = server, sender

    def reply(self, address: str, *args: Any) -> None:
        self.server.reply(self.sender, encode(address, *args))

    def error(self, reason: str) -> None:
        self.server.problem(self.sender, reason)

    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.server.later(now_ns() + int(delay_s * 1e9), fn)

    def subscribe(self, host: str | None, port: int | None) -> bool:
        return self.server.subscribe(self.sender, host, port)

    def unsubscribe(self, host: str | None, port: int | None) -> int:
        return self.server.unsubscribe(self.sender, host, port)

    def hears_status_changes(self) -> bool:
        return bool(self.server.notes.owned_by(self.sender))

    def background(self, name: str, job: Callable[[], None]) -> None:
        self.server.background(self.sender, name, job)


class OscServer:
    """OSC for a :class:`~musicrnn.live.server.Server`: bind in ``__init__`` (a one-line
    error if the port is taken), :meth:`start` the thread once the server runs,
    :meth:`stop_input` when shutting down, :meth:`close` after the scheduler's last note-offs."""

    def __init__(self, server, host: str = "127.0.0.1", port: int = 9000, allow: Iterable[str] = ()) -> None:
        self.server = server
        self.allow = [_network(a) for a in allow]
        bind_host = _ipv4(host, "--osc-host")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((bind_host, port))
        except OSError as exc:
            self.sock.close()
            hint = "another program uses it; pick another --osc-port" if exc.errno in (98, 48, 10048) else "check --osc-host"
            raise MusicRNNError(f"cannot listen for OSC on {bind_host}:{port}: {exc.strerror or exc} ({hint})") from None
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()[:2]
        self.notes = Subscribers(self._sendto)
        self.dispatcher = osc.make_dispatcher(server, lambda sender: _Context(self, sender))
        self._exact = {r.address: list(self.dispatcher.handlers_for_address(r.address)) for r in osc.ROUTES}
        self.stats = {"packets": 0, "messages": 0, "errors": 0, "refused": 0, "send_dropped": 0}
        self._log = _RateLimitedLog()
        self._timers: list[tuple[int, int, Callable[[], None]]] = []  # (due ns, order, fn): OSC thread only
        self._order = itertools.count()
        self._jobs: set[str] = set()
        self._jobs_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        server.watch(self._status_changed)
        if bind_host not in ("127.0.0.1",) and not ipaddress.ip_address(bind_host).is_loopback and not self.allow:
            log.warning("OSC listens on %s:%d: anyone who can reach this machine can control musicrnn "
                        "(limit it with --osc-allow ADDR)", self.host, self.port)

    # --- life cycle ------------------------------------------------------------------------------
    def start(self) -> OscServer:
        self._thread = threading.Thread(target=self._run, name="musicrnn-osc", daemon=True)
        self._thread.start()
        return self

    def stop_input(self) -> None:
        """No more messages are handled (the socket stays open for the last note-offs)."""
        self._stop.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def close(self) -> None:
        if self._closed:
            return
        self.stop_input()
        self._closed = True
        for s in (self.sock, self._wake_r, self._wake_w):
            s.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # --- sending (any thread) --------------------------------------------------------------------
    def _sendto(self, data: bytes, dest: Address) -> bool:
        try:
            self.sock.sendto(data, dest)
            return True
        except OSError as exc:  # full buffer, unreachable host, closed socket: drop, never block or raise
            self.stats["send_dropped"] += 1
            self._log.warning(f"OSC: could not send to {dest[0]}:{dest[1]}: {exc}")
            return False

    def reply(self, sender: Address, data: bytes) -> None:
        """To the addresses the sender subscribed, or (none) to the sender itself."""
        for dest in self.notes.owned_by(sender) or [sender]:
            self._sendto(data, dest)

    def problem(self, sender: Address | None, reason: str) -> None:
        """A refused message: ``/musicrnn/error`` to the sender (if known) and a log line."""
        self.stats["errors"] += 1
        who = f"{sender[0]}:{sender[1]}" if sender else "unknown sender"
        self._log.warning(f"OSC from {who}: {osc.plain(reason, limit=1000)}")
        if sender is not None:
            self.reply(sender, encode(osc.ERROR, osc.plain(reason)))

    def _status_changed(self, status: dict) -> None:
        if len(self.notes):
            self.notes.broadcast(encode(osc.STATUS, *osc.status_args(status)))

    # --- what handlers ask for (OSC thread, or a background job) ---------------------------------
    def later(self, due_ns: int, fn: Callable[[], None]) -> None:
        if len(self._timers) >= MAX_TIMERS:
            raise MusicRNNError(f"more than {MAX_TIMERS} messages wait for their time; try again later")
        heapq.heappush(self._timers, (due_ns, next(self._order), fn))

    def subscribe(self, sender: Address, host: str | None, port: int | None) -> bool:
        if host is None or port is None:
            dest = sender
        else:
            dest = (_ipv4(host, "host"), int(port))
            if not self._may_send_to(sender[0], dest[0]):
                raise MusicRNNError(f"may not subscribe {dest[0]}: only the sender's own address, or one allowed by --osc-allow")
        return self.notes.add(dest, sender)

    def unsubscribe(self, sender: Address, host: str | None, port: int | None) -> int:
        if host is None or port is None:
            return self.notes.remove(owner=sender)
        return self.notes.remove(dest=(_ipv4(host, "host"), int(port)))

    def background(self, sender: Address, name: str, job: Callable[[], None]) -> None:
        with self._jobs_lock:
            if name in self._jobs:
                raise MusicRNNError(f"a {name} is already in progress; wait for its reply")
            self._jobs.add(name)

        def run() -> None:
            try:
                job()
            except MusicRNNError as exc:
                self.problem(sender, f"{osc.PREFIX}/{name}: {exc}")
            except Exception as exc:  # a bug must not pass silently, nor stop anything
                log.exception("OSC %s failed", name)
                self.problem(sender, f"{osc.PREFIX}/{name}: internal error: {type(exc).__name__}: {exc}")
            finally:
                with self._jobs_lock:
                    self._jobs.discard(name)

        threading.Thread(target=run, name=f"musicrnn-osc-{name}", daemon=True).start()

    def _may_send_to(self, sender_ip: str, target_ip: str) -> bool:
        """Subscriptions may not point musicrnn at third parties: the target is the sender
        itself, anything when the sender is on this machine, or an allowed client."""
        if target_ip == sender_ip or ipaddress.ip_address(sender_ip).is_loopback:
            return True
        return self._allowed(target_ip)

    def _allowed(self, ip: str) -> bool:
        if not self.allow:
            return True
        addr = ipaddress.ip_address(ip)
        return addr.is_loopback or any(addr in net for net in self.allow)

    # --- the OSC thread --------------------------------------------------------------------------
    def _run(self) -> None:
        # what handlers queue for the engine is worked off in this thread when each block ends
        # (Server.working_here): no hand-off to the engine thread between a note and its answer
        here = getattr(self.server, "working_here", contextlib.nullcontext)
        while not self._stop.is_set():
            try:
                with here():
                    self._run_timers()
                timeout = IDLE_S
                if self._timers:
                    timeout = min(IDLE_S, max(0.0, (self._timers[0][0] - now_ns()) / 1e9))
                ready, _, _ = select.select([self.sock, self._wake_r], [], [], timeout)
                if self._wake_r in ready:
                    self._wake_r.recv(4096)
                if self.sock in ready:
                    with here():
                        self._receive()
            except Exception as exc:  # nothing a client sends may end this thread (nor fill the log)
                self._log.warning(f"OSC thread: {type(exc).__name__}: {exc}", exc_info=True)
                time.sleep(0.01)

    def _receive(self) -> None:
        for _ in range(BATCH):
            if self._stop.is_set():
                return
            try:
                data, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. Windows reports an ICMP "port unreachable" here
                self._log.warning(f"OSC receive: {exc}")
                return
            self.datagram(data, sender[:2])
            self._run_timers()

    def datagram(self, data: bytes, sender: Address) -> None:
        """One UDP packet from ``sender``."""
        self.stats["packets"] += 1
        if not self._allowed(sender[0]):
            self.stats["refused"] += 1
            self._log.warning(f"OSC from {sender[0]}:{sender[1]} refused (not in --osc-allow)")
            return
        try:
            packet = OscPacket(data)
        except Exception as exc:  # python-osc raises several kinds on garbage
            self.problem(sender, f"malformed OSC packet ({len(data)} bytes): {osc.plain(str(exc), limit=160)}")
            return
        wall, mono = time.time(), now_ns()
        for timed in packet.messages:
            delay = timed.time - wall
            if delay > MAX_AHEAD_S:
                self.problem(sender, f"{timed.message.address}: bundle time tag is {delay:.0f} s ahead (at most {MAX_AHEAD_S:g} s)")
            elif delay > 0.0005:
                try:
                    self.later(mono + int(delay * 1e9), lambda m=timed.message: self.message(m, sender))
                except MusicRNNError as exc:
                    self.problem(sender, f"{timed.message.address}: {exc}")
            else:
                self.message(timed.message, sender)

    def message(self, msg: OscMessage, sender: Address) -> None:
        """One OSC message, now."""
        self.stats["messages"] += 1
        address = msg.address
        handlers = self._exact.get(address)  # a plain address: one dict lookup, not python-osc's pattern match
        if handlers is None:
            handlers = list(self.dispatcher.handlers_for_address(address)) if address.startswith("/") else []
        if not handlers:
            self.problem(sender, osc.unknown(address))
            return
        for h in handlers:
            try:
                h.invoke(sender, msg)
            except Exception as exc:  # a bug in a handler: report it (the log at a bounded rate), keep serving
                self._log.warning(f"OSC handler for {address} failed", exc_info=True)
                self.problem(sender, f"{address}: internal error: {type(exc).__name__}: {exc}")

    def _run_timers(self) -> None:
        now = now_ns()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            try:
                fn()
            except MusicRNNError as exc:
                self._log.warning(f"OSC: {exc}")
            except Exception:
                self._log.warning("OSC timer failed", exc_info=True)


def _ipv4(host: str, what: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise MusicRNNError(f"{what} {host!r} is not an IPv4 address (e.g. 127.0.0.1, 0.0.0.0 or 192.168.1.20)") from None
    if addr.version != 4:
        raise MusicRNNError(f"{what} {host!r}: OSC here speaks IPv4 only")
    return str(addr)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network("127.0.0.1/32" if text == "localhost" else text, strict=False)
    except ValueError:
        raise MusicRNNError(f"--osc-allow {text!r}: give an IP address or a network, e.g. 192.168.1.20 or 192.168.1.0/24") from None
