"""Musical time for live play: where the beat is now, and when a beat will come.

Holds:
- :func:`now_ns`: the one time source of the live engine (monotonic, high resolution; never the
  wall clock, which jumps).
- :class:`InternalClock`: a steady tempo that can change live without the beat jumping.
- :class:`MidiClock`: follows MIDI clock from the input: 24 pulses per quarter note, start, stop,
  continue and song position pointer. Tempo and phase come from a least-squares line through
  the recent pulses, so the jitter of single pulses does not move the beat.
- :class:`Timebase`: converts between clock time and the codec's time unit (beats counted from
  an origin on the codec's step grid, or seconds).

A clock is written by one thread and read by others: every update swaps in one immutable
:class:`Line` (``beat = beat0 + rate * (t - t0)``), so a reader never sees half an update.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import NamedTuple

now_ns = time.perf_counter_ns  # monotonic on every platform, with sub-microsecond resolution

PPQN = 24  # MIDI clock pulses per quarter note
STALL_NS = 250_000_000  # no pulse for this long: the MIDI clock is treated as halted where it is
GAP_NS = 500_000_000  # a gap this long between pulses starts a fresh tempo estimate
FIT_PULSES = 48  # pulses in the tempo/phase fit: two beats smooth jitter yet follow tempo changes


class Line(NamedTuple):
    """The clock at one moment: ``beat = beat0 + rate * (t - t0)`` while running."""

    t0: int  # ns
    beat0: float
    rate: float  # beats per ns
    running: bool
    generation: int  # changes whenever the beat position jumps (start, continue, song position)
    t_max: int | None = None  # beyond this time the clock does not extrapolate (a halted MIDI clock)


class Clock:
    """Beat position over time. Subclasses update ``_line``; everything here only reads it."""

    source = "clock"

    def __init__(self, bpm: float) -> None:
        self._line = Line(now_ns(), 0.0, bpm / 60e9, False, 0)

    @property
    def bpm(self) -> float:
        return self._line.rate * 60e9

    @property
    def running(self) -> bool:
        return self._line.running

    @property
    def generation(self) -> int:
        return self._line.generation

    def beat_at(self, t_ns: int | None = None) -> float:
        """Beat position at ``t_ns`` (default: now); frozen while the clock is stopped."""
        line = self._line
        if not line.running:
            return line.beat0
        t = now_ns() if t_ns is None else t_ns
        if line.t_max is not None and t > line.t_max:
            t = line.t_max
        return line.beat0 + line.rate * (t - line.t0)

    def time_of(self, beat: float) -> int | None:
        """When ``beat`` will come (or came), in ns; None while the clock is stopped."""
        line = self._line
        if not line.running or line.rate <= 0:
            return None
        return line.t0 + int(round((beat - line.beat0) / line.rate))


class InternalClock(Clock):
    """A steady tempo, running from the moment it is made (beat 0 = ``start_ns``)."""

    source = "internal"

    def __init__(self, bpm: float = 120.0, start_ns: int | None = None) -> None:
        super().__init__(bpm)
        self._line = Line(now_ns() if start_ns is None else start_ns, 0.0, bpm / 60e9, True, 0)

    def set_tempo(self, bpm: float, at_ns: int | None = None) -> None:
        """Change tempo at ``at_ns`` (default now); the beat position carries on without a jump."""
        t = now_ns() if at_ns is None else at_ns
        beat = self.beat_at(t)
        self._line = self._line._replace(t0=t, beat0=beat, rate=bpm / 60e9)


class MidiClock(Clock):
    """Follows MIDI clock messages; feed them with :meth:`feed` as they arrive, stamped with
    :func:`now_ns` at arrival. Until pulses arrive, ``bpm`` is the fallback tempo."""

    source = "midi"

    def __init__(self, fallback_bpm: float = 120.0) -> None:
        super().__init__(fallback_bpm)
        self._lock = threading.Lock()  # one writer is expected; the lock makes two safe too
        self._pulses: deque[tuple[int, int]] = deque(maxlen=FIT_PULSES)  # (t_ns, pulse counter)
        self._count = 0  # pulses seen since creation (continuous across start/stop)
        self._position = 0  # song position in pulses where the next start/continue resumes
        self._armed = False  # start/continue seen; the next pulse is at ``_position``
        self._anchor: tuple[int, int] | None = None  # (pulse counter, song position in pulses)
        self._generation = 0
        self._rate = fallback_bpm / 60e9  # beats per ns, last estimate

    def feed(self, kind: str, t_ns: int, pos: int | None = None) -> None:
        """One message: ``kind`` is the mido type: clock, start, stop, continue or songpos
        (``pos`` in sixteenth notes, as the message carries it)."""
        with self._lock:
            if kind == "clock":
                self._pulse(t_ns)
            elif kind == "start":
                self._position, self._armed = 0, True
                self._freeze(t_ns, 0.0)
            elif kind == "continue":
                self._armed = True
                self._freeze(t_ns, self._position / PPQN)
            elif kind == "stop":
                if self._line.running:
                    self._position = self._next_pulse_position()
                    self._freeze(t_ns, self.beat_at(t_ns))
                self._armed = False
            elif kind == "songpos" and pos is not None:
                self._position = int(pos) * 6  # sixteenths -> pulses
                if self._line.running:
                    self._armed = True  # the next pulse lands on the new position
                else:
                    self._generation += 1
                    self._freeze(t_ns, self._position / PPQN)

    def _next_pulse_position(self) -> int:
        if self._anchor is None:
            return self._position
        n0, p0 = self._anchor
        return p0 + (self._count - n0) + 1

    def _freeze(self, t_ns: int, beat: float) -> None:
        self._line = Line(t_ns, beat, self._rate, False, self._generation)

    def _pulse(self, t: int) -> None:
        if self._pulses and t - self._pulses[-1][0] > GAP_NS:
            self._pulses.clear()
        self._count += 1
        self._pulses.append((t, self._count))
        fit = self._fit()
        if fit is not None:
            self._rate = 1.0 / (fit[1] * PPQN)  # ns per pulse -> beats per ns
        if self._armed:
            self._anchor = (self._count, self._position)
            self._armed = False
            self._generation += 1
        elif not self._line.running:
            self._line = self._line._replace(rate=self._rate)  # pulses while stopped only refine the tempo
            return
        n0, p0 = self._anchor  # type: ignore[misc]
        # where the fitted line puts this pulse (less jitter than its arrival time)
        t_fit = int(fit[0] + fit[1] * self._count) if fit is not None and len(self._pulses) >= 6 else t
        beat = (p0 + self._count - n0) / PPQN
        self._line = Line(t_fit, beat, self._rate, True, self._generation, t + STALL_NS)

    def _fit(self) -> tuple[float, float] | None:
        """Least squares t = a + b * n over the recent pulses: (a, b ns per pulse)."""
        k = len(self._pulses)
        if k < 3:
            return None
        n_mean = sum(n for _, n in self._pulses) / k
        t_ref = self._pulses[0][0]  # keep the sums small for float precision
        t_mean = sum(t - t_ref for t, _ in self._pulses) / k
        sxx = sum((n - n_mean) ** 2 for _, n in self._pulses)
        sxy = sum((n - n_mean) * (t - t_ref - t_mean) for t, n in self._pulses)
        b = sxy / sxx
        if b <= 0:
            return None
        return t_ref + t_mean - b * n_mean, b


class Timebase:
    """Codec time ⇄ clock time for one session.

    Beat codecs count beats from an origin on the codec's step grid, so grid steps fall on the
    clock's beats; seconds codecs count seconds from the session start. When the clock jumps
    (start, continue, song position) :meth:`follow` moves the origin so codec time never goes
    backwards and stays on the grid.
    """

    def __init__(self, clock: Clock, in_beats: bool, steps_per_unit: float, t_ns: int | None = None) -> None:
        self.clock = clock
        self.in_beats = bool(in_beats)  # codec time in beats (Codec.follows_tempo), else in seconds
        self.spu = float(steps_per_unit)
        t = now_ns() if t_ns is None else t_ns
        self.generation = clock.generation
        self.origin = math.floor(clock.beat_at(t)) if self.in_beats else 0.0
        self.origin_ns = t

    def to_codec(self, t_ns: int) -> float:
        if self.in_beats:
            return self.clock.beat_at(t_ns) - self.origin
        return (t_ns - self.origin_ns) / 1e9

    def to_ns(self, t: float) -> int | None:
        """When codec time ``t`` sounds; None while a beat clock is stopped."""
        if self.in_beats:
            return self.clock.time_of(t + self.origin)
        return self.origin_ns + int(round(t * 1e9))

    def beat_to_codec(self, beat: float) -> float:
        """Codec time of clock beat ``beat``."""
        if self.in_beats:
            return beat - self.origin
        t = self.clock.time_of(beat)
        return self.to_codec(t) if t is not None else self.to_codec(now_ns())

    def follow(self, latest: float, t_ns: int | None = None) -> bool:
        """After a clock jump, keep codec time ahead of ``latest``; True if it jumped."""
        if not self.in_beats or self.clock.generation == self.generation:
            return False
        self.generation = self.clock.generation
        beat = self.clock.beat_at(now_ns() if t_ns is None else t_ns)
        self.origin = math.floor((beat - latest) * self.spu + 1e-9) / self.spu  # steps stay on the beats
        return True

    def step_on(self, beat: float, latest: float) -> float:
        """Beat codecs: move the origin (forward by less than a step, unless codec time must
        reach ``latest``) so that a codec step falls on clock beat ``beat``; returns that step's
        codec time. An answer then starts, and keeps its steps, on a player's beat that is not
        the clock's."""
        n = max(math.floor((beat - self.origin) * self.spu + 1e-9), math.ceil(latest * self.spu - 1e-9))
        self.origin = beat - n / self.spu
        return n / self.spu

    def step_at_or_after(self, t: float) -> float:
        """Codec time of the first codec step at or after codec time ``t``."""
        return math.ceil(t * self.spu - 1e-9) / self.spu

    def restart_grid_at(self, latest: float, t_ns: int | None = None) -> float:
        """Move the origin so that a codec step starts at ``t_ns`` (default now), at or after
        codec time ``latest``; returns that codec time."""
        t = now_ns() if t_ns is None else t_ns
        start = self.step_at_or_after(latest)
        if self.in_beats:
            self.origin = self.clock.beat_at(t) - start
        else:
            self.origin_ns = t - int(round(start * 1e9))
        return start
