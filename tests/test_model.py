"""The network: one token at a time gives exactly what a whole sequence gives."""

from __future__ import annotations

import pytest
import torch

from musicrnn.model import ModelConfig, MusicRNN


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
