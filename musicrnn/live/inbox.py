"""The inbox of a live session and the threads that work it off.

Holds:
- :class:`Inbox`: what waits for the engine, in arrival order: the player's timestamped events
  (bounded; on a flood the oldest are dropped) and control commands (small, bounded, never
  reordered).
- :class:`Worker`: who works the inbox off. An input thread (MIDI, OSC) that queued something
  does it itself, at once, inside :meth:`Worker.working_here` (no hand-off); otherwise the engine
  thread, which also does what time brings (the model's next decision, silence) and idle-time
  preparation. Whoever holds the work lock is the only one touching the conductor and engine.

Threads and queues::

    MIDI input thread (RtMidi's queue)   OSC thread              any thread (CLI, tests)
      stamps each message, feeds           parses, checks,         note_on(), set_mode(), ...
      MIDI clock, drops echoes             answers errors               │
            └──────────────────► Inbox ◄──────┘◄────────────────────────┘
                                   │   events: bounded, oldest dropped and counted
                                   │   commands: small, bounded, never reordered
                                   ▼
        whoever holds the work lock: Conductor + Engine (the model, one torch thread)
          - the input thread that queued it, at once (Worker.working_here): no hand-off
          - else the engine thread (woken), which also does what time brings (the model's
            next decision, silence) and idle-time preparation
                                   │  Scheduler.play / stop_notes / panic
                                   ▼
        notes due now: sent by the calling thread (under the scheduler's lock);
        later ones, note-offs and length limits: the scheduler thread. Every note goes to
        the MIDI output port, then to its sinks (OSC subscribers), note for note.

What an event or command does is the session's (:mod:`musicrnn.live.server`); an error in the
work stops the session (every note ends), a refused command (a :class:`MusicRNNError`) is only
told.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator

import mido

from musicrnn.errors import MusicRNNError
from musicrnn.live.clock import now_ns

log = logging.getLogger("musicrnn.live")

INPUT_QUEUE = 1024  # player events waiting for the engine; on a flood the oldest are dropped
COMMAND_QUEUE = 256  # control requests waiting for the engine
IDLE_WAIT_S = 0.05  # the engine thread wakes at least this often


class Inbox:
    """What the engine thread works off, in arrival order: timestamped player events (bounded;
    on a flood the oldest are dropped, but a dropped note-off is still delivered as a release)
    and commands (a note then "answer now", sent in that order, are handled in that order)."""

    def __init__(self, max_events: int = INPUT_QUEUE, max_commands: int = COMMAND_QUEUE) -> None:
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._events: deque[tuple[int, int, mido.Message]] = deque()  # (arrival order, time, message)
        self._commands: deque[tuple[int, Callable[[], None]]] = deque()
        self.max_events, self.max_commands = max_events, max_commands
        self._released: dict[tuple[int, int], int] = {}  # (channel, note) -> time, of dropped note-offs
        self.dropped = 0
        self.dropped_commands = 0

    def put_event(self, t_ns: int, msg: mido.Message, notify: bool = True) -> None:
        """``notify=False``: the caller works the inbox off itself (see :meth:`Worker.working_here`)."""
        with self._cv:
            if len(self._events) >= self.max_events:
                _, t_old, old = self._events.popleft()
                self.dropped += 1
                if old.type == "note_off" or (old.type == "note_on" and old.velocity == 0):
                    self._released[(old.channel, old.note)] = t_old  # at most 16 x 128 entries
            self._events.append((next(self._seq), t_ns, msg))
            if notify:
                self._cv.notify()

    def put_command(self, fn: Callable[[], None], notify: bool = True) -> bool:
        with self._cv:
            if len(self._commands) >= self.max_commands:
                self.dropped_commands += 1
                return False
            self._commands.append((next(self._seq), fn))
            if notify:
                self._cv.notify()
            return True

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for anything to arrive (or :meth:`wake`)."""
        with self._cv:
            if not self._events and not self._commands and not self._released and timeout > 0:
                self._cv.wait(timeout)

    def take(self) -> list[tuple[int, mido.Message] | Callable[[], None]]:
        """Everything waiting, in arrival order: player events as ``(time_ns, message)``,
        commands as callables (releases of dropped note-offs first)."""
        with self._cv:
            items: list = [(t, mido.Message("note_off", channel=ch, note=n)) for (ch, n), t in self._released.items()]
            self._released.clear()
            for entry in heapq.merge(self._events, self._commands, key=lambda e: e[0]):
                items.append(entry[1:] if len(entry) == 3 else entry[1])
            self._events.clear()
            self._commands.clear()
        return items

    def __len__(self) -> int:
        return len(self._events)

    def waiting(self) -> bool:
        """Is anything waiting (a hint, read without the lock)?"""
        return bool(self._events or self._commands or self._released)


