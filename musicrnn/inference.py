"""One inference layer: how a model runs once trained, for compose, live play and eval alike.

Holds:
- :class:`Stepper`: rows of model state, each reading one token at a time: :meth:`~Stepper.prime`
  (read a primer on every row), :meth:`~Stepper.step` (one token per row in, next-token logits
  out), :meth:`~Stepper.fork` (a copy of all rows, or of chosen rows, that goes on apart),
  :meth:`~Stepper.fresh` (new rows from the start), :meth:`~Stepper.step_one` (one row, one
  token: the live engine's path), :meth:`~Stepper.kernels` (the CPU-kernel switch around a run
  of steps) and :meth:`~Stepper.score` (NLL of whole pieces: eval).
- :class:`NumpyStepper` (float32 models on a CPU: :class:`~musicrnn.fast_step.FastStepper`) and
  :class:`TorchStepper` (``MusicRNN.step`` / ``nn.LSTM``: GPUs, bfloat16, int8, attention);
  the n-gram baseline's is :class:`musicrnn.ngram.NGramStepper`.
- :func:`stepper_for`: the one place that chooses device, precision (:func:`at_precision`),
  quantization (:func:`quantized`) and the stepper, so ``compose``, ``serve`` and ``eval`` run a
  model the same way.
- :func:`pick_device`: what ``--device auto|cpu|cuda|mps`` means here (train, compose, eval).
- :func:`inference_mode_for`: the CPU-kernel switch (oneDNN off for float32 steps).

Logits come back as float32 numpy arrays on the CPU, where sampling happens
(:func:`musicrnn.sample.sample_next`). A stepper never changes the state of a fork or of
another stepper; it holds scratch buffers, so use each from one thread at a time.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch import nn

from musicrnn.codecs import BOS
from musicrnn.errors import MusicRNNError
from musicrnn.fast_step import FastStepper
from musicrnn.model import MusicRNN, token_nll

PRECISION_CHOICES = ("fp32", "bf16")
QUANTIZE_CHOICES = ("none", "int8")


class Stepper(ABC):
    """``rows`` sequences, each with its own state, stepped together one token per row."""

    name = "?"  # "numpy", "torch", "ngram": which path steps (benchmarks report it)
    rows: int

    @abstractmethod
    def prime(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Every row reads ``tokens`` from a fresh state (a primer; nothing: a fresh state)."""

    @abstractmethod
    def step(self, tokens: np.ndarray) -> np.ndarray:
        """One token per row (``tokens`` [rows]) in: next-token logits [rows, vocab] (float32) out."""

    def step_one(self, token: int) -> np.ndarray:
        """:meth:`step` for a stepper of one row (the live engine's path): logits [1, vocab]."""
        return self.step(np.array([token]))

    @abstractmethod
    def fork(self, rows: Sequence[int] | None = None) -> Stepper:
        """A stepper that goes on from this one's state (of the given ``rows``, in that order, a row
        may repeat; default all) and shares nothing that a step changes."""

    @abstractmethod
    def fresh(self, rows: int = 1) -> Stepper:
        """``rows`` new sequences of the same model, from the start (no token read yet)."""

    def kernels(self) -> AbstractContextManager:
        """The settings a run of steps wants (enter once around many: entering costs ~10 us)."""
        return contextlib.nullcontext()

    @abstractmethod
    def score(self, pieces: list[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        """NLL (nats) of every token of every piece, each read from BOS and a fresh state."""


class TorchStepper(Stepper):
    """Steps through the model's own ``step`` (torch): GPUs, bfloat16 weights, int8 models and
    models with attention. ``autocast``: a dtype for :meth:`score` (training's validation)."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", rows: int = 1, state: Any = None,
                 autocast: torch.dtype | None = None) -> None:
        self.model, self.device, self.rows, self.state = model, torch.device(device), rows, state
        self.autocast = autocast
        self.dtype = weights_dtype(model)

    def kernels(self) -> AbstractContextManager:
        return inference_mode_for(self.device, self.rows, self.dtype)

    def prime(self, tokens: Sequence[int] | np.ndarray) -> None:
        self.state = None
        if len(tokens):
            x = torch.from_numpy(np.asarray(tokens, np.int64)).to(self.device)[None].expand(self.rows, -1)
            with self.kernels():
                _, self.state = self.model(x, None)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        logits, self.state = self.model.step(torch.from_numpy(np.asarray(tokens, np.int64)).to(self.device), self.state)
        return logits.float().cpu().numpy()  # float: a bf16 model's logits too

    def fork(self, rows: Sequence[int] | None = None) -> TorchStepper:
        if rows is None:  # steps replace the state's tensors, never write into them: sharing is safe
            return TorchStepper(self.model, self.device, self.rows, self.state, self.autocast)
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.device)
        return TorchStepper(self.model, self.device, len(index), MusicRNN.select_state_rows(self.state, index),
                            self.autocast)

    def fresh(self, rows: int = 1) -> TorchStepper:
        return TorchStepper(self.model, self.device, rows, None, self.autocast)

    def score(self, pieces: list[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        return score_pieces(self.model, pieces, self.device, batch_size, autocast=self.autocast)


class NumpyStepper(Stepper):
    """Steps a float32 model on a CPU in numpy (:class:`~musicrnn.fast_step.FastStepper`: at batch
    64 ~1 ms a step here against ~2.7 ms for torch's LSTM, at batch 1 ~0.07 against ~0.3).
    Priming and scoring read whole sequences, which torch does faster: they use the model."""

    name = "numpy"

    def __init__(self, model: MusicRNN, rows: int = 1, fast: FastStepper | None = None,
                 state: np.ndarray | None = None) -> None:
        self.model, self.rows = model, rows
        self.fast = fast or FastStepper(model)  # a copy of the weights as they are now
        self.state = self.fast.initial_state(rows) if state is None else state  # (parts, rows, layers * hidden)

    def prime(self, tokens: Sequence[int] | np.ndarray) -> None:
        self.state = self.fast.initial_state(self.rows)
        if len(tokens):  # read once, for all rows
            with inference_mode_for("cpu", 1):
                _, primed = self.model(torch.from_numpy(np.asarray(tokens, np.int64))[None], None)
            self.state[:] = self.fast.from_model_state(primed)[:, None, :]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        return self.fast.step_batch(np.asarray(tokens), self.state)[0]

    def step_one(self, token: int) -> np.ndarray:
        if self.rows != 1:
            raise ValueError(f"step_one steps one row, this stepper has {self.rows}")
        return self.fast.step_one(token, self.state)

    def fork(self, rows: Sequence[int] | None = None) -> NumpyStepper:
        state = self.state.copy() if rows is None else self.state[:, list(rows)]  # fancy indexing copies
        return NumpyStepper(self.model, state.shape[1], self.fast, state)

    def fresh(self, rows: int = 1) -> NumpyStepper:
        return NumpyStepper(self.model, rows, self.fast)

    def score(self, pieces: list[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        return score_pieces(self.model, pieces, "cpu", batch_size)


def pick_device(name: str) -> torch.device:
    """The device ``--device NAME`` means (``auto``: a GPU where torch sees one, else the CPU);
    under torchrun, this process's GPU (``LOCAL_RANK``)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MusicRNNError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or install a CUDA build of torch")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MusicRNNError("--device mps: Apple Metal is not available here; use --device cpu")
    return torch.device(name)


def stepper_for(model: MusicRNN, device: str | torch.device = "cpu", precision: str = "fp32",
                quantize: str = "none", rows: int = 1) -> Stepper:
    """How ``model`` runs for inference, chosen in this one place: int8 weights when
    ``quantize`` (CPU only), then ``precision``'s weights on ``device``; float32 on a CPU steps in
    numpy, everything else through torch. ``rows`` fresh sequences."""
    dev = torch.device(device)
    if quantize not in QUANTIZE_CHOICES:
        raise MusicRNNError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize != "none":
        model, dev = quantized(model, quantize), torch.device("cpu")
    model = at_precision(model, precision).to(dev).eval()
    if dev.type == "cpu" and FastStepper.supports(model):
        return NumpyStepper(model, rows)
    return TorchStepper(model, dev, rows)


@torch.no_grad()
def score_pieces(model: nn.Module, pieces: list[np.ndarray], device: str | torch.device = "cpu", batch_size: int = 32,
                 chunk: int = 512, autocast: torch.dtype | None = None) -> list[np.ndarray]:
    """Per-token NLL (nats) of ``pieces`` by teacher forcing: batched (longest first), read in
    ``chunk``-token pieces with the state carried between them."""
    device = torch.device(device)
    model.eval()
    order = np.argsort([-len(p) for p in pieces], kind="stable")
    out: list[np.ndarray | None] = [None] * len(pieces)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = [pieces[j] for j in idx]
        longest = max(len(p) for p in batch)
        inputs = np.zeros((len(batch), longest), np.int64)
        targets = np.full((len(batch), longest), -1, np.int64)
        for r, p in enumerate(batch):
            seq = np.concatenate([[BOS], p])
            inputs[r, : len(p)] = seq[:-1]
            targets[r, : len(p)] = seq[1:]
        inp = torch.from_numpy(inputs).to(device)
        tgt = torch.from_numpy(targets).to(device)
        state = None
        nll = torch.zeros(tgt.shape, dtype=torch.float64)
        for s in range(0, longest, chunk):
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                chunk_nll, state = token_nll(model, inp[:, s : s + chunk], tgt[:, s : s + chunk], state)
            nll[:, s : s + chunk] = chunk_nll.double().cpu()
        for r, j in enumerate(idx):
            out[j] = nll[r, : len(pieces[j])].numpy()
    return out  # type: ignore[return-value]


def weights_dtype(model: Any) -> torch.dtype:
    """The model's weight type (float32 for anything without torch weights)."""
    first = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return first.dtype if first is not None else torch.float32


@contextlib.contextmanager
def inference_mode_for(device: str | torch.device, batch: int, dtype: torch.dtype = torch.float32):
    """The fastest CPU kernels for stepping ``batch`` sequences one token at a time.

    Measured here (torch 2.13, 2 threads, the default 2x256 LSTM): with float32 weights oneDNN
    is slower at every batch size (batch 1: 1.11 against 0.24 ms a step; batch 64: 1.91
    against 1.25); with bfloat16 weights it wins from batch 8 (batch 64: 0.69 against 4.9 ms).
    GPUs are left alone.
    """
    if torch.device(device).type != "cpu":
        with torch.no_grad():
            yield
        return
    # only the oneDNN switch changes; the None arguments leave its other settings alone
    enabled = dtype == torch.bfloat16 and batch > 1
    with torch.backends.mkldnn.flags(enabled=enabled, deterministic=None, allow_tf32=None, fp32_precision=None):
        with torch.no_grad():
            yield


def at_precision(model: MusicRNN, precision: str = "fp32") -> MusicRNN:
    """The model with its weights in ``precision`` for inference: ``fp32`` (as trained: the
    model itself) or ``bf16`` (a copy with bfloat16 weights: half the bytes per step; through
    torch, a large batch steps ~2-3x faster than in float32 on GPUs and on CPUs with native
    bfloat16, though the numpy path for float32 on a CPU is about as fast). ``musicrnn eval
    --precision bf16`` shows what it costs in NLL."""
    if precision == "fp32":
        return model
    if precision != "bf16":
        raise MusicRNNError(f"unknown precision {precision!r}; choose {', '.join(PRECISION_CHOICES)}")
    return copy.deepcopy(model).to(torch.bfloat16)


def bf16_is_native(device: str | torch.device) -> bool:
    """Does ``device`` compute in bfloat16 natively (else torch emulates it, slowly)?"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


def quantized(model: MusicRNN, mode: str = "int8") -> nn.Module:
    """The fast CPU path for one-token-at-a-time inference: int8 dynamic quantization of the
    recurrent and linear layers (weights stored as int8, activations quantized on the fly).

    A step reads every weight once, so its time follows the weight bytes: int8 reads a quarter
    of fp32's. The result keeps ``forward``/``step``; it is for inference on CPU only.
    ``musicrnn eval --quantize int8`` shows what it costs in NLL.
    """
    if mode == "none":
        return model
    if mode != "int8":
        raise MusicRNNError(f"unknown quantization {mode!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        q = torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)
    q.config = model.config
    return q
