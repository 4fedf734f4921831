"""Model steps in numpy on a CPU: the live engine's path for one token at a time, and batch
composition's for one token per row.

Why: for one sequence, a ``MusicRNN.step`` spends most of its time in torch's per-call
overhead, not in arithmetic (the default 2x256 LSTM's matvecs take ~0.05 ms of a ~0.3 ms
step here). :class:`FastStepper` does the same arithmetic on the model's own weights in numpy
float32, on preallocated buffers:

- layer 0's input projection depends only on the token, so it is a table
  (vocab x gates: ``embedding @ W_ih0.T`` + biases): a step reads one row of it;
- upper LSTM / RNN layers do one product of ``[h_below; h_l]`` with ``[W_ih | W_hh]``; the
  state keeps the layers' ``h`` side by side, so that pair is one slice; weights are stored
  transposed (inputs x gates), which a batch multiplies fastest and one row no slower;
- sigmoid(x) is computed as 0.5 + 0.5 * tanh(x / 2) with the halving folded into the weights
  (exact in floating point), so one tanh covers all gates and nothing can overflow;
- a projection before a tied head is folded into the head.

It computes the function of :meth:`MusicRNN.step` in eval mode, to float32 rounding. At batch
64 it steps the default model in ~1 ms here, against ~2.7 ms for torch's LSTM. Models with
attention, quantized or bfloat16 models keep the torch path (:meth:`FastStepper.supports` says
which; :func:`musicrnn.inference.stepper_for` chooses, and
:class:`~musicrnn.inference.NumpyStepper` runs this one). numpy's BLAS must run on one thread
for real-time use: :func:`single_thread_blas`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from musicrnn.model import MusicRNN


def single_thread_blas() -> bool:
    """Run numpy's BLAS on one thread (OpenBLAS starts one per core even for matvecs this size,
    and a second busy thread costs latency spikes, as it does for torch). True when a BLAS
    library was found and limited (threadpoolctl does the finding, on every platform)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if not any(info.get("user_api") == "blas" for info in threadpool_info()):
        return False
    threadpool_limits(limits=1, user_api="blas")
    return True


