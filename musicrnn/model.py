"""The note-sequence model and its checkpoints.

Holds:
- :class:`ModelConfig`: everything needed to rebuild the network; saved in every checkpoint.
- :class:`MusicRNN`: Embedding -> LSTM | GRU | RNN [-> attention over the last K outputs] ->
  logits. ``forward`` runs whole sequences (training, priming); ``step`` runs one token at a
  time (sampling, live play) with the same weights.
- :func:`save_checkpoint` (atomic) and :func:`load_checkpoint` (``weights_only=True``): the one
  place checkpoints are written and read.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from musicrnn import __version__
from musicrnn.codecs import Codec, codec_from_dict
from musicrnn.errors import CheckpointError, MusicRNNError
from musicrnn.fileio import atomic_write

CHECKPOINT_FORMAT_VERSION = 1
ARCHS = ("lstm", "gru", "rnn")


@dataclass
class ModelConfig:
    vocab_size: int
    arch: str = "lstm"  # lstm | gru | rnn (plain tanh RNN, the textbook baseline)
    layers: int = 2  # stacked recurrent layers
    hidden: int = 512  # units per layer; the main size/speed knob
    embedding: int = 256  # token embedding width
    dropout: float = 0.0  # on embeddings, between layers and before the output; 0.2-0.5 fights overfitting
    tie_weights: bool = False  # share the embedding with the output layer (fewer parameters)
    attention: int = 0  # attend over the last K outputs (Magenta's attention RNN); 0 = off

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise MusicRNNError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if min(self.vocab_size, self.layers, self.hidden, self.embedding) < 1 or self.attention < 0:
            raise MusicRNNError("vocab size, layers, hidden and embedding must be positive; attention >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise MusicRNNError(f"dropout must be in [0, 1), not {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class MusicRNN(nn.Module):
    """An autoregressive token model. State is a tuple: (rnn state, recent outputs or None)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.arch]
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


# --- checkpoints --------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    model: MusicRNN
    codec: Codec
    meta: dict[str, Any]
    raw: dict[str, Any]  # everything stored (optimizer, scheduler, RNG, data position for resume)
    path: Path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save that never leaves a half-written file (see :func:`musicrnn.fileio.atomic_write`)."""
    with atomic_write(path) as fh:
        torch.save(obj, fh)


def save_checkpoint(path, model: MusicRNN, codec: Codec, meta: dict[str, Any] | None = None, **extra: Any) -> None:
    """Save model + codec + metadata (+ training state in ``extra``) atomically."""
    unwrapped = getattr(model, "module", model)
    obj = {
        "format": "musicrnn-checkpoint",
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "musicrnn_version": __version__,
        "model_config": unwrapped.config.to_dict(),
        "codec": codec.to_dict(),
        "model": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()},
        "meta": meta or {},
        **extra,
    }
    atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True``: no code in the file can run).

    ``path`` may also be a run folder or the name of a bundled model (see :func:`resolve_checkpoint`).
    Raises :class:`CheckpointError` with one line naming the file and the fix.
    """
    path = resolve_checkpoint(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return load_checkpoint(path / name, device)
        raise CheckpointError(f"{path}: folder has no best.pt or last.pt; point --model at a .pt file")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; anything else is not ours
        raise CheckpointError(f"{path}: corrupt or not a checkpoint (not a torch zip archive); re-download or retrain it")
    try:
        raw = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: {_unsafe_reason(str(exc))}; "
                              "only load checkpoints from sources you trust, saved by musicrnn") from None
    except Exception as exc:  # whatever a damaged archive makes torch raise (zip, pickle, storage errors)
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]})") from None
    if not isinstance(raw, dict) or raw.get("format") != "musicrnn-checkpoint":
        raise CheckpointError(f"{path}: not a musicrnn checkpoint")
    version = raw.get("format_version")
    if type(version) is not int or version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} (musicrnn {raw.get('musicrnn_version')}) is not supported "
            f"by musicrnn {__version__} (checkpoint format version {CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        codec = codec_from_dict(raw["codec"])
        if not isinstance(raw["model_config"], dict):
            raise CheckpointError(f"{path}: damaged checkpoint (model_config is not a table)")
        config = ModelConfig.from_dict(raw["model_config"])
        if config.vocab_size != codec.vocab_size:
            raise CheckpointError(f"{path}: model vocabulary {config.vocab_size} does not match its codec ({codec.vocab_size})")
        _check_weights(path, config, raw["model"])
        model = MusicRNN(config)
        model.load_state_dict(raw["model"])
    except CheckpointError:
        raise
    except MusicRNNError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: incomplete or mismatched checkpoint ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:160]})") from None
    meta = raw.get("meta", {})
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (meta is not a table)")
    model.to(device).eval()
    return Checkpoint(model, codec, meta, raw, path)


