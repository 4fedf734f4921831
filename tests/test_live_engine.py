"""The live engine: one model step per token with the state carried (O(1) per event), the same
sampling as compose, and note ownership between player and model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.codec import BOS, GridCodec, PerformanceCodec
from musicrnn.codecs import KIND_SHIFT, KIND_VELOCITY
from musicrnn.compose import generate
from musicrnn.inference import stepper_for
from musicrnn.live.engine import Engine
from musicrnn.sample import SamplingConfig


class StepLog:
    """Wraps the engine's one model-step seam (``Engine._step``, whichever stepper) to record
    every token fed and the shape it was fed in."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine._step
        self.tokens: list[int] = []
        self.shapes: set[tuple[int, ...]] = set()
        engine._step = self  # type: ignore[method-assign]

    def __call__(self, stepper, token):
        self.shapes.add(np.shape(token))
        self.tokens.append(int(token))
        return self.inner(stepper, token)


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


@pytest.fixture
def grid(tiny_grid_model):
    return load_checkpoint(tiny_grid_model)


@pytest.fixture
def perf(tiny_performance_model):
    return load_checkpoint(tiny_performance_model)


def _phrase(engine: Engine, start: float, n: int, step: float = 0.5) -> None:
    for i in range(n):
        t = start + i * step
        pitch = 60 + (i * 5) % 12
        engine.human_note_on(t, pitch, 70 + i % 50)
        engine.human_note_off(t + step * 0.6, pitch)


@pytest.mark.parametrize("which", ["grid", "perf"])
def test_player_events_cost_one_step_per_token_and_carry_the_state(which, grid, perf) -> None:
    ckpt = grid if which == "grid" else perf
    engine = Engine(ckpt.model, ckpt.codec, seed=1)
    log = StepLog(engine)
    counts = []
    for i in range(120):
        before = engine.steps
        _phrase(engine, i * 2.0, 1)
        counts.append(engine.steps - before)
    engine.catch_up(240.0)
    assert log.shapes == {()}  # one token at a time, never a re-read of the history
    # the cost of an event does not grow with the session (early vs late events)
    assert max(counts[-40:]) <= max(counts[:40]) + 1
    assert np.mean(counts[-40:]) <= np.mean(counts[:40]) * 1.25 + 0.5
    assert len(log.tokens) == engine.steps - 1  # BOS was fed before the log started
    # the carried state equals one pass over everything the model heard
    with torch.no_grad():
        full = torch.tensor([[BOS] + log.tokens])
        logits, _ = ckpt.model.forward(full)
    assert np.allclose(logits[0, -1].numpy(), engine.stream.logits[0], atol=1e-4)


def test_grid_autoplay_is_exactly_compose_generate(grid) -> None:
    """Same seed, same constraints: the live engine samples the very tokens compose does."""
    cfg = SamplingConfig(temperature=1.0, max_note_steps=16)
    frames = 40
    expected = generate(stepper_for(grid.model), grid.codec, 1, frames, SamplingConfig(**vars(cfg)), seed=7).tokens[0].tolist()
    engine = Engine(grid.model, grid.codec, SamplingConfig(**vars(cfg)), seed=7)
    log = StepLog(engine)
    for k in range(frames):
        t = engine.next_time(k / 2)
        assert t == k / 2
        engine.decide()
    assert log.tokens == expected  # every sampled frame was adopted as is: one step per token


def test_performance_events_are_decided_ahead_and_adopted_without_extra_steps(perf) -> None:
    engine = Engine(perf.model, perf.codec, seed=3)
    log = StepLog(engine)
    played = []
    t = 0.0
    for _ in range(200):
        t = engine.next_time(t)
        played += engine.decide()
    assert played, "a random model still plays something in 200 decisions"
    c = perf.codec
    assert engine.steps - 1 <= len(log.tokens)
    # each decision fed its sampled tokens once, plus re-feeds only where the encoder wrote a
    # different but equivalent spelling (a repeated velocity, a minimum-length note)
    assert len(log.tokens) <= 2 * 200 + 200
    on = {}
    for ev in played:
        if ev.velocity:
            assert ev.pitch not in on
            on[ev.pitch] = ev.time
        else:
            assert ev.pitch in on and ev.time >= on.pop(ev.pitch)  # the model only ends its own notes
    assert all(c.min_pitch <= ev.pitch <= c.max_pitch for ev in played)


