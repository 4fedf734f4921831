"""The grid follower (issue 15): the call's grid is heard (straight, swung eighths, triplets, or
none), and answers land on it: a model that picks its own times (performance codec) is nudged
onto it, a straight-grid model (grid codec) has its off-beat eighths delayed to the swing. Live
through the conductor (made-up times, tiny random models: what lands on the grid is the
follower's doing) and in ``compose --primer``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrnn.codecs.grid import GridCodec
from musicrnn.codecs.performance import PerformanceCodec
from musicrnn.config import ModelConfig
from musicrnn.listening import Follow, Listener
from musicrnn.live.clock import InternalClock
from musicrnn.live.engine import Engine
from musicrnn.live.modes import Conductor, Settings
from musicrnn.logit_bias import GRID_BIAS, GridBias
from musicrnn.metre import GRID_TOLERANCE, STRAIGHT, TRIPLET, Grid, detect_grid
from musicrnn.model import MusicRNN
from musicrnn.sample import SamplingConfig

from helpers.live import FakeScheduler, hanging_notes, run

S = 1_000_000_000
BEAT = S // 2  # 120 BPM
JITTER = 0.04  # beats: ±20 ms at 120 BPM, a player's timing


def onsets(pattern: tuple[float, ...], beats: int, phase: float = 0.0, seed: int = 0) -> np.ndarray:
    """``pattern``'s places in the beat, for ``beats`` beats from ``phase``, each off by up to ±20 ms."""
    rng = np.random.default_rng(seed)
    t = np.array([b + p for b in range(beats) for p in pattern]) + phase
    return t + rng.uniform(-JITTER, JITTER, len(t))


def circular_gap(a: float, b: float, period: float = 1.0) -> float:
    return abs((a - b + period / 2) % period - period / 2)


# --- hearing the grid ----------------------------------------------------------------------------
@pytest.mark.parametrize("pattern,kind,offbeat,period", [
    ((0.0, 2 / 3), "swing", 2 / 3, 1.0),  # triplet swing
    ((0.0, 0.6), "swing", 0.6, 1.0),  # a lighter swing
    ((0.0, 1 / 3, 2 / 3), "triplet", 2 / 3, 1 / 3),
    ((0.0, 0.5), "straight", 0.5, 0.25),  # straight eighths: the sixteenth grid holds them
    ((0.0, 0.25, 0.5, 0.75), "straight", 0.5, 0.25),
    ((0.0, 0.5, 0.75), "straight", 0.5, 0.25),  # eighth and two sixteenths
], ids=["swing-2/3", "swing-0.6", "triplets", "eighths", "sixteenths", "gallop"])
@pytest.mark.parametrize("phase", [0.0, 0.37], ids=["on-the-clock", "off-the-clock"])
def test_the_grid_of_a_call_is_heard_through_a_players_timing(pattern, kind, offbeat, period, phase) -> None:
    for seed in range(10):
        grid = detect_grid(onsets(pattern, 8, phase, seed))
        assert grid is not None and grid.kind == kind, (seed, grid)
        assert abs(grid.offbeat - offbeat) < 0.06 and grid.confidence == 1.0
        assert circular_gap(grid.phase, phase, period) < 0.035  # the player's beats, within their timing
        if kind == "swing":  # the beat is the start of the long note, not the swung eighth
            assert circular_gap(grid.phase, phase) < 0.035 and grid.name == f"swing {grid.offbeat:.2f}"
            assert circular_gap(grid.phase + grid.offbeat, phase + offbeat) < 0.035


