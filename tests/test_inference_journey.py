"""One inference layer: every way of running a model (numpy, torch, bf16, int8, the n-gram) is a
Stepper with the same prime / step / fork / fresh / score, chosen in one place (stepper_for), and
compose, the live engine and eval all run through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.codecs import BOS, GridCodec
from musicrnn.compose import generate
from musicrnn.config import ModelConfig
from musicrnn.evaluate import evaluate_pieces
from musicrnn.inference import NumpyStepper, Stepper, TorchStepper, stepper_for
from musicrnn.live.engine import Engine
from musicrnn.model import MusicRNN
from musicrnn.ngram import KneserNey, NGramStepper
from musicrnn.sample import SamplingConfig


def _model(arch: str = "lstm", attention: int = 0, vocab: int = 40) -> MusicRNN:
    torch.manual_seed(3)
    return MusicRNN(ModelConfig(vocab, arch=arch, layers=2, hidden=16, embedding=8, attention=attention)).eval()


def _ngram(vocab: int = 40) -> NGramStepper:
    rng = np.random.default_rng(0)
    return NGramStepper(KneserNey(3, vocab).fit([rng.integers(1, vocab, 50) for _ in range(20)]))


def test_stepper_for_chooses_device_precision_quantization_and_path_in_one_place() -> None:
    model = _model()
    assert isinstance(stepper_for(model), NumpyStepper)  # float32 on a CPU: numpy
    half = stepper_for(model, precision="bf16")
    assert isinstance(half, TorchStepper) and half.dtype == torch.bfloat16
    assert model.embed.weight.dtype == torch.float32  # the model itself is left as it was
    int8 = stepper_for(model, quantize="int8")
    assert isinstance(int8, TorchStepper) and int8.device.type == "cpu"
    assert type(int8.model.rnn).__module__.startswith("torch.ao")  # int8 layers
    assert isinstance(stepper_for(_model(attention=4)), TorchStepper)  # numpy has no attention
    assert stepper_for(model, rows=3).rows == 3


def _all_steppers() -> list[Stepper]:
    model = _model()
    return [NumpyStepper(model), TorchStepper(model), TorchStepper(_model(attention=3)), _ngram()]


@pytest.mark.parametrize("stepper", _all_steppers(), ids=lambda s: f"{s.name}-{getattr(s, 'model', None) and s.model.config.attention}")
def test_every_stepper_keeps_the_same_contract(stepper: Stepper) -> None:
    """prime then step == stepping every token; rows are independent; a fork (of all rows or of
    chosen ones) goes on from the same state without touching the original; fresh starts over."""
    primer = [BOS, 5, 7, 9, 11]
    stepwise = stepper.fresh(1)
    for tok in primer:
        want = stepwise.step(np.array([tok]))
    rows = stepper.fresh(3)
    rows.prime(primer[:-1])
    got = rows.step(np.array([primer[-1]] * 3))
    assert got.shape == (3, want.shape[1]) and got.dtype == np.float32
    for r in range(3):
        np.testing.assert_allclose(got[r], want[0], atol=1e-5)

    nxt = np.array([1, 2, 3])
    before = rows.fork()
    picked = rows.fork([2, 0, 2])
    after = rows.step(nxt)
    np.testing.assert_allclose(before.step(nxt), after, atol=1e-6)  # the fork held the state of then
    np.testing.assert_allclose(picked.step(nxt[[2, 0, 2]]), after[[2, 0, 2]], atol=1e-6)
    fresh = rows.fresh(2)
    np.testing.assert_allclose(fresh.step(np.array([BOS, BOS])), stepper.fresh(1).step(np.array([BOS]))[[0, 0]],
                               atol=1e-6)


@pytest.mark.parametrize("stepper", _all_steppers(), ids=lambda s: f"{s.name}-{getattr(s, 'model', None) and s.model.config.attention}")
def test_score_is_the_nll_of_the_stepped_logits(stepper: Stepper) -> None:
    """Eval's scoring (teacher forcing) and sampling's steps give one and the same model."""
    piece = np.array([5, 7, 9, 11, 3, 3, 8])
    [nll] = stepper.score([piece])
    rows = stepper.fresh(1)
    want = []
    for prev, tok in zip([BOS, *piece[:-1]], piece):
        logits = rows.step(np.array([prev]))[0].astype(np.float64)
        want.append(-(logits[tok] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
    np.testing.assert_allclose(nll, want, atol=1e-4)


def test_compose_the_engine_and_eval_share_one_stepper(tmp_path) -> None:
    """The same stepper object drives generate (compose), an Engine (live) and evaluate_pieces
    (eval); the n-gram baseline is one too, no model imitation (no eval(), no __call__)."""
    codec = GridCodec(min_pitch=60, max_pitch=71)
    model = _model(vocab=codec.vocab_size)
    stepper = stepper_for(model)
    gen = generate(stepper, codec, 2, 8, SamplingConfig(), seed=1)
    assert all(len(t) for t in gen.tokens)
    engine = Engine(stepper, codec, seed=1)
    assert engine.stepper is not stepper and engine.stepper.name == "numpy"
    result = evaluate_pieces(stepper, gen.tokens, codec)
    assert result["tokens"] == sum(len(t) for t in gen.tokens) and result["nll_per_frame"] > 0
    lm = _ngram(codec.vocab_size)
    assert not hasattr(lm, "eval") and not callable(lm)
    assert all(len(t) for t in generate(lm, codec, 2, 8, SamplingConfig(), seed=1).tokens)
    assert evaluate_pieces(lm, gen.tokens, codec)["nll_per_token"] == pytest.approx(
        float(np.concatenate(lm.lm.score(gen.tokens)).mean()))


def test_the_engine_steps_a_quantized_model_as_serve_asks(tiny_grid_model) -> None:
    ckpt = load_checkpoint(tiny_grid_model)
    engine = Engine(stepper_for(ckpt.model, quantize="int8"), ckpt.codec, seed=0)
    assert engine.stepper.name == "torch"
    engine.human_note_on(0.0, 60, 90)
    engine.catch_up(2.0)  # the player's frames are written: one step per token
    assert engine.steps > 1 and engine.stream.logits.shape == (1, ckpt.codec.vocab_size)
