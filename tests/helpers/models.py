"""Tiny random checkpoints for tests that need a model file but not a trained one."""

from __future__ import annotations

from pathlib import Path


def tiny_checkpoint(path: Path, codec, meta: dict | None = None) -> Path:
    """A 1x32 LSTM with random weights (seed 0) in ``codec``, saved at ``path`` (with ``meta``)."""
    import torch

    from musicrnn.checkpoint import save_checkpoint
    from musicrnn.config import ModelConfig
    from musicrnn.model import MusicRNN

    torch.manual_seed(0)
    save_checkpoint(path, MusicRNN(ModelConfig(codec.vocab_size, hidden=32, embedding=16, layers=1)), codec, meta)
    return path
