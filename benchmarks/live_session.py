"""What benchmarks/flood.py and benchmarks/soak.py (and their short CI versions in
tests/test_live_stress.py) share: a private JACK server, ``musicrnn serve`` as a subprocess
watched from outside (its memory, its output), a recording "DAW", a "player", and timing of
answers.

Everything started here is stopped by ``close()`` (or the context managers), also on errors.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import mido
import numpy as np

S = 1e9
ANSWER_NOW_CC, PANIC_CC, MODE_CC = 24, 25, 23


def now_ns() -> int:
    return time.monotonic_ns()


def pct(values_ns: Iterable[float]) -> dict:
    """n, p50, p99, max of nanosecond values, in ms."""
    a = np.asarray(list(values_ns), dtype=np.float64) / 1e6
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 2), "p99": round(float(np.percentile(a, 99)), 2),
            "max": round(float(a.max()), 2)}


class Jack:
    """A private ``jackd -d dummy`` (named ``name``, or a fresh name); ``env`` is what clients
    need (JACK_DEFAULT_SERVER, also set in this process's environment), ``backend`` (mido,
    rtmidi UNIX_JACK) is for clients in this process. jackd's output goes to ``log`` (the tests'
    per-test jackd.log), or nowhere."""

    def __init__(self, name: str | None = None, log: Path | None = None) -> None:
        self.name = name or f"musicrnn-stress-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": self.name, "PYTHONUNBUFFERED": "1"}
        self._log = open(log, "w") if log is not None else None
        self.proc = subprocess.Popen(["jackd", "-n", self.name, "-d", "dummy", "-r", "48000", "-p", "64"], env=self.env,
                                     stdout=self._log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        from musicrnn.live.midi_ports import _probe

        deadline = time.monotonic() + 10
        while _probe("jack") is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("jackd did not start" + (f": {log.read_text()[-500:]}" if log is not None else ""))
            time.sleep(0.05)
        self.backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)

    def port(self, kind: str, part: str) -> str:
        """The full name of the input/output port whose name contains ``part``."""
        names = self.backend.get_input_names() if kind == "input" else self.backend.get_output_names()
        found = [n for n in names if part in n]
        if len(found) != 1:
            raise RuntimeError(f"{kind} port {part!r} among {names}")
        return found[0]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> Jack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoteLog:
    """Notes heard, with their arrival times, and the checks every witness runs on them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[int, mido.Message]] = []

    def note_ons(self, after: int = 0) -> list[int]:
        with self.lock:
            return [t for t, m in self.messages if m.type == "note_on" and m.velocity > 0 and t >= after]

    def sounding(self) -> set[int]:
        """Notes whose note-on has had no note-off (yet); a re-strike without an off counts as stuck."""
        with self.lock:
            return sounding([m for _, m in self.messages])

    def restrikes_without_off(self) -> int:
        with self.lock:
            return restrikes_without_off([m for _, m in self.messages])


class Recorder(_NoteLog):
    """The DAW: every message from the server's output, with its arrival time.

    It reads through python-rtmidi's own queue (filled in C inside JACK's process thread) and a
    Python thread that drains it, not through a Python callback (mido's way). A callback runs in
    JACK's process thread and must take the GIL first; when that wait outlasts a JACK period,
    the sender has already rewritten the port buffer, ``jack_midi_event_get`` fails, and RtMidi
    (which ignores that) hands the previous event again in place of the rest of the period's
    events (and the periods it missed are lost). Ten note-ons 40..49 sent while the GIL was held
    arrived as ten note-ons 40: phantom re-strikes, lost note-offs. That is what the 10-minute
    soak's one "re-strike without a note-off" was (tests/test_live_stress.py reproduces it).

    Arrival times: RtMidi stamps each message in the JACK thread (a delta to the previous one,
    from ``jack_get_time``); the drain's clock is an upper bound for each message, so a message
    arrived at ``min(drained, previous arrival + delta)``.
    """

    QUEUE = 65536  # messages RtMidi may hold for the drain thread

    def __init__(self, backend, port: str) -> None:
        import rtmidi

        super().__init__()
        self.overflow = False
        api = getattr(rtmidi, f"API_{getattr(backend, 'api', None) or 'UNIX_JACK'}")
        self._rt = rtmidi.MidiIn(api, name=f"recorder-{uuid.uuid4().hex[:5]}", queue_size_limit=self.QUEUE)
        self._rt.ignore_types(sysex=True, timing=True, active_sense=True)
        names = self._rt.get_ports()
        if port not in names:
            self._rt.delete()
            raise RuntimeError(f"input port {port!r} not among {names}")
        self._rt.open_port(names.index(port), name="in")
        self._last: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="recorder", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            got = self._rt.get_message()
            if got is None:
                time.sleep(0.0003)
                continue
            data, delta = got
            t = now_ns()
            if self._last is not None:
                t = min(t, self._last + int(delta * S))
            self._last = t
            try:
                msg = mido.Message.from_bytes(data)
            except ValueError:
                continue
            with self.lock:
                self.messages.append((t, msg))


    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._rt.close_port()
        self._rt.delete()


