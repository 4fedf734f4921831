"""Live clocks: internal tempo, following MIDI clock (24 ppqn, start/stop/continue/song position),
and the codec timebase. All times here are made up, so nothing depends on the machine's load."""

from __future__ import annotations

import random

import pytest

from musicrnn.live.clock import PPQN, InternalClock, MidiClock, Timebase

S = 1_000_000_000  # ns per second


def _pulses(clock: MidiClock, start_ns: int, bpm: float, count: int, jitter_ms: float = 0.0, seed: int = 0) -> list[int]:
    """Feed ``count`` pulses at ``bpm`` from ``start_ns`` (jittered like a real MIDI cable); return their ideal times."""
    rng = random.Random(seed)
    period = 60 * S / (bpm * PPQN)
    ideal = [start_ns + int(round(i * period)) for i in range(count)]
    for t in ideal:
        clock.feed("clock", t + int(rng.uniform(-jitter_ms, jitter_ms) * 1e6))
    return ideal


def test_internal_clock_maps_beats_and_times_and_keeps_the_beat_on_a_tempo_change() -> None:
    clock = InternalClock(120, start_ns=0)
    assert clock.running and clock.source == "internal"
    assert clock.beat_at(S) == pytest.approx(2.0)
    assert clock.time_of(3.0) == int(1.5 * S)
    clock.set_tempo(60, at_ns=S)
    assert clock.beat_at(S) == pytest.approx(2.0)  # no jump
    assert clock.beat_at(2 * S) == pytest.approx(3.0)
    assert clock.bpm == pytest.approx(60)


@pytest.mark.parametrize("bpm", [72.0, 123.0, 174.0])
def test_midi_clock_tempo_estimate_within_one_percent(bpm: float) -> None:
    clock = MidiClock(fallback_bpm=100)
    clock.feed("start", 0)
    _pulses(clock, 10_000_000, bpm, 4 * PPQN, jitter_ms=1.0)
    assert clock.running
    assert clock.bpm == pytest.approx(bpm, rel=0.01)


def test_midi_clock_start_stop_continue_and_song_position() -> None:
    clock = MidiClock(fallback_bpm=100)
    assert not clock.running and clock.time_of(1.0) is None
    # a DAW that sends clock while stopped: tempo is learnt, the beat does not move
    t0 = 1 * S
    _pulses(clock, t0, 120, 2 * PPQN)
    assert not clock.running and clock.beat_at(t0 + 5 * S) == 0.0
    assert clock.bpm == pytest.approx(120, rel=0.01)

    # start: the first pulse after it is beat 0
    t_start = t0 + S
    clock.feed("start", t_start - 5_000_000)
    ideal = _pulses(clock, t_start, 120, 2 * PPQN + 1, jitter_ms=0.5)
    g_start = clock.generation
    assert clock.running
    assert clock.beat_at(t_start) == pytest.approx(0.0, abs=0.01)
    assert clock.beat_at(ideal[-1]) == pytest.approx(2.0, abs=0.01)  # pulse 48 = beat 2
    assert clock.time_of(2.5) == pytest.approx(t_start + 1.25 * S, abs=2_000_000)  # prediction, within 2 ms

    # stop: frozen where it stopped
    t_stop = ideal[-1] + 10_000_000
    clock.feed("stop", t_stop)
    assert not clock.running
    frozen = clock.beat_at(t_stop + 3 * S)
    assert frozen == pytest.approx(2.0, abs=0.05)

    # continue: resumes at the next pulse position (49 / 24 beats)
    t_cont = t_stop + 2 * S
    clock.feed("continue", t_cont)
    _pulses(clock, t_cont + 1_000_000, 120, PPQN)
    assert clock.running and clock.generation > g_start
    assert clock.beat_at(t_cont + 1_000_000) == pytest.approx(49 / PPQN, abs=0.02)

    # song position while stopped (in sixteenths): 16 = beat 4; continue from there
    t_sp = t_cont + 2 * S
    clock.feed("stop", t_sp)
    clock.feed("songpos", t_sp + 1000, pos=16)
    assert clock.beat_at(t_sp + S) == pytest.approx(4.0)
    clock.feed("continue", t_sp + 2 * S)
    ideal = _pulses(clock, t_sp + 2 * S + 1_000_000, 120, 13)
    assert clock.beat_at(ideal[12]) == pytest.approx(4.5, abs=0.01)


def test_midi_clock_follows_a_tempo_change_within_two_beats() -> None:
    clock = MidiClock()
    clock.feed("start", 0)
    ideal = _pulses(clock, 1000, 100, 4 * PPQN)
    _pulses(clock, ideal[-1] + int(60 * S / (140 * PPQN)), 140, 2 * PPQN + 2)
    assert clock.bpm == pytest.approx(140, rel=0.01)


def test_midi_clock_halts_when_pulses_stop_arriving() -> None:
    clock = MidiClock()
    clock.feed("start", 0)
    ideal = _pulses(clock, 1000, 120, PPQN + 1)
    assert clock.beat_at(ideal[-1] + 10 * S) < 1.0 + 0.6  # not ten seconds further on


def test_timebase_puts_grid_steps_on_the_beat_and_never_goes_back_after_a_jump() -> None:
    clock = MidiClock()
    clock.feed("start", 0)
    _pulses(clock, S, 120, 3 * PPQN)  # beat 0 at 1 s, beats every 0.5 s
    tb = Timebase(clock, True, 2, t_ns=2 * S)
    assert tb.origin == 2.0
    assert tb.to_codec(2 * S) == pytest.approx(0.0, abs=0.01)
    assert tb.to_ns(0.5) == pytest.approx(2.25 * S, abs=1_000_000)
    # the DAW relocates and starts again: codec time carries on, steps still on the clock's grid
    clock.feed("stop", int(2.6 * S))
    clock.feed("start", 3 * S)
    _pulses(clock, 3 * S + 10_000_000, 120, PPQN)
    assert tb.follow(latest=1.3, t_ns=int(3.2 * S))
    assert tb.to_codec(int(3.2 * S)) >= 1.3
    step_origin = tb.origin * 2
    assert step_origin == pytest.approx(round(step_origin))

    seconds = Timebase(InternalClock(120, start_ns=0), False, 100, t_ns=S)
    assert seconds.to_codec(3 * S) == pytest.approx(2.0)
    assert seconds.to_ns(0.5) == int(1.5 * S)
    start = seconds.restart_grid_at(latest=2.004, t_ns=5 * S)
    assert start == pytest.approx(2.01) and seconds.to_codec(5 * S) == pytest.approx(2.01)
