"""Doubles and waits for the live-play tests: an output port that records, a scheduler that logs
what the conductor asks of it, the hanging-note check, and a busy-free tick loop."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import mido

from musicrnn.live.clock import now_ns

if TYPE_CHECKING:
    from musicrnn.live.modes import Conductor


class RecordingOutput:
    """An output port double: records (time, message); can be told to fail."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sent: list[tuple[int, mido.Message]] = []
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def send(self, msg: mido.Message) -> None:
        with self.lock:
            if self.fail_after is not None and len(self.sent) >= self.fail_after:
                raise OSError("port vanished")
            self.sent.append((now_ns(), msg))

    def messages(self) -> list[mido.Message]:
        with self.lock:
            return [m for _, m in self.sent]


def hanging_notes(messages) -> set[int]:
    """Pitches left on; also fails on a note-on for a pitch already on (a lost note-off)."""
    on: set[int] = set()
    for m in messages:
        if m.type == "note_on" and m.velocity > 0:
            assert m.note not in on, f"note {m.note} struck again without its note-off"
            on.add(m.note)
        elif m.type in ("note_on", "note_off"):
            on.discard(m.note)
    return on


def wait_until(cond, timeout: float = 5.0) -> bool:
    """Poll ``cond`` every 5 ms until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


class FakeScheduler:
    """Records what the conductor asks of the output thread, in order."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def play(self, notes) -> None:
        self.log += [("note", t, p, v) for t, p, v in notes]

    def stop_notes(self) -> None:
        self.log.append(("stop",))

    def panic(self) -> None:
        self.log.append(("panic",))

    def notes(self, since: int = 0) -> list[tuple[int, int, int]]:
        return [e[1:] for e in self.log[since:] if e[0] == "note"]


def run(cond: Conductor, until_ns: int, start_ns: int = 0, step_ns: int = 10_000_000) -> None:
    """Tick as a busy-free engine thread would: at every wake-up, or every 10 ms."""
    t = start_ns
    while t < until_ns:
        cond.tick(t)
        wake = cond.next_wakeup()
        t = min(t + step_ns, wake) if wake is not None and wake > t else t + step_ns
