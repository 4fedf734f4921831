"""The network: one token at a time gives exactly what a whole sequence gives."""

from __future__ import annotations

import pytest
import torch

from musicrnn.config import ModelConfig
from musicrnn.model import MusicRNN


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", [0, 4])
@pytest.mark.parametrize("tie", [False, True])
def test_step_path_matches_forward(arch, attention, tie):
    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(50, arch=arch, layers=2, hidden=24, embedding=16, attention=attention, tie_weights=tie)).eval()
    tokens = torch.randint(0, 50, (3, 11))
    full, _ = model(tokens)
    state = None
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        assert torch.allclose(logits, full[:, t], atol=1e-5), (arch, attention, t)


def test_state_can_be_carried_across_chunks():
    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(30, hidden=16, embedding=8, attention=3)).eval()
    tokens = torch.randint(0, 30, (2, 20))
    full, _ = model(tokens)
    a, st = model(tokens[:, :7])
    b, _ = model(tokens[:, 7:], st)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)


def test_reset_rows_zeroes_only_new_pieces():
    model = MusicRNN(ModelConfig(30, hidden=16, embedding=8))
    _, st = model(torch.randint(0, 30, (3, 5)))
    st = model.reset_state_rows(st, torch.tensor([True, False, True]))
    h, c = st[0]
    assert h[:, 1].abs().sum() == 0 and c[:, 1].abs().sum() == 0 and h[:, 0].abs().sum() > 0


def test_weight_tying_shares_the_embedding():
    model = MusicRNN(ModelConfig(30, hidden=16, embedding=8, tie_weights=True))
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_int8_fast_path_stays_close_to_fp32(arch):
    from musicrnn.inference import quantized

    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(40, arch=arch, hidden=64, embedding=32)).eval()
    fast = quantized(model)
    tokens = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        ref = torch.log_softmax(model(tokens)[0], -1)
        got = torch.log_softmax(fast(tokens)[0], -1)
    assert (ref.exp() - got.exp()).abs().max() < 0.02
    logits, _ = fast.step(tokens[:, 0], None)  # the step path works on the quantized model too
    assert logits.shape == (2, 40)


def test_unknown_quantization_is_a_clear_error():
    from musicrnn.errors import MusicRNNError
    from musicrnn.inference import quantized

    with pytest.raises(MusicRNNError, match="int8"):
        quantized(MusicRNN(ModelConfig(10, hidden=8, embedding=8)), "int4")


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_bf16_weights_stay_close_to_fp32_and_leave_the_model_alone(arch):
    from musicrnn.errors import MusicRNNError
    from musicrnn.inference import at_precision

    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(40, arch=arch, hidden=64, embedding=32)).eval()
    assert at_precision(model, "fp32") is model
    half = at_precision(model, "bf16")
    assert next(model.parameters()).dtype == torch.float32 and next(half.parameters()).dtype == torch.bfloat16
    tokens = torch.randint(0, 40, (2, 30))
    with torch.no_grad():
        ref = torch.softmax(model(tokens)[0], -1)
        got = torch.softmax(half(tokens)[0].float(), -1)
        logits, _ = half.step(tokens[:, 0], None)
    assert (ref - got).abs().max() < 0.02
    assert logits.shape == (2, 40)
    with pytest.raises(MusicRNNError, match="bf16"):
        at_precision(model, "fp8")
