"""Checkpoints: the one place they are written and read.

Holds :func:`save_checkpoint` (atomic: a file appears complete or not at all) and
:func:`load_checkpoint` (``weights_only=True``: no code in a file can run; every problem is one
:class:`~musicrnn.errors.CheckpointError` line naming the file and the fix), the bundled models
(:func:`default_model_path`, :func:`resolve_checkpoint` for names such as ``default``) and
:func:`export_checkpoint` (a slim copy for sharing).

A checkpoint holds the codec, the model config (``model_config``), the weights, ``meta`` and,
for a training run, its state (``train_config``: see :class:`musicrnn.config.TrainConfig`,
optimizer, scheduler, RNG, data position).
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from musicrnn import __version__
from musicrnn.codecs import Codec, codec_from_dict
from musicrnn.config import ModelConfig, TrainConfig
from musicrnn.errors import CheckpointError, MusicRNNError
from musicrnn.fileio import atomic_write
from musicrnn.model import MusicRNN

CHECKPOINT_FORMAT_VERSION = 1



@dataclass
class Checkpoint:
    model: MusicRNN
    codec: Codec
    meta: dict[str, Any]
    raw: dict[str, Any]  # everything stored (optimizer, scheduler, RNG, data position for resume)
    path: Path

    @property
    def train_config(self) -> TrainConfig | None:
        """How the model was trained (``meta["train_config"]``, nested or in the flat shape of older
        checkpoints), its model config the one stored with the weights; None if not recorded."""
        saved = self.meta.get("train_config")
        if not isinstance(saved, dict):
            return None
        return replace(TrainConfig.from_dict(saved), model=self.model.config)


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
DEFAULT_MODEL = "pop"  # the bundled model used when none is named; also reachable as "default"
DEFAULT_MODEL_PATH = BUNDLED_MODELS_DIR / f"{DEFAULT_MODEL}.pt"


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
        name = text[:-3] if text.endswith(".pt") else text
        bundled = BUNDLED_MODELS_DIR / f"{DEFAULT_MODEL if name == 'default' else name}.pt"
        if bundled.is_file():
            return bundled
    names = ", ".join(["default", *bundled_model_names()])
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
