"""The output side of a live session: one thread sends every note, on time, and ends it.

Holds:
- :class:`Scheduler`: the timing thread that owns the output port. Other threads hand it
  notes with :meth:`Scheduler.play` (``(time_ns, pitch, velocity)``, velocity 0 = note-off) and
  control it with :meth:`~Scheduler.stop_notes`, :meth:`~Scheduler.panic` and
  :meth:`~Scheduler.close`. The caller carries its request out itself, under the scheduler's
  lock (what is due now, a note or a stop's note-offs, leaves before the call returns: the
  first note of an answer does not wait for a thread switch); the thread sends what is due
  later and ends notes at the maximum length.
- :class:`EchoFilter`: remembers what was just sent, so our own notes arriving back on the
  input (a MIDI loop through a DAW) are not heard as the player's.
- :class:`Sink`: what else hears every message the output gets, at the same moment (the OSC
  subscribers). A sink never raises and never blocks for long.

Guarantees: every note-on sent is tracked until its note-off; a note longer than the maximum
note length is ended; stop, panic, close, and an error inside the thread itself all end every
sounding note, on the output and on every sink (a note-off reaches the sinks even when the
output has died). Pending note-ons are bounded (extra ones are dropped and counted), and note-ons
later than ``late_ns`` are dropped rather than played out of time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import mido

from musicrnn.limits import LATE_S
from musicrnn.live.clock import now_ns

log = logging.getLogger("musicrnn.live")

MAX_NOTE_S = 8.0  # a note the model never ends is cut after this long
MAX_PENDING = 4096  # note-ons waiting to be sent; more are dropped (a runaway producer cannot grow memory)
EARLY_NS = 200_000  # send when the due time is this close: waking up costs about as much
ECHO_WINDOW_S = 0.08  # our own message coming back on the input within this window is an echo
ALL_NOTES_OFF = 123
AWAKE = -1  # Scheduler._sleep_until while its thread is not waiting


class Output(Protocol):
    def send(self, msg: mido.Message) -> None: ...


class Sink(Protocol):
    def send(self, msg: mido.Message) -> None:
        """Called in the scheduler thread right after ``output`` sent ``msg``; must not raise."""


class Scheduler:
    """Sends timed notes on ``output`` (MIDI ``channel`` 0-15) from its own thread.

    Use as a context manager, or call :meth:`start` and, always, :meth:`close`.
    ``on_sent(msg, t_ns)`` is called (in the scheduler thread) after every message sent.
    ``sinks`` get every message sent, after ``output`` (OSC subscribers hear what MIDI hears).
    """

    def __init__(self, output: Output, channel: int = 0, max_note_s: float = MAX_NOTE_S, late_s: float = LATE_S,
                 max_pending: int = MAX_PENDING, on_sent: Callable[[mido.Message, int], None] | None = None,
                 keep_timings: int = 0, sinks: Iterable[Sink] = ()) -> None:
        if not 0 <= channel <= 15:
            raise ValueError(f"MIDI channel must be 0-15 here, not {channel}")
        self.output = output
        self.channel = channel
        self.max_note_ns = int(max_note_s * 1e9)
        self.late_ns = int(late_s * 1e9)
        self.max_pending = max_pending
        self.on_sent = on_sent
        self.sinks = tuple(sinks)
        self._cv = threading.Condition()
        self._requests: list[tuple] = []  # handed over under the lock, worked off in the thread
        self._thread: threading.Thread | None = None
        self._closing = False
        self._sleep_until: int | None = AWAKE  # when the thread wakes next (None: only when asked)
        self._recheck = False  # a caller sent notes while the thread was awake: look again before sleeping
        # the output side's state: the scheduler thread's, or (under _state) a caller's sending now
        self._state = threading.Lock()
        self._heap: list[tuple[int, int, int, int, int]] = []  # (at, off-first order, seq, pitch, velocity)
        self._pending_ons = 0
        self._seq = itertools.count()
        self._sounding: dict[int, int] = {}  # pitch -> ns its note-on was sent
        self._deadlines: list[tuple[int, int, int]] = []  # (cut at, pitch, on time)
        self.error: BaseException | None = None
        self.stats = {"notes_on": 0, "notes_off": 0, "dropped": 0, "late": 0, "cut": 0, "max_late_ms": 0.0}
        self.timings: deque[tuple[int, int]] = deque(maxlen=keep_timings or 1)  # (due, sent) per note-on
        self._keep_timings = keep_timings > 0

    # --- any thread ----------------------------------------------------------------------------
    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._run, name="musicrnn-scheduler", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def play(self, notes: Iterable[tuple[int, int, int]]) -> None:
        """Notes: ``(time_ns, pitch, velocity)``; velocity 0 ends the note. Those due already
        are sent before this returns (see :meth:`_request`)."""
        batch = [(int(t), int(p), int(v)) for t, p, v in notes]
        if batch:
            self._request(("play", batch))

    def stop_notes(self) -> None:
        """Drop everything not yet sent and end every sounding note now."""
        self._request(("stop",))

    def panic(self) -> None:
        """:meth:`stop_notes`, then All Notes Off (CC 123) on our channel."""
        self._request(("panic",))

    def close(self, timeout: float = 2.0) -> None:
        """End every sounding note and stop the thread (idempotent)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sounding(self) -> int:
        return len(self._sounding)

    def _request(self, req: tuple) -> None:
        """Carry out ``req`` in the caller's thread, under the scheduler's lock and after every
        request before it: what is due now (a note, the note-offs of a stop) is sent before
        this returns, and the scheduler thread is woken only if its next wake-up became too
        late. A hand-off to that thread would cost a wake-up and a GIL switch, the largest
        share of an answer's first-note latency. From the scheduler thread itself, before
        :meth:`start`, or once closing, the request is queued for the thread instead."""
        if self.alive and threading.current_thread() is not self._thread:
            with self._state:
                with self._cv:
                    closing = self._closing
                    if not closing:
                        requests, self._requests = self._requests, []
                if not closing:
                    try:
                        for r in requests:
                            self._apply(r)
                        self._apply(req)
                        self._send_due(now_ns())
                        due = self._next_due()
                    except BaseException as exc:  # as in the thread: the scheduler stops, every note ends
                        self._fail(exc)
                        return
            if not closing:
                with self._cv:
                    if self._sleep_until == AWAKE:
                        self._recheck = True  # it has not gone to sleep yet: it looks again before it does
                    elif due is not None and (self._sleep_until is None or due - EARLY_NS < self._sleep_until):
                        self._cv.notify()
                return
        with self._cv:
            self._requests.append(req)
            self._cv.notify()

    def _fail(self, exc: BaseException) -> None:
        """An error while sending, in the caller's thread (holding ``_state``): stop as the
        thread does on one, ending every sounding note."""
        self.error = exc
        log.error("scheduler stopped: %s", exc)
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._drop_pending()
        self._all_off()

    # --- scheduler thread ----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._state:
                    with self._cv:
                        requests, self._requests = self._requests, []
                        closing, self._recheck = self._closing, False
                    for req in requests:
                        self._apply(req)
                    if closing:
                        break
                    now = now_ns()
                    self._send_due(now)
                    wake = self._next_due()
                with self._cv:
                    if not self._requests and not self._closing and not self._recheck:
                        timeout = None if wake is None else max(0.0, (wake - EARLY_NS - now_ns()) / 1e9)
                        if timeout is None or timeout > 0:
                            self._sleep_until = None if wake is None else wake - EARLY_NS
                            self._cv.wait(timeout)
                            self._sleep_until = AWAKE
        except BaseException as exc:  # the thread must not die with notes sounding
            self.error = exc
            log.error("scheduler stopped: %s", exc)
        finally:
            with self._state:
                self._drop_pending()
                self._all_off()

    def _apply(self, req: tuple) -> None:
        kind = req[0]
        if kind == "play":
            for at, pitch, vel in req[1]:
                if not 0 <= pitch <= 127:
                    continue
                if vel > 0:
                    if self._pending_ons >= self.max_pending:
                        self.stats["dropped"] += 1
                        continue
                    self._pending_ons += 1
                elif pitch not in self._sounding and not self._pending_ons:
                    continue  # nothing this note-off could end
                heapq.heappush(self._heap, (at, 1 if vel > 0 else 0, next(self._seq), pitch, min(vel, 127)))
        elif kind == "stop":
            self._drop_pending()
            self._all_off()
        elif kind == "panic":
            self._drop_pending()
            self._all_off()
            self._send(mido.Message("control_change", channel=self.channel, control=ALL_NOTES_OFF, value=0))

    def _next_due(self) -> int | None:
        cands = [self._heap[0][0]] if self._heap else []
        if self._deadlines:
            cands.append(self._deadlines[0][0])
        return min(cands) if cands else None

    def _send_due(self, now: int) -> None:
        horizon = now + EARLY_NS
        while self._deadlines and self._deadlines[0][0] <= horizon:
            _, pitch, on_ns = heapq.heappop(self._deadlines)
            if self._sounding.get(pitch) == on_ns:
                self.stats["cut"] += 1
                self._off(pitch)
        while self._heap and self._heap[0][0] <= horizon:
            at, _, _, pitch, vel = heapq.heappop(self._heap)
            if vel == 0:
                if pitch in self._sounding:
                    self._off(pitch)
                continue
            self._pending_ons -= 1
            late = now_ns() - at
            if late > self.late_ns:
                self.stats["late"] += 1
                continue
            self.stats["max_late_ms"] = max(self.stats["max_late_ms"], late / 1e6)
            if pitch in self._sounding:  # re-strike: end the sounding note first
                self._off(pitch)
            msg = mido.Message("note_on", channel=self.channel, note=pitch, velocity=vel)
            self.output.send(msg)
            sent = now_ns()
            self._sounding[pitch] = sent  # tracked before anything else can fail
            heapq.heappush(self._deadlines, (sent + self.max_note_ns, pitch, sent))
            self._to_sinks(msg)
            self.stats["notes_on"] += 1
            if self._keep_timings:
                self.timings.append((at, sent))
            self._notify(msg, sent)

    def _off(self, pitch: int) -> None:
        self._sounding.pop(pitch, None)
        self.stats["notes_off"] += 1
        self._send(mido.Message("note_off", channel=self.channel, note=pitch, velocity=0))

    def _send(self, msg: mido.Message) -> None:
        try:
            self.output.send(msg)
        finally:  # a note-off reaches the sinks even if the output has died
            self._to_sinks(msg)
        self._notify(msg, now_ns())

    def _to_sinks(self, msg: mido.Message) -> None:
        for sink in self.sinks:
            try:
                sink.send(msg)
            except Exception as exc:  # a sink breaking its contract must not stop the output
                log.error("output sink %s: %s", type(sink).__name__, exc)

    def _notify(self, msg: mido.Message, t_ns: int) -> None:
        if self.on_sent is not None:
            self.on_sent(msg, t_ns)

    def _drop_pending(self) -> None:
        self._heap.clear()
        self._pending_ons = 0

    def _all_off(self) -> None:
        for pitch in sorted(self._sounding):
            try:
                self._off(pitch)
            except Exception as exc:  # a dead port: nothing more can be ended
                log.error("could not end note %d: %s", pitch, exc)
                self._sounding.pop(pitch, None)
        self._deadlines.clear()


