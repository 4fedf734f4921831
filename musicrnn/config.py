"""The configurations saved in checkpoints: what a model is, and how it was trained.

Holds:
- :class:`ModelConfig`: everything needed to rebuild the network (saved as a checkpoint's
  ``model_config``); :data:`ARCHS`, the recurrent layers there are.
- :class:`TrainConfig`: a training run's settings, with its model's :class:`ModelConfig` nested
  inside (``cfg.model``), as nanoGPT keeps them; saved as a checkpoint's ``train_config``.
  :meth:`TrainConfig.from_dict` reads both shapes: the nested one, and the flat one of older
  checkpoints (the model's fields beside the others), which is also how the CLI gives them.
- The choices the commands offer for precision, optimizer and schedule.

No torch here: the CLI takes its choices and defaults from these without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from musicrnn.errors import MusicRNNError

ARCHS = ("lstm", "gru", "rnn")  # the recurrent layer (rnn: plain tanh RNN, the textbook baseline)
INFERENCE_PRECISIONS = ("fp32", "bf16")  # weights for compose/eval (musicrnn.inference.at_precision)
QUANTIZATIONS = ("none", "int8")  # weights for serve/eval on a CPU (musicrnn.inference.quantized)
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")  # autocast while training
OPTIMIZERS = ("adamw", "rmsprop")
SCHEDULES = ("cosine", "constant", "plateau")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class ModelConfig:
    vocab_size: int = 0  # the codec's; 0 = not known yet (training sets it from the data)
    arch: str = "lstm"  # one of ARCHS
    layers: int = 2  # stacked recurrent layers
    hidden: int = 512  # units per layer; the main size/speed knob
    embedding: int = 256  # token embedding width
    dropout: float = 0.0  # on embeddings, between layers and before the output; 0.2-0.5 fights overfitting
    tie_weights: bool = False  # share the embedding with the output layer (fewer parameters)
    attention: int = 0  # attend over the last K outputs (Magenta's attention RNN); 0 = off

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise MusicRNNError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if min(self.layers, self.hidden, self.embedding) < 1 or self.vocab_size < 0 or self.attention < 0:
            raise MusicRNNError("layers, hidden and embedding must be positive; vocab size and attention >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise MusicRNNError(f"dropout must be in [0, 1), not {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The config in ``d``; keys this version does not know are left out."""
        return cls(**{k: v for k, v in d.items() if k in MODEL_FIELDS})


MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))


def _train_model() -> ModelConfig:
    return ModelConfig(dropout=0.2)  # training's default: some dropout


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=_train_model)  # the network (vocab_size: the data's codec)
    # optimisation
    batch_size: int = 32  # rows (pieces played in parallel)
    seq_len: int = 128  # tokens per row per step (truncated BPTT length)
    epochs: float | None = None  # stop after this many passes over the training pieces
    max_steps: int | None = None  # or after this many steps (whichever comes first)
    time_limit: float | None = None  # or after this many minutes; the cosine schedule then decays by time too
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning); its architecture wins
    lr: float = 2e-3
    optimizer: str = "adamw"  # one of OPTIMIZERS
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient norm clip (0 = off)
    schedule: str = "cosine"  # one of SCHEDULES
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine ends at lr * this
    patience: int = 0  # stop after this many evaluations without valid improvement (0 = never)
    eval_every: int = 0  # steps between valid evaluations (0 = once per epoch)
    eval_max_pieces: int | None = None
    log_every: int = 20
    # augmentation
    augment_transpose: int = 0  # random transposition of each piece within +-N semitones
    augment_stretch: float = 0.0  # performance codec: random time stretch within +-this fraction
    # machinery
    device: str = "auto"  # one of DEVICES
    precision: str = "fp32"  # one of TRAIN_PRECISIONS (autocast; bf16/fp16 mainly for GPUs)
    seed: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default)

    def to_dict(self) -> dict[str, Any]:
        """Nested: ``{"model": {...}, "batch_size": ..., ...}`` (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """The config in ``d``, nested or flat (the model's fields beside the others: checkpoints
        saved before the nesting, and the CLI's options); what ``d`` does not give comes from
        ``base`` (default: the defaults), and keys this version does not know are left out."""
        base = base or cls()
        nested = d.get("model") if isinstance(d.get("model"), dict) else {}
        model = {**{k: v for k, v in d.items() if k in MODEL_FIELDS}, **nested}
        own = {k: v for k, v in d.items() if k in TRAIN_FIELDS and k != "model"}
        return replace(base, model=ModelConfig.from_dict({**base.model.to_dict(), **model}), **own)


TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
TRAIN_DEFAULTS = TrainConfig()  # what the CLI shows as defaults