def _unsafe_reason(torch_message: str) -> str:
    """Our own words for torch's refusal: its message is many lines of advice (to load with
    ``weights_only=False``, which we never do) with terminal escapes; keep only what the file holds."""
    found = re.search(r"GLOBAL ([\w.]+)", torch_message)
    what = f" ({found.group(1)})" if found else ""
    return f"it holds Python objects other than plain weights{what}, which could run code if loaded"


def _check_weights(path: Path, config: ModelConfig, weights: Any) -> None:
    """The stored weights are exactly the tensors ``config`` needs, all finite: checked on the
    meta device (nothing allocated), so a crafted config cannot make us build a huge model."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in MusicRNN(config).state_dict().items()}
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: damaged checkpoint (the weights are not a table of tensors)")
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        bad = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise CheckpointError(f"{path}: the weights do not fit the model config ({', '.join(map(str, bad[:3]))}); "
                              "the file is damaged or was edited")
    for k, v in weights.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{path}: weights {k} hold NaN or infinity (training diverged, or the file is damaged)")


BUNDLED_MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL_PATH = BUNDLED_MODELS_DIR / "default.pt"


def default_model_path() -> Path:
    """The model bundled with the package, used when no --model is given."""
    return DEFAULT_MODEL_PATH


def bundled_model_names() -> list[str]:
    """Names of the models shipped inside the package (``default``, ...)."""
    return sorted(p.stem for p in BUNDLED_MODELS_DIR.glob("*.pt"))


def resolve_checkpoint(spec: str | os.PathLike | None) -> Path:
    """Where a checkpoint named on the command line is: ``None`` means the bundled default; an
    existing file or run folder is itself; a bare name such as ``default`` (or ``default.pt``)
    that is no file here is a bundled model, so ``--init-from default`` works from any folder.
    The one resolver behind ``train --init-from``, ``compose/serve --model`` and ``eval``."""
    if spec is None:
        return default_model_path()
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if text and path.name == text:  # a bare name, no folder part
        bundled = BUNDLED_MODELS_DIR / (text if text.endswith(".pt") else f"{text}.pt")
        if bundled.is_file():
            return bundled
    names = ", ".join(bundled_model_names()) or "none installed"
    raise CheckpointError(f"{path}: no such checkpoint (no such file or run folder, and no bundled model of that "
                          f"name; bundled: {names}); give a .pt file, a run folder (best.pt) or a bundled model name")


def export_checkpoint(src, dst, half: bool = True, meta: dict[str, Any] | None = None) -> Path:
    """A slim copy of a checkpoint for sharing: model + codec + metadata, no optimizer or
    training state, weights stored in float16 when ``half`` (loaded back as float32)."""
    ck = load_checkpoint(src)
    model = ck.model
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    obj = {
        "format": "musicrnn-checkpoint",
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "musicrnn_version": __version__,
        "model_config": model.config.to_dict(),
        "codec": ck.codec.to_dict(),
        "model": state,
        "meta": {**ck.meta, **(meta or {}), "exported_from": str(src), "weights_dtype": "float16" if half else "float32"},
    }
    atomic_torch_save(obj, dst)
    return Path(dst)