@pytest.mark.parametrize("which", ["grid", "perf"])
def test_an_answer_starts_with_a_note_when_asked(which, grid, perf) -> None:
    ckpt = grid if which == "grid" else perf
    for seed in range(5):
        engine = Engine(ckpt.model, ckpt.codec, SamplingConfig(temperature=1.5), seed=seed)
        _phrase(engine, 0.0, 4)
        t = engine.next_time(4.0, force_note=True)
        assert t == pytest.approx(4.0)
        events = engine.decide()
        assert any(e.velocity > 0 for e in events) and all(e.time == pytest.approx(4.0) for e in events)


def test_grid_model_does_not_strike_what_the_player_holds_and_player_takes_over(grid) -> None:
    engine = Engine(grid.model, grid.codec, SamplingConfig(temperature=3.0), seed=0)
    held = [48, 55, 60, 64, 67, 72]
    for p in held:
        engine.human_note_on(0.0, p, 90)
    for k in range(1, 30):
        engine.next_time(k / 2)
        for ev in engine.decide():
            assert not (ev.velocity and ev.pitch in held)
    some = sorted(engine.model_notes)
    if some:
        ended = engine.human_note_on(15.0, some[0], 100)
        assert [(e.pitch, e.velocity) for e in ended] == [(some[0], 0)]
        assert some[0] not in engine.model_notes
    offs = engine.release_model_notes(16.0)
    assert {e.pitch for e in offs} == set(some[1:]) and not engine.model_notes


def test_controls_change_sampling_and_onednn_is_left_as_found(grid) -> None:
    before = torch.backends.mkldnn.enabled
    engine = Engine(grid.model, grid.codec, seed=0)
    engine.set_temperature(0.5)
    engine.set_density(2)
    assert engine.cfg.temperature == 0.5 and engine.stream.cons.cfg.max_polyphony == 2
    for k in range(20):
        engine.next_time(k / 2)
        engine.decide()
        assert len(engine.model_notes) <= 2
    assert torch.backends.mkldnn.enabled == before
    engine.reset()
    assert engine.steps > 0 and not engine.model_notes and engine.time == 0.0


def test_engine_refuses_unknown_codecs_and_bad_settings(grid) -> None:
    from musicrnn.errors import MusicRNNError

    engine = Engine(grid.model, grid.codec)
    with pytest.raises(MusicRNNError):
        engine.set_temperature(-1)
    with pytest.raises(MusicRNNError):
        engine.set_density(-2)
    assert isinstance(grid.codec, GridCodec) and not isinstance(grid.codec, PerformanceCodec)


@pytest.mark.parametrize("which", ["grid", "perf"])
def test_key_range_and_top_p_change_live_and_an_impossible_one_changes_nothing(which, grid, perf) -> None:
    ckpt = grid if which == "grid" else perf
    engine = Engine(ckpt.model, ckpt.codec, SamplingConfig(temperature=1.5), seed=3)
    c_major = frozenset({0, 2, 4, 5, 7, 9, 11})
    t = 0.0
    for _ in range(40):  # a proposal sampled before the change must not slip through
        t = engine.next_time(t)
        engine.decide()
    engine.set_key(c_major)
    engine.set_pitch_range((60, 72))
    engine.set_top_p(0.9)
    struck = []
    for _ in range(300):
        t = engine.next_time(t)
        struck += [e.pitch for e in engine.decide() if e.velocity > 0]
    assert struck and all(p % 12 in c_major and 60 <= p <= 72 for p in struck)
    assert engine.cfg.top_p == 0.9
    with pytest.raises(Exception, match="no pitch"):
        engine.set_pitch_range((61, 61))  # C#: not in C major
    assert engine.cfg.pitch_range == (60, 72)
    engine.set_key(None)
    engine.set_pitch_range(None)
    assert engine.stream.cons.allowed.all()
    with pytest.raises(Exception, match="top-p"):
        engine.set_top_p(0)