@pytest.mark.parametrize("call", [
    onsets((0.0, 2 / 3), 2),  # 4 onsets: too short to tell
    onsets((0.0,), 8),  # quarter notes: nothing between the beats
    np.concatenate([onsets((0.0, 1 / 3, 2 / 3), 4), onsets((0.0, 0.5), 4) + 4]),  # triplets, then straight eighths
    np.sort(np.random.default_rng(3).uniform(0, 8, 16)),  # no grid at all
    [],
], ids=["too-short", "quarters", "triplets-then-eighths", "random", "nothing"])
def test_a_call_that_tells_no_grid_leaves_the_model_alone(call) -> None:
    assert detect_grid(call) is None
    li = Listener(Follow())
    for t in call:
        li.note_on(float(t), 60, 80)
    li.start_answer(9.0)
    assert li.grid is None and li.grid_strength() == 0 and li.heard()["grid"] == "-"
    assert li.warp(8.5) == 8.5


def test_a_chord_is_one_onset_and_a_few_stray_notes_are_forgiven() -> None:
    t = onsets((0.0, 2 / 3), 8)
    chords = np.concatenate([t, t + 0.01])  # every onset a two-note chord
    assert detect_grid(chords).kind == "swing"
    stray = np.concatenate([t, [3.4]])  # one note of 17 off the grid
    assert detect_grid(stray).kind == "swing"


def test_swing_warp_delays_off_beat_eighths_and_keeps_the_beat() -> None:
    g = Grid("swing", (0.0, 2 / 3), 2 / 3, 0.0, 1.0)
    assert g.warp(3.0) == 3.0 and g.warp(3.5) == pytest.approx(3 + 2 / 3) and g.warp(3.25) == pytest.approx(3 + 1 / 3)
    assert g.warp(3.5, strength=0.0) == 3.5 and g.warp(3.5, strength=0.5) == pytest.approx(3 + 7 / 12)
    straight = np.arange(0, 4, 0.125)
    warped = g.warp(straight)
    assert np.all(warped >= straight - 1e-12) and np.all(np.diff(warped) > 0)  # later or on time, in order
    shifted = Grid("swing", (0.0, 0.6), 0.6, 0.3, 1.0)  # the player's beat at .3 of the clock's
    assert shifted.warp(2.8) == pytest.approx(2.9) and shifted.warp(2.3) == pytest.approx(2.3)
    assert Grid("straight", STRAIGHT, 0.5, 0.0, 1.0).warp(1.5) == 1.5  # straight: as played
    assert g.distance([1.0, 1.5, 1.66]).round(3).tolist() == [0.0, 0.167, 0.007]
    triplets = Grid("triplet", TRIPLET, 2 / 3, (0.3 - 1 / 3) % 1, 1.0)  # fitted: the third nearest the clock's beat
    assert triplets.anchored(5.3).phase == pytest.approx(0.3) and triplets.anchored(5.0) == triplets
    assert g.anchored(5.4) is g  # a swung grid's beat is its long note's


# --- the follower ---------------------------------------------------------------------------------
def test_grid_bias_spares_shifts_that_end_on_the_grid_and_onsets_on_it() -> None:
    codec = PerformanceCodec(time_unit="beats")  # 12 steps a beat
    bias = GridBias(codec)
    swing = Grid("swing", (0.0, 2 / 3), 2 / 3, 0.0, 1.0)
    b = bias(swing, 1.0, 0.0, 1 / 12)
    shift = lambda k: codec.shift0 + k - 1  # noqa: E731
    assert b[shift(8)] == 0 and b[shift(12)] == 0 and b[shift(20)] == 0  # to the swung eighth, the next beats
    assert b[shift(6)] == pytest.approx(-GRID_BIAS) and b[shift(3)] == pytest.approx(-GRID_BIAS)  # straight places
    assert b[codec.on0] == 0 and b[codec.off0] == 0  # on the beat: strike freely; note-offs are always free
    off = bias(swing, 0.5, 0.5, 1 / 12)  # half strength, on a straight off-beat
    assert off[codec.on0] == pytest.approx(-GRID_BIAS / 2) and off[codec.off0] == 0 and off[shift(2)] == 0  # .5 -> 2/3
    triplets = bias(Grid("triplet", TRIPLET, 2 / 3, 0.0, 1.0), 1.0, 0.0, 1 / 12)
    assert triplets[shift(4)] == 0 and triplets[shift(3)] < 0
    assert bias(swing, 0.0, 0.0, 1 / 12) is None
    logits = np.random.default_rng(0).normal(size=codec.vocab_size).astype(np.float32)
    nudged = bias.logits(logits, b)
    p, q = np.exp(logits - logits.max()), np.exp(nudged - nudged.max())
    p, q = p / p.sum(), q / q.sum()
    shifts = codec.token_kind == codec.token_kind[shift(1)]
    assert q[shifts].sum() == pytest.approx(p[shifts].sum(), rel=1e-4)  # as likely to wait: no more notes
    assert q[shift(8)] / q[shift(6)] > 100 * p[shift(8)] / p[shift(6)]  # but onto the grid
    assert GridBias(GridCodec(steps_per_beat=2))(swing, 1.0, 0.0, 0.5) is None  # no time shifts to bias