def sounding(messages: Iterable[mido.Message]) -> set[int]:
    """Pitches left on after ``messages`` (All Notes Off, CC 123, ends them all)."""
    on: set[int] = set()
    for m in messages:
        if m.type == "note_on" and m.velocity > 0:
            on.add(m.note)
        elif m.type in ("note_on", "note_off"):
            on.discard(m.note)
        elif m.type == "control_change" and m.control == 123:  # all notes off (panic)
            on.clear()
    return on


def restrikes_without_off(messages: Iterable[mido.Message]) -> int:
    """Note-ons for a pitch whose earlier note-on had no note-off yet (CC 123 does not count as
    one: the server sends each note-off itself before it)."""
    on: set[int] = set()
    bad = 0
    for m in messages:
        if m.type == "note_on" and m.velocity > 0:
            bad += m.note in on
            on.add(m.note)
        elif m.type in ("note_on", "note_off"):
            on.discard(m.note)
    return bad


class Serve:
    """``python -m musicrnn serve`` on virtual JACK ports (``jack`` None: no MIDI at all, for
    OSC-only runs), watched from outside; always stopped."""

    def __init__(self, jack: Jack | None, model: str | Path, port_name: str, *args: str, osc: bool = False) -> None:
        import psutil

        self.port_name = port_name
        midi = (["--midi-api", "jack", "--midi-in", "virtual", "--midi-out", "virtual", "--port-name", port_name]
                if jack is not None else ["--midi-in", "none", "--midi-out", "none"])
        cmd = [sys.executable, "-m", "musicrnn", "serve", "--model", str(model), *midi, *args]
        if osc:
            cmd += ["--osc-port", "0"]
        env = {**(jack.env if jack is not None else os.environ), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for r in self._readers:
            r.start()
        self.osc_port: int | None = None

    @staticmethod
    def _read(stream, dest: list[str]) -> None:
        for line in stream:
            dest.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any("Ctrl-C to stop" in line for line in self.out):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"musicrnn serve did not start (rc {self.proc.poll()}): {' | '.join(self.err[-5:])}")
            time.sleep(0.02)
        ready = next(line for line in self.out if "Ctrl-C to stop" in line)
        m = re.search(r"OSC on [^:;]+:(\d+)", ready)
        self.osc_port = int(m.group(1)) if m else None

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        for r in self._readers:
            r.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def notes_in(self) -> int | None:
        for line in self.out:
            m = re.search(r"stopped: (\d+) notes in", line)
            if m:
                return int(m.group(1))
        return None

    def tracebacks(self) -> list[str]:
        return [line for line in self.err if "Traceback" in line or "Error" in line]


