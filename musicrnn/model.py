"""The note-sequence network and its state operations.

Holds :class:`MusicRNN`: Embedding -> LSTM | GRU | RNN [-> attention over the last K outputs]
-> logits. ``forward`` runs whole sequences (training, priming); ``step`` runs one token at a
time (sampling, live play) with the same weights. Its state is a tuple (rnn state, recent
outputs or None), handled here only: :meth:`~MusicRNN.reset_state_rows` (a new piece starts in
a row), :meth:`~MusicRNN.select_state_rows` (rows picked for a fork),
:meth:`~MusicRNN.detach_state` (truncated backprop), :meth:`~MusicRNN.state_to_dict` /
:meth:`~MusicRNN.state_from_dict` (in a checkpoint). :func:`token_nll` is the loss.

What it is configured by: :class:`musicrnn.config.ModelConfig`; how it is saved and loaded:
:mod:`musicrnn.checkpoint`; how it is run for inference: :mod:`musicrnn.inference`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from musicrnn.config import ModelConfig
from musicrnn.errors import MusicRNNError

RNN_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # musicrnn.config.ARCHS -> torch layer


class MusicRNN(nn.Module):
    """An autoregressive token model. State is a tuple: (rnn state, recent outputs or None)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.vocab_size < 1:
            raise MusicRNNError("the model config has no vocabulary size (set it to the codec's)")
        self.embed = nn.Embedding(c.vocab_size, c.embedding)
        rnn_cls = RNN_LAYERS[c.arch]
        self.rnn = rnn_cls(c.embedding, c.hidden, c.layers, batch_first=True, dropout=c.dropout if c.layers > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        if c.attention:
            self.att_key = nn.Linear(c.hidden, c.hidden, bias=False)
            self.att_query = nn.Linear(c.hidden, c.hidden)
            self.att_v = nn.Linear(c.hidden, 1, bias=False)
            self.att_out = nn.Linear(2 * c.hidden, c.hidden)
        out_in = c.hidden
        if c.tie_weights and c.hidden != c.embedding:
            self.proj = nn.Linear(c.hidden, c.embedding)
            out_in = c.embedding
        self.head = nn.Linear(out_in, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embed.weight

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _attend(self, out: torch.Tensor, history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each output attends over the K outputs before it (history carries them across calls)."""
        k = self.config.attention
        b, t, h = out.shape
        if history is None:
            history = out.new_zeros(b, 0, h)
        full = torch.cat([history, out], dim=1)  # [B, P+T, H]
        p = history.shape[1]
        keys = self.att_key(full)
        # window j in 0..K-1 -> the output K-j steps back
        idx = torch.arange(t, device=out.device)[:, None] + p - k + torch.arange(k, device=out.device)[None, :]
        valid = idx >= 0
        idx = idx.clamp(min=0)
        win_keys = keys[:, idx]  # [B, T, K, H]
        win_vals = full[:, idx]
        scores = self.att_v(torch.tanh(win_keys + self.att_query(out)[:, :, None])).squeeze(-1)
        scores = scores.masked_fill(~valid[None], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.nan_to_num(weights)  # the very first step has nothing to attend to
        context = (weights[..., None] * win_vals).sum(2)
        mixed = torch.tanh(self.att_out(torch.cat([out, context], dim=-1)))
        return mixed, full[:, -k:].detach()

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens [B, T] -> (logits [B, T, vocab], state)."""
        rnn_state, history = state if state is not None else (None, None)
        x = self.drop(self.embed(tokens))
        out, rnn_state = self.rnn(x, rnn_state)
        if self.config.attention:
            out, history = self._attend(out, history)
        out = self.drop(out)
        if hasattr(self, "proj"):
            out = self.proj(out)
        return self.head(out), (rnn_state, history)

    @torch.no_grad()
    def step(self, token: torch.Tensor, state=None):
        """One token per sequence: token [B] -> (logits [B, vocab], state). Eval mode, no grad."""
        logits, state = self.forward(token[:, None], state)
        return logits[:, 0], state

    def reset_state_rows(self, state, keep: torch.Tensor):
        """Zero the state of sequences where ``keep`` is False (a new piece starts there)."""
        if state is None:
            return None
        rnn_state, history = state
        m = keep.to(dtype=torch.float32)
        if isinstance(rnn_state, tuple):
            rnn_state = tuple(s * m[None, :, None].to(s.dtype) for s in rnn_state)
        else:
            rnn_state = rnn_state * m[None, :, None].to(rnn_state.dtype)
        if history is not None:
            history = history * m[:, None, None].to(history.dtype)
        return rnn_state, history

    @staticmethod
    def select_state_rows(state, rows: torch.Tensor):
        """The state of the sequences ``rows`` (an index tensor; in its order, a row may repeat)."""
        if state is None:
            return None
        rnn_state, history = state
        if isinstance(rnn_state, tuple):
            rnn_state = tuple(s[:, rows] for s in rnn_state)
        else:
            rnn_state = rnn_state[:, rows]
        return rnn_state, (history[rows] if history is not None else None)

    @staticmethod
    def state_to_dict(state) -> dict | None:
        """The state as plain CPU tensors, for a checkpoint (training's carried state)."""
        if state is None:
            return None
        rnn_state, history = state
        if isinstance(rnn_state, tuple):
            saved = {"h": rnn_state[0].detach().cpu(), "c": rnn_state[1].detach().cpu()}
        else:
            saved = {"h": rnn_state.detach().cpu()}
        if history is not None:
            saved["history"] = history.detach().cpu()
        return saved

    @staticmethod
    def state_from_dict(saved: dict | None, device: str | torch.device = "cpu"):
        """The state :meth:`state_to_dict` wrote, on ``device``."""
        if not saved:
            return None
        rnn = (saved["h"].to(device), saved["c"].to(device)) if "c" in saved else saved["h"].to(device)
        history = saved["history"].to(device) if "history" in saved else None
        return rnn, history

    @staticmethod
    def detach_state(state):
        if state is None:
            return None
        rnn_state, history = state
        if isinstance(rnn_state, tuple):
            rnn_state = tuple(s.detach() for s in rnn_state)
        elif rnn_state is not None:
            rnn_state = rnn_state.detach()
        return rnn_state, (history.detach() if history is not None else None)


def token_nll(model: MusicRNN, tokens: torch.Tensor, targets: torch.Tensor, state=None):
    """Per-token negative log-likelihood in nats (targets < 0 are padding -> 0)."""
    logits, state = model(tokens, state)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).clamp(min=0), reduction="none")
    nll = nll.view_as(targets) * (targets >= 0)
    return nll, state