class EchoFilter:
    """Recognises our own output coming back on the input (thread-safe)."""

    def __init__(self, window_s: float = ECHO_WINDOW_S) -> None:
        self.window_ns = int(window_s * 1e9)
        self._sent: deque[tuple[int, tuple]] = deque(maxlen=1024)
        self._lock = threading.Lock()
        self._held: set[tuple[int, int]] = set()  # (channel, note) the player holds: their note-on was no echo
        self.echoes = 0

    @staticmethod
    def _key(msg: mido.Message) -> tuple | None:
        if msg.type in ("note_on", "note_off"):
            on = msg.type == "note_on" and msg.velocity > 0  # a DAW may turn note-off into velocity 0
            return ("on" if on else "off", msg.channel, msg.note)
        if msg.type == "control_change":
            return ("cc", msg.channel, msg.control, msg.value)
        return None

    def sent(self, msg: mido.Message, t_ns: int) -> None:
        key = self._key(msg)
        if key is not None:
            with self._lock:
                self._sent.append((t_ns, key))

    def is_echo(self, msg: mido.Message, t_ns: int) -> bool:
        """True (and the sent message is used up) if ``msg`` is one we sent within the window.
        The note-off of a key the player holds (its note-on was not an echo) is the player's:
        without that rule, a player releasing a pitch the model has just ended would lose the
        release, and the key would stay held for the model (call-response waiting for it)."""
        key = self._key(msg)
        if key is None:
            return False
        with self._lock:
            while self._sent and t_ns - self._sent[0][0] > self.window_ns:
                self._sent.popleft()
            if key[0] == "off" and key[1:] in self._held:
                self._held.discard(key[1:])
                return False
            for i, (t, k) in enumerate(self._sent):
                if k == key and t <= t_ns + 1_000_000:
                    del self._sent[i]
                    self.echoes += 1
                    return True
            if key[0] == "on":
                self._held.add(key[1:])  # at most 16 x 128 entries
        return False