def test_grid_notes_are_handed_out_as_sampled_with_the_same_bookkeeping(grid) -> None:
    """decide(on_note): a struck note goes out the moment its token is sampled (before the
    frame's later tokens, STEP included, are fed); the notes, the model's notes, the encoder
    and the token stream are exactly those of decide() without it, and no note comes twice."""
    cfg = SamplingConfig(temperature=1.5)
    plain = Engine(grid.model, grid.codec, SamplingConfig(**vars(cfg)), seed=5)
    eager = Engine(grid.model, grid.codec, SamplingConfig(**vars(cfg)), seed=5)
    early_total, restrikes_late = 0, 0
    t = 0.0
    for i in range(240):
        if i % 9 == 0:  # the player joins in now and then (a pitch the model may also be sounding)
            pitch = 60 + (i % 5)
            for e in (plain, eager):
                e.human_note_on(t, pitch, 90)
                e.human_note_off(t + 0.3, pitch)
        force = i % 7 == 0
        t_plain = plain.next_time(t, force)
        assert eager.next_time(t, force) == t_plain
        sounding_before = set(eager.model_notes)
        early: list = []
        early_steps: list[int] = []

        def hand(ev, early=early, early_steps=early_steps) -> None:
            early.append(ev)
            early_steps.append(eager.steps)
            assert ev.pitch in eager.model_notes  # the bookkeeping is done before the note goes out

        expected = plain.decide()
        steps_before = eager.steps
        rest = eager.decide(on_note=hand)
        assert rest is not None
        early_total += len(early)
        assert all(ev.velocity > 0 and ev.time == t_plain and ev.pitch not in sounding_before for ev in early)
        assert all(s < eager.steps for s in early_steps)  # out before the frame's last token (STEP) was fed
        assert steps_before <= min(early_steps, default=steps_before)
        got = early + rest
        assert len(got) == len({(e.pitch, e.velocity > 0) for e in got})  # no note twice
        assert sorted(got) == sorted(expected)
        restrikes_late += sum(1 for e in rest if e.velocity > 0)
        assert eager.model_notes == plain.model_notes
        assert eager.encoder._sounding == plain.encoder._sounding and eager.encoder._struck == plain.encoder._struck
        assert eager.steps == plain.steps
        t = t_plain
    eager.catch_up(t + 2)
    plain.catch_up(t + 2)
    assert np.allclose(eager.stream.logits, plain.stream.logits)  # one and the same token stream
    assert early_total > 20  # the test saw notes handed out early


def test_grid_frame_decided_ahead_gives_way_to_a_waiting_event(grid) -> None:
    engine = Engine(grid.model, grid.codec, SamplingConfig(temperature=1.5), seed=2)
    t = engine.next_time(0.0, True)
    notes_before = dict(engine.model_notes)
    asked = []
    assert engine.decide(interrupt=lambda: asked.append(1) or True) is None
    assert asked and engine.model_notes == notes_before
    assert engine.next_time(0.0, True) == t  # the same frame comes again
    engine.human_note_on(t, 60, 90)  # the waiting event: heard, then the frame is decided
    out = engine.decide(interrupt=lambda: False)
    assert out is not None and engine.next_time(0.0) > t
    # once a note of the frame is out, the frame is finished whatever interrupt says
    for _ in range(50):
        t = engine.next_time(t, True)
        handed: list = []
        out = engine.decide(on_note=handed.append, interrupt=lambda: bool(handed))
        assert out is not None