def _f32(a: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class FastStepper:
    """One token at a time per sequence through a MusicRNN (lstm | gru | rnn, no attention).

    :meth:`step_batch` steps B sequences, :meth:`step_one` one (the live engine), both on a
    state ``(parts, B, layers * hidden)`` changed in place (parts: h and c for an LSTM, h
    otherwise). :meth:`step` is the functional form: it takes ``(parts, layers * hidden)`` or
    None for the start and returns a new state. The object itself holds scratch buffers: use
    it from one thread at a time.
    """

    def __init__(self, model: MusicRNN) -> None:
        if not self.supports(model):
            raise ValueError("FastStepper needs a float32 CPU MusicRNN (lstm, gru or rnn) without attention")
        c = model.config
        rnn = model.rnn
        self.arch, self.layers, self.hidden, self.vocab_size = c.arch, c.layers, c.hidden, c.vocab_size
        self.relu = c.arch == "rnn" and rnn.nonlinearity == "relu"
        hsz = c.hidden
        gates = {"lstm": 4, "gru": 3, "rnn": 1}[c.arch]
        # LSTM rows i, f, g, o -> i, f, o, g (sigmoids first); sigmoid rows halved (see module doc)
        order = np.r_[0:2 * hsz, 3 * hsz:4 * hsz, 2 * hsz:3 * hsz] if c.arch == "lstm" else np.arange(gates * hsz)
        scale = np.ones(gates * hsz)
        if c.arch in ("lstm", "gru"):
            scale[: (3 if c.arch == "lstm" else 2) * hsz] = 0.5

        def p(name: str, layer: int) -> np.ndarray:
            return _f64(getattr(rnn, f"{name}_l{layer}"))[order] * (scale if name.startswith("bias") else scale[:, None])

        emb = _f64(model.embed.weight)
        self.table = _f32(emb @ p("weight_ih", 0).T + p("bias_ih", 0) + (0 if c.arch == "gru" else p("bias_hh", 0)))
        self.w: list[np.ndarray] = []  # per layer: the matvec on the recurrent input
        self.b: list[np.ndarray] = []
        self.w_in: list[np.ndarray] = []  # GRU upper layers: the input matvec (kept apart: r gates only W_hh h)
        self.b_in: list[np.ndarray] = []
        for layer in range(c.layers):
            w_hh, b_hh = p("weight_hh", layer), p("bias_hh", layer)
            if c.arch == "gru":
                self.w.append(_f32(w_hh.T))
                self.b.append(_f32(b_hh))
                if layer:
                    self.w_in.append(_f32(p("weight_ih", layer).T))
                    self.b_in.append(_f32(p("bias_ih", layer)))
            elif layer == 0:
                self.w.append(_f32(w_hh.T))
                self.b.append(np.zeros(0, np.float32))  # in the table
            else:
                self.w.append(_f32(np.concatenate([p("weight_ih", layer), w_hh], axis=1).T))
                self.b.append(_f32(p("bias_ih", layer) + b_hh))
        head_w, head_b = _f64(model.head.weight), _f64(model.head.bias)
        if hasattr(model, "proj"):
            head_w, head_b = head_w @ _f64(model.proj.weight), head_w @ _f64(model.proj.bias) + head_b
        self.head_w, self.head_b = _f32(head_w.T), _f32(head_b)
        self._gates = gates
        self._scratch: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._cell = {"lstm": self._lstm, "gru": self._gru, "rnn": self._rnn}[c.arch]
        work = self.initial_state(1)  # step_one's state buffer and its views; layer 0's input per token
        self._one = work, self._views(work)
        self._rows = [self._layer0(self.table[tok:tok + 1]) for tok in range(self.vocab_size)]

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether :class:`FastStepper` can step ``model`` (else torch steps it: ``model.step``)."""
        if not isinstance(model, MusicRNN) or model.config.attention:
            return False
        rnn = model.rnn
        if type(rnn) not in (nn.LSTM, nn.GRU, nn.RNN) or not rnn.bias or rnn.bidirectional or getattr(rnn, "proj_size", 0):
            return False
        if type(model.head) is not nn.Linear or (hasattr(model, "proj") and type(model.proj) is not nn.Linear):
            return False
        return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())

    def initial_state(self, batch: int | None = None) -> np.ndarray:
        """Zeros: ``(parts, layers * hidden)``, or ``(parts, batch, layers * hidden)`` for
        :meth:`step_batch` and :meth:`step_one` (parts: h and c for an LSTM, h otherwise)."""
        rows = () if batch is None else (batch,)
        return np.zeros((2 if self.arch == "lstm" else 1, *rows, self.layers * self.hidden), np.float32)

    def step(self, token: int, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Feed ``token``: (next-token logits [vocab], new state ``(parts, layers * hidden)``).
        ``state`` is left as it was."""
        s = self.initial_state(1) if state is None else state[:, None].copy()
        return self.step_one(token, s)[0], s[:, 0]

    def step_batch(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed one token per sequence (``tokens`` [B]) and update ``state`` (from
        ``initial_state(B)``) in place: (logits [B, vocab], the same state). Batch
        composition's path: a batch steps as a few matrix products."""
        views = self._views(state)
        self._cell(self._layer0(self.table[tokens]), views)
        return self._logits(views[-1]), state

    def step_one(self, token: int, state: np.ndarray) -> np.ndarray:
        """:meth:`step_batch` for one sequence (``state`` from ``initial_state(1)``, updated in
        place), bit for bit: logits [1, vocab], a new array (streams share logits). The live
        engine's path: a step at batch 1 is mostly call overhead, so the state is copied into a
        buffer whose views were made once, and back (~1 us), instead of making them each step."""
        work, views = self._one
        np.copyto(work, state)
        self._cell(self._rows[token], views)
        np.copyto(state, work)
        return self._logits(views[-1])

    def _logits(self, top: np.ndarray) -> np.ndarray:
        logits = top @ self.head_w
        logits += self.head_b
        return logits

    def _layer0(self, x: np.ndarray) -> Any:
        """Layer 0's input gates (table rows) as the cell reads them: a GRU's r, z part and n part."""
        if self.arch == "gru":
            return x[:, : 2 * self.hidden], x[:, 2 * self.hidden:]
        return x

    def _buffers(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if batch not in self._scratch:  # gates, GRU input gates, one hidden-size temporary
            self._scratch[batch] = (np.empty((batch, self._gates * self.hidden), np.float32),
                                    np.empty((batch, self._gates * self.hidden), np.float32),
                                    np.empty((batch, self.hidden), np.float32))
        return self._scratch[batch]

    # A cell reads ``x0`` (layer 0's input gates: :meth:`_layer0` of table rows) and works on the
    # views :meth:`_views` made of a state (parts, B, layers * hidden) and of the scratch
    # buffers; the state changes in place. Views are the cells' slices made once: per layer, the
    # state slices it reads and writes with its weights; then the gate slices of the scratch
    # buffers; last, the top layer's h (the head's input).
    def _views(self, s: np.ndarray) -> tuple:
        hsz, b = self.hidden, s.shape[1]
        g, g_in, t = self._buffers(b)
        h = s[0]
        top = h[:, (self.layers - 1) * hsz:]
        layers = []
        for layer in range(self.layers):
            lo, hi = layer * hsz, (layer + 1) * hsz
            # LSTM / RNN: layer 0 reads its h (its input side is in the table); upper layers read
            # h[:, lo - hsz:hi] = [new h of the layer below; this layer's old h]
            h_in = h[:, :hsz] if layer == 0 else h[:, lo - hsz:hi]
            bias = None if layer == 0 else self.b[layer]  # None: add x0
            if self.arch == "lstm":
                layers.append((h_in, self.w[layer], bias, s[1][:, lo:hi], h[:, lo:hi]))
            elif self.arch == "gru":  # upper layers: the input matvec on the layer below's new h
                below = None if layer == 0 else (h[:, lo - hsz:lo], self.w_in[layer - 1], self.b_in[layer - 1])
                layers.append((below, h[:, lo:hi], self.w[layer], self.b[layer]))
            else:
                layers.append((h_in, self.w[layer], bias, h[:, lo:hi]))
        if self.arch == "lstm":  # gate order i, f, o, g
            gates = (g, g[:, : 3 * hsz], g[:, :hsz], g[:, hsz:2 * hsz], g[:, 2 * hsz:3 * hsz], g[:, 3 * hsz:], t)
        elif self.arch == "gru":  # r, z, n
            gates = (g, g[:, : 2 * hsz], g[:, :hsz], g[:, hsz:2 * hsz], g[:, 2 * hsz:], t,
                     g_in, g_in[:, : 2 * hsz], g_in[:, 2 * hsz:])
        else:
            gates = (g,)
        return layers, gates, top

    def _lstm(self, x0: np.ndarray, views: tuple) -> None:
        layers, (g, sig, i, f, o, cand, t), _ = views
        for h_in, w, bias, cl, hl in layers:
            np.matmul(h_in, w, out=g)
            g += x0 if bias is None else bias
            np.tanh(g, out=g)
            sig *= 0.5
            sig += 0.5
            cl *= f
            np.multiply(i, cand, out=t)
            cl += t
            np.tanh(cl, out=hl)
            hl *= o

    def _gru(self, x0: tuple[np.ndarray, np.ndarray], views: tuple) -> None:
        layers, (g, rz, r, z, n, t, g_in, in_rz, in_n), _ = views
        for below, hl, w, bias in layers:
            if below is None:
                x_rz, x_n = x0  # may be views of the table: never written
            else:
                h_in, w_in, b_in = below
                np.matmul(h_in, w_in, out=g_in)
                g_in += b_in
                x_rz, x_n = in_rz, in_n
            np.matmul(hl, w, out=g)  # W_hh h + b_hh: r, z (halved), then n
            g += bias
            rz += x_rz
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            np.multiply(r, n, out=t)  # r * (W_hn h + b_hn)
            t += x_n
            np.tanh(t, out=t)  # n
            hl -= t  # h' = n + z * (h - n)
            hl *= z
            hl += t

    def _rnn(self, x0: np.ndarray, views: tuple) -> None:
        layers, (g,), _ = views
        for h_in, w, bias, hl in layers:
            np.matmul(h_in, w, out=g)
            g += x0 if bias is None else bias
            if self.relu:
                np.maximum(g, 0.0, out=hl)
            else:
                np.tanh(g, out=hl)

    # --- conversion to and from MusicRNN's state ------------------------------------------------
    def to_model_state(self, state: np.ndarray | None):
        """The same state as :meth:`MusicRNN.step` holds it (rnn state, no attention history)."""
        if state is None:
            return None
        shape = (self.layers, 1, self.hidden)
        parts = [torch.from_numpy(state[i].reshape(shape).copy()) for i in range(state.shape[0])]
        return (tuple(parts) if self.arch == "lstm" else parts[0]), None

    def from_model_state(self, model_state) -> np.ndarray | None:
        """A :meth:`MusicRNN.step` state (batch 1) as this stepper's state."""
        if model_state is None:
            return None
        rnn_state = model_state[0]
        parts = rnn_state if isinstance(rnn_state, tuple) else (rnn_state,)
        return np.stack([_f32(p.detach().cpu().reshape(-1)) for p in parts])