def test_the_grid_is_heard_when_the_answer_starts_and_set_by_the_follower() -> None:
    li = Listener(Follow())
    for t in onsets((0.0, 2 / 3), 8):
        li.note_on(float(t), 60, 80)
    assert li.grid is None  # not while the call goes on
    li.start_answer(9.0)
    assert li.grid.kind == "swing" and li.grid_strength() == 1.0 and li.heard()["grid"].startswith("swing 0.6")
    li.note_on(12.0, 62, 80)  # the player is back: a new call, no grid yet
    assert li.grid is None and li.heard()["grid"] == "-"
    off = Listener(Follow.parse("key,register"))  # grid not named: off
    assert off.follow.grid == 0 and Follow.parse("grid=0.5").grid == 0.5 and Follow().grid == 1.0
    for t in onsets((0.0, 2 / 3), 8):
        off.note_on(float(t), 60, 80)
    off.start_answer(9.0)
    assert off.grid is None and off.warp(9.5) == 9.5


# --- live: a swung call, through the conductor ----------------------------------------------------
def tiny_model(codec) -> MusicRNN:
    torch.manual_seed(0)
    return MusicRNN(ModelConfig(codec.vocab_size, hidden=32, embedding=16, layers=1))


def answer_onsets(codec, follow: Follow, pattern: tuple[float, ...], phase: float, answer_start: str = "next-beat",
                  seed: int = 1):
    """A call of ``pattern`` for 8 beats (its beats at ``phase`` of the clock's, ±20 ms), then an
    8-bar answer; the answer's distinct onsets (clock beats) and the conductor."""
    sched = FakeScheduler()
    engine = Engine(tiny_model(codec), codec, SamplingConfig(), seed=seed)
    cond = Conductor(engine, sched, InternalClock(120, start_ns=0), Settings(answer_bars=8, answer_start=answer_start),
                     0, Listener(follow))
    events = []
    for i, b in enumerate(onsets(pattern, 8, phase + 1)):
        t, p = int(b * BEAT), 60 + (0, 2, 4, 5, 7, 9, 11, 12)[i % 8]
        events += [(t, p, 90), (t + BEAT // 4, p, 0)]
    for t, p, v in sorted(events):
        cond.tick(t)
        cond.human_note(t, p, v)
    end = int((phase + 9) * BEAT)
    if answer_start == "now":
        cond.tick(end)
        cond.end_call(end)
    run(cond, end + 18 * S, start_ns=max(t for t, *_ in events))
    notes = sched.notes()
    assert not hanging_notes_in(notes), "every answer note is closed"
    starts = sorted({round(t / BEAT, 4) for t, _, v in notes if v > 0})
    assert len(starts) >= 5, "the model answered"
    return np.array(starts), cond


def hanging_notes_in(notes) -> set[int]:
    import mido

    msgs = [mido.Message("note_on", note=p, velocity=v) for _, p, v in sorted(notes, key=lambda n: (n[0], n[2] > 0))]
    return hanging_notes(msgs)


def on_grid(starts: np.ndarray, pattern: tuple[float, ...], phase: float) -> float:
    """Share of ``starts`` within 1/24 beat of the call's grid (as the player played it)."""
    return float(np.mean(Grid("any", pattern, 0.5, phase, 1.0).distance(starts) <= GRID_TOLERANCE))


@pytest.mark.parametrize("codec", [PerformanceCodec(time_unit="beats"), GridCodec(steps_per_beat=2, mark_restrikes=True)],
                         ids=["performance", "grid"])
def test_a_swung_call_off_the_clocks_beat_gets_a_swung_answer_on_the_players_beat(codec) -> None:
    swing, phase = (0.0, 2 / 3), 0.2
    on, off = [], []
    for seed in (1, 2, 3):  # a random model answers sparsely: three answers
        starts, cond = answer_onsets(codec, Follow(), swing, phase, seed=seed)
        assert cond.listener.grid.kind == "swing" and cond.listener.heard()["grid"].startswith("swing 0.6")
        assert circular_gap(starts[0], phase) < 0.035  # the answer starts on the player's beat, not the clock's
        on += list(starts)
        off += list(answer_onsets(codec, Follow.parse("none"), swing, phase, seed=seed)[0])
    assert on_grid(np.array(on), swing, phase) >= 0.9 and on_grid(np.array(off), swing, phase) <= 0.2
    assert 0.7 <= len(on) / len(off) <= 1.4  # as many notes: the waits moved onto the grid, not away


def test_a_straight_grid_model_plays_a_triplet_call_with_the_triplet_shuffle() -> None:
    """Answered at once (``--answer-start now``) on the player's beat, which is not the clock's:
    triplets alone do not say which third is the beat; the answer's start does."""
    codec = GridCodec(steps_per_beat=2, mark_restrikes=True)
    phase = 0.3  # the lattice point nearest the clock's beat is the player's last third, not their beat
    on, cond = answer_onsets(codec, Follow(), TRIPLET, phase, answer_start="now")
    off, _ = answer_onsets(codec, Follow.parse("none"), TRIPLET, phase, answer_start="now")
    assert cond.listener.grid.kind == "triplet" and circular_gap(cond.listener.grid.phase, phase) < 0.035
    # its off-beats went to 2/3 of the player's beat; unfollowed, half of them lie between the triplets
    assert on_grid(on, TRIPLET, phase) >= 0.95 and on_grid(off, TRIPLET, phase) <= 0.7


# --- compose --primer -----------------------------------------------------------------------------
def swung_primer(path, beats: int = 8):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(0, name="call")
    for i, b in enumerate(onsets((0.0, 2 / 3), beats, seed=4)):
        start = max(0.0, b) * 0.5
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=60 + (0, 4, 7, 12)[i % 4], start=start, end=start + 0.15))
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


@pytest.mark.parametrize("codec", [PerformanceCodec(time_unit="beats"), GridCodec(steps_per_beat=2, mark_restrikes=True)],
                         ids=["performance", "grid"])
def test_compose_continues_a_swung_primer_on_its_grid(tmp_path, codec) -> None:
    from musicrnn.compose import ComposeOptions, compose
    from musicrnn.listening import follow_options
    from musicrnn.midi import load_midi

    primer = swung_primer(tmp_path / "swing.mid")
    shares = {}
    for follow in ("all", "none"):
        opts = ComposeOptions(n=2, out=tmp_path / follow, primer=primer, bars=8, seed=1, follow=follow_options(follow))
        starts = []
        for summary in compose(tiny_model(codec), codec, opts):
            notes = load_midi(summary.path).notes
            new = notes[notes["track"] == notes["track"].max()]
            starts += sorted({round(float(s), 4) for s in new["start"]})
        assert len(starts) >= 10
        shares[follow] = on_grid(np.array(starts), (0.0, 2 / 3), 0.0)
    assert shares["all"] >= 0.8 and shares["all"] - shares["none"] >= 0.3, shares  # unfollowed: on the beats only