def test_grid_idle_preparation_makes_the_answer_wait_for_no_step_and_changes_nothing(grid) -> None:
    """prepare(): the close of the player's frame is stepped in idle time on a fork; when the
    call ends, the answer's first note goes out before any model step, and the session (notes,
    token stream, state) is exactly the one without preparation, also when the player goes on
    playing after a preparation (the fork is then dropped)."""
    cfg = SamplingConfig(temperature=1.2)
    plain = Engine(grid.model, grid.codec, SamplingConfig(**vars(cfg)), seed=3)
    ready = Engine(grid.model, grid.codec, SamplingConfig(**vars(cfg)), seed=3)
    log = StepLog(ready)
    t, waited = 0.0, []
    for call in range(12):
        for i in range(3):  # the call: notes inside frames (2 steps per beat), each followed by idle time
            pitch = 55 + (call * 5 + i * 3) % 20
            for e in (plain, ready):
                e.human_note_on(t + 0.1, pitch, 80)
            assert ready.prepare() and not ready.prepare()  # a second call finds the frame prepared
            for e in (plain, ready):
                e.human_note_off(t + 0.3, pitch)
            ready.prepare()
            t += 0.4
        t_end = max(plain.latest, ready.latest)
        before = len(log.tokens)
        first: list[int] = []
        assert ready.next_time(t_end, True) == plain.next_time(t_end, True)
        ready.decide(on_note=lambda ev: first.append(len(log.tokens)))
        plain.decide(on_note=lambda ev: None)
        if first:
            waited.append(first[0] - before)
        for _ in range(3):  # the answer goes on a little
            tt = plain.next_time(0.0)
            assert ready.next_time(0.0) == tt
            assert sorted(ready.decide() or []) == sorted(plain.decide() or [])
        assert ready.model_notes == plain.model_notes
        t_off = max(plain.latest, ready.latest)
        assert ready.release_model_notes(t_off) == plain.release_model_notes(t_off)
        t = t_off + 0.5
    assert waited and all(w == 0 for w in waited)  # no step between the end of the call and its first note
    for e in (plain, ready):
        e.catch_up(t + 2)
    assert np.allclose(ready.stream.logits, plain.stream.logits)


def test_grid_model_holds_only_pitches_that_really_sound(grid) -> None:
    """A pitch the player struck and released inside a frame sounds in that frame only: the
    model may not "hold" it into the next (the real stream will not), and its own frames
    decided ahead are adopted without re-feeding while nobody interrupts."""
    for seed in range(6):
        engine = Engine(grid.model, grid.codec, SamplingConfig(temperature=2.0), seed=seed)
        for i in range(4):
            engine.human_note_on(i * 0.5 + 0.1, 60 + i, 90)
            engine.human_note_off(i * 0.5 + 0.2, 60 + i)
        engine.catch_up(2.0)
        c = grid.codec
        for _ in range(8):
            engine.next_time(0.0, True)
            sounding = set(engine.model_notes) | engine.human_notes
            mask = engine._mask(engine.stream, force_note=False)
            held = {int(c.token_pitch[c.hold0 + i]) for i in np.flatnonzero(mask[0, c.hold0 : c.hold0 + c.num_pitches])}
            assert held <= sounding
            steps = engine.steps
            engine.decide()
            frame = engine._spec.tokens
            assert engine.steps - steps == len(frame)  # only the frame's own tokens were stepped