class Worker:
    """Works a session's inbox off, in the engine thread or in the input thread that queued it.

    ``handle(t_ns, message)`` does one player event (in order with the commands); ``publish()``
    refreshes the session's status after each round; ``events`` gets a line per refused
    command. ``conductor`` (given to :meth:`start`) is only touched under the work lock."""

    def __init__(self, inbox: Inbox, handle: Callable[[int, mido.Message], None], publish: Callable[[], object],
                 events: deque[str]) -> None:
        self.inbox = inbox
        self.handle = handle
        self.publish = publish
        self.events = events
        self.conductor = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._work = threading.Lock()  # held by whichever thread works the inbox off (see working_here)
        self._here = threading.local()  # .active: this input thread works off what it queues

    # --- life cycle ----------------------------------------------------------------------------
    def start(self, conductor) -> None:
        self.conductor = conductor
        self._thread = threading.Thread(target=self._run, name="musicrnn-engine", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Ask the engine thread to stop (it ends at its next wake-up, which this brings)."""
        self._stop.set()
        self.inbox.wake()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work stops (an error, or :meth:`halt`); True if it did."""
        return self._stop.wait(timeout)

    # --- who works: the engine thread, or an input thread --------------------------------------
    @property
    def notify(self) -> bool:
        """Wake the engine thread for what is queued now? Not from inside :meth:`working_here`
        (that thread works it off itself when the block ends)."""
        return not getattr(self._here, "active", False)

    @contextlib.contextmanager
    def working_here(self) -> Iterator[None]:
        """For input threads (OSC, MIDI): queue what arrives inside the block, then do the
        engine's work for it in this thread, right away, instead of waking the engine thread
        (a hand-off between Python threads costs a wake-up and a GIL switch, often more than
        the work). If another thread is working already, the engine thread is woken instead."""
        self._here.active = True
        try:
            yield
        finally:
            self._here.active = False
            if self.inbox.waiting():
                self.work_now()

    def work_now(self) -> None:
        """Work off the inbox in this thread if no other thread is at it (else wake the engine thread)."""
        if self._thread is None or self._stop.is_set() or not self._work.acquire(blocking=False):
            self.inbox.wake()
            return
        try:
            if not self._stop.is_set():
                self._work_off()
        finally:
            self._work.release()

    def _run(self) -> None:
        """The engine thread: time-driven work (the model's next decision, silence), and
        whatever input threads leave to it."""
        conductor = self.conductor
        assert conductor is not None
        try:
            while not self._stop.is_set():
                wake = conductor.next_wakeup()
                wait = IDLE_WAIT_S if wake is None else min(IDLE_WAIT_S, max(0.0, (wake - now_ns()) / 1e9))
                self.inbox.wait(wait)
                with self._work:
                    if not self._stop.is_set():
                        self._work_off()
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._stop.set()
            conductor.scheduler.stop_notes()

    def _work_off(self) -> None:
        """Everything queued, in arrival order; then what time brings; then idle-time
        preparation. Holds ``self._work``. An error stops the session (all notes end)."""
        conductor = self.conductor
        assert conductor is not None
        try:
            for item in self.inbox.take():
                if callable(item):
                    try:
                        item()
                    except MusicRNNError as exc:
                        self.events.append(f"refused: {exc}")
                        log.warning("%s", exc)
                else:
                    t, msg = item
                    conductor.tick(t, now_ns())
                    self.handle(t, msg)
            conductor.tick(now_ns())
            self.publish()
            if not self.inbox.waiting():
                conductor.prepare()
        except BaseException as exc:
            if threading.current_thread() is self._thread:
                raise
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        log.error("live engine stopped: %s", exc)
        self.halt()
        if self.conductor is not None:
            self.conductor.scheduler.stop_notes()