class Session:
    """A JACK server (own or given), a serve process, a recorder and a player, closed together.
    With ``osc``: an OSC client for requests and a :class:`NoteListener` subscribed to the
    generated notes (a second witness of the output, beside the MIDI recording). With
    ``midi=False``: no JACK, no MIDI ports (``serve --midi-in none --midi-out none``): OSC only."""

    def __init__(self, model: str | Path, *serve_args: str, jack: Jack | None = None, osc: bool = False,
                 port_name: str | None = None, midi: bool = True) -> None:
        self._own_jack = midi and jack is None
        self.jack = (jack or Jack()) if midi else None
        self.serve: Serve | None = None
        self.rec: Recorder | None = None
        self.player = None
        self.osc: OscClient | None = None
        self.listener: NoteListener | None = None
        try:
            name = port_name or f"mrs{uuid.uuid4().hex[:5]}"
            self.serve = Serve(self.jack, model, name, *serve_args, osc=osc)
            self.serve.wait_ready()
            if self.jack is not None:
                self.rec = Recorder(self.jack.backend, self.jack.port("input", f"{name} out"))
                self.player_port = self.jack.port("output", f"{name} in")
                self.player = self.jack.backend.open_output(self.player_port)
            if osc and self.serve.osc_port:
                self.osc = OscClient(self.serve.osc_port)
                self.listener = NoteListener(self.serve.osc_port)
                if not self.listener.wait_subscribed():
                    raise RuntimeError("the OSC note listener got no answer to /musicrnn/subscribe")
        except BaseException:
            self.close()
            raise

    def cc(self, control: int, value: int) -> None:
        self.player.send(mido.Message("control_change", control=control, value=value))

    def play(self, pitches: Iterable[int], dur: float = 0.12, gap: float = 0.04) -> None:
        for p in pitches:
            self.player.send(mido.Message("note_on", note=p, velocity=90))
            time.sleep(dur)
            self.player.send(mido.Message("note_off", note=p))
            time.sleep(gap)

    def answer_latency(self, timeout: float = 2.0) -> int | None:
        """End of call (CC 24) -> the first note of the answer, in ns (None: no answer in time).
        The server runs with --answer-start now, so this is the reaction time of the engine."""
        t0 = now_ns()
        self.cc(ANSWER_NOW_CC, 127)
        self.cc(ANSWER_NOW_CC, 0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ons = self.rec.note_ons(after=t0)  # type: ignore[union-attr]
            if ons:
                return ons[0] - t0
            time.sleep(0.001)
        return None

    def close(self) -> int | None:
        rc = None
        if self.osc is not None:
            self.osc.close()
        if self.serve is not None:
            try:
                rc = self.serve.terminate()
            except subprocess.TimeoutExpired:
                self.serve.kill()
            self.serve.kill()
        time.sleep(0.1)  # the last note-offs (MIDI and OSC) arrive
        for client in (self.rec, self.player, self.listener):
            if client is not None:
                client.close()
        self.rec_closed = True
        if self._own_jack and self.jack is not None:
            self.jack.close()
        return rc


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped for the UDP socket bound to ``port`` on 127.0.0.1 (its
    receive buffer was full): the ``drops`` column of /proc/net/udp (Linux), else None."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    want = f"0100007F:{port:04X}"
    for line in lines:
        cols = line.split()
        if len(cols) > 12 and cols[1] == want:
            return int(cols[-1])
    return None


class NoteListener(_NoteLog):
    """An OSC subscriber on 127.0.0.1 that records every generated note (``/musicrnn/out/...``)
    as MIDI messages, with arrival times, from a thread of its own. The scheduler hands its OSC
    sink exactly what the MIDI output gets, so this is a second witness of the output. Its
    receive buffer is large; :meth:`drops` says whether the kernel still dropped anything."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 2**20)
                break
            except OSError:
                continue
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        super().__init__()
        self.statuses = 0
        self.final_drops: int | None = None  # drops() when closed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="note-listener", daemon=True)
        self._thread.start()
        OscClient.send_from(self.sock, self.server, "/musicrnn/subscribe")

    def _read(self) -> None:
        from pythonosc.osc_message import OscMessage

        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            t = now_ns()
            try:
                m = OscMessage(data)
            except Exception:
                continue
            if m.address == "/musicrnn/out/note_on":
                msg = mido.Message("note_on", note=int(m.params[0]), velocity=int(m.params[1]))
            elif m.address == "/musicrnn/out/note_off":
                msg = mido.Message("note_off", note=int(m.params[0]))
            else:
                if m.address == "/musicrnn/status":
                    self.statuses += 1
                continue
            with self.lock:
                self.messages.append((t, msg))

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.statuses and time.monotonic() < deadline:
            time.sleep(0.01)
        return bool(self.statuses)


    def drops(self) -> int | None:
        return udp_drops(self.port)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self.final_drops = self.drops()
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class OscClient:
    """Just enough OSC to ask for status and load a model (UDP on loopback)."""

    def __init__(self, port: int) -> None:
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def send(self, address: str, *args) -> None:
        self.send_from(self.sock, self.addr, address, *args)

    @staticmethod
    def send_from(sock: socket.socket, addr: tuple[str, int], address: str, *args) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        sock.sendto(b.build().dgram, addr)

    def request(self, address: str, *args, want: str = "/musicrnn/status", timeout: float = 10.0):
        """Send, then wait for a reply to ``want`` (or /musicrnn/error): (address, args) or None."""
        from pythonosc.osc_message import OscMessage

        self.sock.settimeout(0)
        try:
            while True:
                self.sock.recv(65536)  # drop stale replies
        except (BlockingIOError, OSError):
            pass
        self.send(address, *args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            try:
                msg = OscMessage(data)
            except Exception:
                continue
            if msg.address in (want, "/musicrnn/error"):
                return msg.address, list(msg.params)
        return None

    def close(self) -> None:
        self.sock.close()


_SENDER_LOOP = r"""
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
sent, n, t0 = 0, len(items), time.perf_counter()
end = t0 + seconds
while True:
    now = time.perf_counter()
    if now >= end:
        break
    due = int((now - t0) * rate)
    while sent < due:
        send(items[sent % n])
        sent += 1
    time.sleep(0.0005)
elapsed = time.perf_counter() - t0
"""


def sender_code(setup: str, report: str) -> str:
    """The program of a load generator for :func:`run_sender` (the MIDI and the OSC flood):
    ``setup`` (after ``import json, sys, time``) defines ``rate``, ``seconds``, ``items`` and
    ``send(item)``; the paced loop sends ``items`` round and round, ``rate`` per second for
    ``seconds``; ``report`` (given ``sent``, ``n`` and ``elapsed``) prints the JSON line of what was sent."""
    return "import json, sys, time\n" + setup + _SENDER_LOOP + report


_FLOOD_CODE = sender_code(r"""
import mido
port_name, rate, seconds, lo, hi = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
port = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True).open_output(port_name)
items = []
for i in range(2000):
    p = lo + (i * 7) % (hi - lo)
    items += [mido.Message("note_on", note=p, velocity=1 + i % 127), mido.Message("note_off", note=p)]
    if i % 50 == 0:
        items.append(mido.Message("control_change", control=70, value=i % 128))  # CC 70 drives no control
send = port.send
""", r"""
for p in range(lo, hi):  # whatever was cut short: every key up
    port.send(mido.Message("note_off", note=p))
time.sleep(0.05)
port.close()
print(json.dumps({"messages": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed)}))
""")


def run_sender(code: str, args: list[str], seconds: float, what: str, env: dict | None = None) -> dict:
    """Run a load generator (``python -c code args``) in a process of its own, so it competes
    with nobody's GIL here: it prints "ready", waits for "go" on stdin, sends for ``seconds``,
    and prints one JSON line of what it sent, which is returned."""
    import json

    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError(f"{what} did not start: {proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
        out, err = proc.communicate("go\n", timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {err[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


def flood(jack: Jack, port: str, rate: float, seconds: float, pitches: tuple[int, int] = (36, 96)) -> dict:
    """From a process of its own (so that it competes with nobody's GIL here): note-on/note-off
    pairs (every note-on followed by its note-off, and some CCs that drive nothing) to ``port``
    at ``rate`` messages per second for ``seconds``; then every key up. Returns what was sent."""
    return run_sender(_FLOOD_CODE, [port, str(rate), str(seconds), str(pitches[0]), str(pitches[1])], seconds,
                      "flood sender", env=jack.env)