class CommitLog:
    """Wraps ``Engine._commit`` to record the real token stream (what the model heard for good)."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine._commit
        self.tokens: list[int] = []
        engine._commit = self  # type: ignore[method-assign]

    def __call__(self, tokens):
        self.tokens += [int(t) for t in tokens]
        return self.inner(tokens)


def test_performance_idle_preparation_leaves_only_sampling_and_changes_nothing(perf) -> None:
    """prepare(answer_at): the time shifts to where an answer would start (and to the step after)
    are stepped on forks in idle time; when the call ends there, the answer's first note waits
    for no shift step (at most a velocity's) and goes out before the model's step on its token.
    Notes, the real token stream and the model state are bit for bit those of an engine that
    never prepared: also when the preparation was for a step the answer does not start on (it is
    not used), and when the nudges change at the answer's start (sampling is left to then)."""
    c = perf.codec
    spu = c.steps_per_unit
    cfg = SamplingConfig(temperature=1.2)
    plain = Engine(perf.model, c, SamplingConfig(**vars(cfg)), seed=3)
    ready = Engine(perf.model, c, SamplingConfig(**vars(cfg)), seed=3)
    plain_stream, ready_stream = CommitLog(plain), CommitLog(ready)
    log = StepLog(ready)
    rng = np.random.default_rng(0)
    t, waited = 0.0, []
    for call in range(12):
        for i in range(2):  # the call, each event followed by idle time
            pitch = 50 + (call * 7 + i * 4) % 30
            for e in (plain, ready):
                e.human_note_on(t, pitch, 60 + 10 * i)
            ready.prepare(math.ceil(t * spu) / spu)
            for e in (plain, ready):
                e.human_note_off(t + 0.3, pitch)
            ready.prepare(math.ceil((t + 0.3) * spu) / spu)
            t += 0.5
        start = math.ceil((t + 0.05 * call) * spu) / spu
        prepared = call % 3 != 2
        assert ready.prepare(start if prepared else start - 2 / spu)  # else: time moved on two steps since
        bias = rng.normal(0, 2, c.vocab_size) if call % 2 else None  # the nudge set at the answer's start
        for e in (plain, ready):
            e.logit_bias = bias
        before = len(log.tokens)
        first: list = []
        assert ready.next_time(start, True) == plain.next_time(start, True) == start
        out = ready.decide(on_note=lambda ev: first.append((ev, log.tokens[before:])))
        expected = plain.decide()
        assert [ev for ev, _ in first] + out == expected
        if prepared:
            stepped = first[0][1]
            assert len(stepped) <= 1 and all(c.token_kind[x] == KIND_VELOCITY for x in stepped)
            waited.append(len(stepped))
        for _ in range(4):  # the answer goes on a little
            tt = plain.next_time(start)
            assert ready.next_time(start) == tt
            assert ready.decide() == plain.decide()
        assert ready.model_notes == plain.model_notes
        t = max(plain.latest, ready.latest) + 0.25
        assert ready.release_model_notes(t) == plain.release_model_notes(t)
        t += 0.5
    assert 0 in waited  # some answers started with no model step at all
    for e in (plain, ready):
        e.catch_up(t + 8)
    assert ready_stream.tokens == plain_stream.tokens
    assert np.array_equal(ready.stream.logits, plain.stream.logits)


def test_performance_preparation_is_dropped_when_the_player_plays_or_time_moves_on(perf) -> None:
    c = perf.codec
    spu = c.steps_per_unit
    engine = Engine(perf.model, c, seed=1)
    log = StepLog(engine)
    engine.human_note_on(0.0, 60, 80)
    engine.human_note_off(0.25, 60)

    def shifts_stepped_by_the_answer(start: float) -> int:
        n = len(log.tokens)
        engine.next_time(start, True)
        engine.release_model_notes(engine.time)  # no answer after all (nothing sounds: nothing heard)
        return sum(c.token_kind[x] == KIND_SHIFT for x in log.tokens[n:])

    a = 1.0
    assert engine.prepare(a) and not engine.prepare(a)  # the answer's step and the next, once
    assert not engine.prepare(a, interrupt=lambda: True)  # nothing new to step: not asked
    n = len(log.tokens)
    assert engine.prepare(a + 1 / spu) and len(log.tokens) == n + 1  # time moved on: one more step
    assert shifts_stepped_by_the_answer(a + 1 / spu) == 0
    assert engine.prepare(a + 4 / spu)  # time moved on: what was prepared for a + 1 step is dropped
    assert shifts_stepped_by_the_answer(a + 1 / spu) == 1
    assert engine.prepare(a + 4 / spu) is False
    engine.human_note_on(0.5, 64, 80)  # the player plays: the forks are dropped
    assert shifts_stepped_by_the_answer(a + 4 / spu) == 1
    n = len(log.tokens)
    assert not engine.prepare(2.0, interrupt=lambda: True) and len(log.tokens) == n  # a waiting event: no step
