"""The numpy fast path of live play and batch composition: FastStepper computes MusicRNN.step's function, the numpy
sampler keeps the torch sampler's semantics, and the engine uses both without changing what it
plays. No timing here (see benchmarks/latency.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.codec import GridCodec, PerformanceCodec
from musicrnn.config import ModelConfig
from musicrnn.fast_step import FastStepper
from musicrnn.inference import NumpyStepper, TorchStepper, quantized
from musicrnn.live.engine import Engine
from musicrnn.model import MusicRNN
from musicrnn.sample import Constraints, RowRandom, SamplingConfig, sample_next


def _model(arch: str, layers: int, tie: bool, hidden: int = 24, embedding: int = 16, vocab: int = 50) -> MusicRNN:
    torch.manual_seed(layers * 10 + tie)
    return MusicRNN(ModelConfig(vocab, arch=arch, layers=layers, hidden=hidden, embedding=embedding,
                                tie_weights=tie, dropout=0.3)).eval()


def _parts(model_state) -> list[torch.Tensor]:
    rnn_state = model_state[0]
    return list(rnn_state) if isinstance(rnn_state, tuple) else [rnn_state]


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("tie", [False, True])  # tied with hidden != embedding: a projection before the head
def test_fast_step_matches_model_step(arch, layers, tie) -> None:
    model = _model(arch, layers, tie)
    fast = FastStepper(model)
    rng = np.random.default_rng(layers)
    for _ in range(5):  # random sequences, each from the start
        ref_state, state = None, None
        for tok in rng.integers(0, 50, 60).tolist():
            with torch.no_grad():
                ref, ref_state = model.step(torch.tensor([tok]), ref_state)
            logits, state = fast.step(tok, state)
            assert logits.shape == (50,) and logits.dtype == np.float32
            np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-5, rtol=0)
            for got, want in zip(_parts(fast.to_model_state(state)), _parts(ref_state)):
                np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_batched_steps_match_model_step_row_by_row(arch, layers) -> None:
    """Batch composition's path: each row of ``step_batch`` is what ``model.step`` gives that
    row, for rows fed different tokens."""
    model = _model(arch, layers, layers == 2)
    fast = FastStepper(model)
    rng = np.random.default_rng(layers)
    tokens = rng.integers(0, 50, (40, 5))
    state, ref_state = fast.initial_state(5), None
    for row_tokens in tokens:
        with torch.no_grad():
            ref, ref_state = model.step(torch.from_numpy(row_tokens), ref_state)
        logits, state = fast.step_batch(row_tokens, state)
        assert logits.shape == (5, 50) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, ref.numpy(), atol=1e-5, rtol=0)
    for i in range(5):  # the same state as a batch-1 stepper that saw row i alone
        one = None
        for tok in tokens[:, i]:
            _, one = fast.step(int(tok), one)
        np.testing.assert_allclose(state[:, i], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_live_batch1_path_is_the_batch_paths_row_bit_for_bit(arch, layers) -> None:
    """The live engine's ``step_one`` gives exactly what ``step_batch`` gives a batch of one (the
    engine's path before it; what it plays must not change), each step's logits in a new array
    (streams share logits), and a row of a larger batch to float32 rounding."""
    model = _model(arch, layers, layers == 2, hidden=64)
    fast = FastStepper(model)
    tokens = np.random.default_rng(layers).integers(0, 50, (40, 3))
    batch = fast.initial_state(3)
    ones, refs = [fast.initial_state(1) for _ in range(3)], [fast.initial_state(1) for _ in range(3)]
    earlier = []
    for row in tokens:
        logits, _ = fast.step_batch(row, batch)
        for i, tok in enumerate(row):
            want, _ = fast.step_batch(row[i : i + 1], refs[i])
            got = fast.step_one(int(tok), ones[i])
            assert got.shape == (1, 50) and got.dtype == np.float32
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(ones[i], refs[i])
            np.testing.assert_allclose(got[0], logits[i], atol=1e-5, rtol=0)
            earlier.append((got, got.copy()))
    assert all(np.array_equal(a, b) for a, b in earlier)  # no step wrote into an earlier step's logits

    stepper = NumpyStepper(model)  # the Stepper the engine holds: a fork goes on apart
    stepper.step_one(5)
    fork = stepper.fork()
    np.testing.assert_array_equal(fork.step_one(9), stepper.step(np.array([9])))
    with pytest.raises(ValueError):
        stepper.fresh(2).step_one(1)


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_states_convert_both_ways_and_are_never_changed_in_place(arch) -> None:
    model = _model(arch, 2, False)
    fast = FastStepper(model)
    with torch.no_grad():
        _, ref_state = model(torch.randint(0, 50, (1, 30)))  # a state from a whole-sequence pass
    state = fast.from_model_state(ref_state)
    kept = state.copy()
    logits, new = fast.step(7, state)
    np.testing.assert_array_equal(state, kept)  # forks may share states
    with torch.no_grad():
        ref, _ = model.step(torch.tensor([7]), ref_state)
    np.testing.assert_allclose(logits, ref[0].numpy(), atol=1e-5, rtol=0)
    back = fast.from_model_state(fast.to_model_state(new))
    np.testing.assert_array_equal(back, new)
    assert fast.to_model_state(None) is None and fast.from_model_state(None) is None


def test_models_the_fast_path_cannot_step_keep_the_torch_path() -> None:
    assert FastStepper.supports(_model("lstm", 2, False))
    with_attention = MusicRNN(ModelConfig(30, hidden=16, embedding=8, attention=3)).eval()
    assert not FastStepper.supports(with_attention)
    assert not FastStepper.supports(quantized(_model("lstm", 2, False)))
    assert not FastStepper.supports(_model("gru", 1, False).double())
    with pytest.raises(ValueError):
        FastStepper(with_attention)


# --- sampling -----------------------------------------------------------------------------------
def _torch_reference(logits, cfg, uniform, mask):
    """The torch sampler the numpy one replaced (its semantics are the contract)."""
    x = logits.float().masked_fill(~mask, float("-inf"))
    if cfg.temperature == 0:
        return x.argmax(-1)
    x = x / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        x = x.masked_fill(x < torch.topk(x, cfg.top_k, dim=-1).values[:, -1:], float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        sorted_p = sorted_p.masked_fill(torch.cumsum(sorted_p, -1) - sorted_p >= cfg.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    cdf = torch.cumsum(probs.double(), dim=-1)
    idx = torch.searchsorted(cdf, uniform.double()[:, None] * cdf[:, -1:], right=True).squeeze(-1)
    return idx.clamp(max=logits.shape[-1] - 1)


@pytest.mark.parametrize("cfg", [SamplingConfig(), SamplingConfig(temperature=0), SamplingConfig(temperature=0.7, top_k=5),
                                 SamplingConfig(temperature=1.3, top_p=0.8), SamplingConfig(top_k=20, top_p=0.5)],
                         ids=["plain", "greedy", "top-k", "top-p", "both"])
def test_numpy_sampler_keeps_the_torch_semantics_and_rows_are_independent(cfg) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 90, generator=gen) * 3
    mask = torch.rand(300, 90, generator=gen) < 0.6
    mask[:, 0] = True
    u = torch.rand(300, generator=gen, dtype=torch.float64)
    got = sample_next(logits, cfg, u, mask)
    assert got.dtype == torch.int64 and mask[torch.arange(300), got].all()
    assert torch.equal(got, _torch_reference(logits, cfg, u, mask))
    for i in range(0, 300, 37):  # one row alone (live play) draws what it draws in a batch (compose)
        assert int(sample_next(logits[i : i + 1], cfg, u[i : i + 1], mask[i : i + 1].numpy())) == int(got[i])


@pytest.mark.parametrize("codec", [GridCodec(steps_per_beat=2, mark_restrikes=True), GridCodec(steps_per_beat=4),
                                   PerformanceCodec(time_unit="beats")], ids=["grid-restrikes", "grid", "performance"])
def test_constraints_rows_are_independent_and_forks_share_nothing(codec) -> None:
    """A one-row Constraints (live play) gives the masks a batch gives that row (compose)."""
    cfg = SamplingConfig(max_polyphony=3, min_note_steps=2, max_note_steps=6)
    batch, single = Constraints.for_codec(codec, 3, cfg), Constraints.for_codec(codec, 1, cfg)
    rand = RowRandom([1, 2, 3])
    logits = torch.zeros(3, codec.vocab_size)
    for _ in range(300):
        m = batch.mask()
        assert m.dtype == bool and m.shape == (3, codec.vocab_size) and m.any(1).all()
        np.testing.assert_array_equal(single.mask()[0], m[1])
        tokens = sample_next(logits, cfg, rand.next(), m)
        batch.update(tokens)
        single.update([int(tokens[1])])
    fork = single.fork()
    before = single.mask().copy()
    for tok in np.flatnonzero(fork.mask()[0])[:1].tolist() * 3:
        fork.update([tok])
    np.testing.assert_array_equal(single.mask(), before)


# --- the engine -----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


@pytest.mark.parametrize("which", ["grid", "perf"])
def test_engine_on_the_fast_path_plays_what_the_torch_path_plays(which, tiny_grid_model, tiny_performance_model) -> None:
    ckpt = load_checkpoint(tiny_grid_model if which == "grid" else tiny_performance_model)
    fast = Engine(ckpt.model, ckpt.codec, SamplingConfig(temperature=1.2), seed=4)
    slow = Engine(TorchStepper(ckpt.model), ckpt.codec, SamplingConfig(temperature=1.2), seed=4)
    assert (fast.stepper.name, slow.stepper.name) == ("numpy", "torch")
    plays = []
    for engine in (fast, slow):
        played = []
        for i in range(6):  # the player, then the model answering
            engine.human_note_on(i * 0.5, 60 + 2 * i, 80)
            engine.human_note_off(i * 0.5 + 0.3, 60 + 2 * i)
        t = 3.0
        for _ in range(60):
            t = engine.next_time(t)
            played += [(round(e.time, 6), e.pitch, e.velocity) for e in engine.decide()]
        plays.append(played)
    assert plays[0] and plays[0] == plays[1]
    assert fast.steps == slow.steps
    np.testing.assert_allclose(fast.stream.logits, slow.stream.logits, atol=1e-4)
    rows = fast.stream.stepper
    state = rows.fast.to_model_state(rows.state[:, 0])
    for got, want in zip(_parts(state), _parts(slow.stream.stepper.state)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


def test_engine_forks_leave_the_committed_stream_alone(tiny_grid_model) -> None:
    ckpt = load_checkpoint(tiny_grid_model)
    engine = Engine(ckpt.model, ckpt.codec, seed=0)
    engine.human_note_on(0.0, 60, 90)
    stream = engine.stream
    state, logits, mask = stream.stepper.state.copy(), stream.logits.copy(), stream.cons.mask().copy()
    fork = stream.fork()
    for _ in range(8):
        engine._feed(fork, [engine._sample(fork, engine._mask(fork, False))])
    assert not np.array_equal(fork.stepper.state, state)
    np.testing.assert_array_equal(stream.stepper.state, state)
    np.testing.assert_array_equal(stream.logits, logits)
    np.testing.assert_array_equal(stream.cons.mask(), mask)
