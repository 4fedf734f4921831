"""Training: one loop for one CPU, one GPU, or many GPUs/nodes under torchrun (DDP).

Data are read as *piece streams*: each of the ``batch_size`` rows plays whole pieces one after
another, ``seq_len`` tokens per step (truncated backprop through time). The RNN state is carried
from one step to the next within a piece and reset to zero where a new piece starts, so training
sees exactly what evaluation and generation see: a piece that starts from BOS and a fresh state.
Augmentation (random transposition, time stretch for the performance codec) is drawn per piece.

``RUN/last.pt`` holds everything needed to continue exactly (model, optimizer, scheduler, step,
RNG streams, data position, carried RNN state); ``RUN/best.pt`` the best model on valid NLL (or,
when the valid split is empty, on the mean training loss since the previous evaluation: an
announced fallback; no valid number is then reported).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from musicrnn.corpus import TokenData
from musicrnn.errors import CheckpointError, MusicRNNError
from musicrnn.evaluate import codec_mismatch, evaluate_pieces
from musicrnn.inference import TorchStepper
from musicrnn.model import ModelConfig, MusicRNN, load_checkpoint, save_checkpoint, token_nll


@dataclass
class TrainConfig:
    # model
    arch: str = "lstm"
    layers: int = 2
    hidden: int = 512
    embedding: int = 256
    dropout: float = 0.2
    tie_weights: bool = False
    attention: int = 0
    # optimisation
    batch_size: int = 32  # rows (pieces played in parallel)
    seq_len: int = 128  # tokens per row per step (truncated BPTT length)
    epochs: float | None = None  # stop after this many passes over the training pieces
    max_steps: int | None = None  # or after this many steps (whichever comes first)
    time_limit: float | None = None  # or after this many minutes; the cosine schedule then decays by time too
    init_from: str | None = None  # start from this checkpoint's weights (fine-tuning); its architecture wins
    lr: float = 2e-3
    optimizer: str = "adamw"  # adamw | rmsprop
    weight_decay: float = 0.01
    clip: float = 1.0  # gradient norm clip (0 = off)
    schedule: str = "cosine"  # cosine | constant | plateau
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
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; bf16/fp16 mainly for GPUs)
    seed: int = 0
    threads: int = 0  # CPU threads for torch (0 = torch's default)


class PieceStreams:
    """Rows of whole pieces, cut into ``seq_len`` chunks; resumable (see :meth:`state_dict`)."""

    def __init__(self, data: TokenData, cfg: TrainConfig, rank: int = 0, world: int = 1) -> None:
        self.data, self.cfg, self.rank, self.world = data, cfg, rank, world
        self.codec = data.codec
        self.lengths = data.lengths()
        self.rng = np.random.default_rng([cfg.seed, 1, rank])
        self.order_rng = np.random.default_rng([cfg.seed, 2])  # same on every rank: one permutation
        self.epoch = 0
        self.perm = self._permutation()
        self.cursor = 0
        b = cfg.batch_size
        self.row_piece = [-1] * b
        self.row_pos = [0] * b
        self.row_shift = [0] * b
        self.row_stretch = [1.0] * b
        self._tokens: list[np.ndarray | None] = [None] * b
        self.pieces_started = 0

    def _permutation(self) -> list[int]:
        perm = self.order_rng.permutation(len(self.lengths))
        return [int(i) for i in perm[self.rank :: self.world]]

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.cursor / max(1, len(self.perm))

    def _next_piece(self) -> int:
        if self.cursor >= len(self.perm):
            self.epoch += 1
            self.perm = self._permutation()
            self.cursor = 0
        i = self.perm[self.cursor]
        self.cursor += 1
        return i

    def _load(self, row: int) -> np.ndarray:
        toks = self.data.piece(self.row_piece[row], with_bos=True)
        if self.row_shift[row]:
            moved = self.codec.transpose(toks, self.row_shift[row])
            toks = moved if moved is not None else toks
        if self.row_stretch[row] != 1.0 and self.codec.can_stretch:
            toks = self.codec.stretch(toks, self.row_stretch[row])
        return toks

    def _start_row(self, row: int) -> None:
        self.row_piece[row] = self._next_piece()
        self.row_pos[row] = 0
        self.pieces_started += 1
        cfg = self.cfg
        shift, stretch = 0, 1.0
        if cfg.augment_transpose:
            toks = self.data.piece(self.row_piece[row], with_bos=True)
            down, up = self.codec.transpose_range(toks)
            lo, hi = max(-cfg.augment_transpose, down), min(cfg.augment_transpose, up)
            shift = int(self.rng.integers(lo, hi + 1)) if hi >= lo else 0
        if cfg.augment_stretch and self.codec.can_stretch:
            stretch = float(self.rng.uniform(1 - cfg.augment_stretch, 1 + cfg.augment_stretch))
        self.row_shift[row], self.row_stretch[row] = shift, stretch
        self._tokens[row] = self._load(row)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [B, L], targets [B, L] with -1 padding, fresh [B] = row starts a new piece)."""
        b, L = self.cfg.batch_size, self.cfg.seq_len
        inputs = np.zeros((b, L), np.int64)
        targets = np.full((b, L), -1, np.int64)
        fresh = np.zeros(b, bool)
        for r in range(b):
            toks = self._tokens[r]
            if toks is None or self.row_pos[r] + 1 >= len(toks):
                self._start_row(r)
                toks = self._tokens[r]
                fresh[r] = True
            assert toks is not None
            pos = self.row_pos[r]
            chunk = toks[pos : pos + L + 1]
            n = len(chunk) - 1
            inputs[r, :n] = chunk[:-1]
            targets[r, :n] = chunk[1:]
            self.row_pos[r] = pos + n
        return inputs, targets, fresh

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "perm": list(self.perm),
            "row_piece": list(self.row_piece),
            "row_pos": list(self.row_pos),
            "row_shift": list(self.row_shift),
            "row_stretch": list(self.row_stretch),
            "rng": _jsonable_rng(self.rng),
            "order_rng": _jsonable_rng(self.order_rng),
            "pieces_started": self.pieces_started,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.epoch, self.cursor, self.perm = int(s["epoch"]), int(s["cursor"]), [int(x) for x in s["perm"]]
        self.row_piece = [int(x) for x in s["row_piece"]]
        self.row_pos = [int(x) for x in s["row_pos"]]
        self.row_shift = [int(x) for x in s["row_shift"]]
        self.row_stretch = [float(x) for x in s["row_stretch"]]
        self.rng.bit_generator.state = json.loads(s["rng"])
        self.order_rng.bit_generator.state = json.loads(s["order_rng"])
        self.pieces_started = int(s["pieces_started"])
        self._tokens = [self._load(r) if self.row_piece[r] >= 0 else None for r in range(len(self.row_piece))]


def _jsonable_rng(rng: np.random.Generator) -> str:
    # JSON text: big ints survive, and torch's weights_only loader accepts plain strings
    return json.dumps(rng.bit_generator.state)


def pick_device(name: str) -> torch.device:
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


RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")
LOG_MAX_SECONDS = 30.0  # a progress row at least this often, however slow the steps (logs of long runs)


def check_run_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run over an existing one unless asked: a trained best.pt and its
    metrics are not to be lost to a forgotten ``--resume``."""
    if resume and overwrite:
        raise MusicRNNError("--resume and --overwrite exclude each other; --resume continues the run in the "
                            "folder, --overwrite starts again and replaces it")
    if resume or overwrite:
        return
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise MusicRNNError(f"{run_dir}: already holds a training run ({', '.join(found)}); continue it with --resume, "
                            "start again with --overwrite (deletes them), or choose another -o folder")


def _lr_lambda(cfg: TrainConfig, total_steps: int, time_progress: Callable[[], float] = lambda: 0.0) -> Callable[[int], float]:
    """Warm-up, then cosine decay by whichever runs out first: steps or (with a time limit) minutes."""

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.schedule != "cosine" or total_steps <= 0:
            return warm
        progress = min(1.0, max(step / max(1, total_steps), time_progress()))
        return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return f


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_valid_nll: float | None  # None when the valid split is empty (best.pt chosen by training loss)
    stopped: str  # "done" | "early-stopped" | "time-limit" | "interrupted"
    model: Any = None  # the trained model as it is at the end (not necessarily the best)
    chosen_by: str = "valid_nll"  # what best.pt was chosen by: "valid_nll" or "train_loss"
    best_score: float = float("inf")  # the best value of that measure (inf: no evaluation happened)
    signum: int = 0  # the signal that interrupted training (SIGINT, SIGTERM), 0 if none


def clock_text(seconds: float | None) -> str:
    """12:34 or 1:02:03; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_line(row: dict) -> str:
    """One plain line for a metrics row, for logs (output that is not a terminal)."""
    total = row.get("total_steps")
    head = f"step {row['step']:,}{f'/{total:,}' if total else ''} (epoch {row.get('epoch', 0):.2f})"
    timing = f"elapsed {clock_text(row.get('elapsed_s'))}, left {clock_text(row.get('remaining_s'))}"
    if "train_loss" in row:
        return (f"{head}: loss {row['train_loss']:.4f}, lr {row['lr']:.2e}, {row['tokens_per_s']:,.0f} tok/s; {timing}")
    if row.get("valid_nll") is not None:
        return f"{head}: valid NLL/token {row['valid_nll']:.4f} (best {row['best_valid_nll']:.4f}); {timing}"
    return (f"{head}: train loss since the last evaluation {row['train_loss_since_eval']:.4f} "
            f"(best {row['best_train_loss']:.4f}; the valid split is empty); {timing}")


class PlainProgress:
    """Progress as plain lines for a log file: every evaluation, and training rows at most one per
    ``every`` seconds (train() sends one at least every :data:`LOG_MAX_SECONDS`)."""

    def __init__(self, echo: Callable[[str], None], every: float = 10.0) -> None:
        self.echo, self.every, self.last = echo, every, -math.inf

    def __call__(self, row: dict) -> None:
        now = time.monotonic()
        last_step = row.get("total_steps") is not None and row["step"] == row["total_steps"]
        if "train_loss" in row and now - self.last < self.every and not last_step:
            return
        self.last = now
        self.echo(progress_line(row))


def result_summary(result: TrainResult) -> str:
    """What best.pt was chosen by, in words, never a made-up valid number."""
    if not math.isfinite(result.best_score):
        return "no evaluation yet, so no best.pt"
    if result.chosen_by == "train_loss":
        return f"best train loss/token {result.best_score:.4f} (the valid split is empty)"
    return f"best valid NLL/token {result.best_score:.4f}"


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can save and exit cleanly."""

    def __init__(self) -> None:
        self.hit = False
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handler(self, signum, frame) -> None:
        if self.hit:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.hit, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(
    data_folder: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: TrainConfig,
    resume: bool = False,
    on_progress: Callable[[dict], None] | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume) a model on a prepared data folder; writes RUN/{last,best}.pt and metrics.jsonl.

    A run folder that already holds a run is continued (``resume``), replaced (``overwrite``:
    its best.pt, last.pt and metrics.jsonl are deleted before training starts) or refused.
    ``echo`` receives announcements for the user (rank 0 only)."""
    run_dir = Path(run_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    # checked by every rank before any process group exists, so before any rank writes anything
    check_run_folder(run_dir, resume, overwrite)
    device = pick_device(cfg.device)
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():  # joining waits for every rank, so each has checked the folder first
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        else:  # the caller's group: wait until every rank has checked the run folder before any writes
            dist.barrier()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    train_data = TokenData(data_folder, "train")
    valid_data = TokenData(data_folder, "valid")
    if len(train_data) == 0:
        raise MusicRNNError(f"{data_folder}: the train split is empty; prepare more data or change --split")
    codec = train_data.codec
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    valid_n = len(valid_data) if cfg.eval_max_pieces is None else min(cfg.eval_max_pieces, len(valid_data))
    chosen_by = "valid_nll" if valid_n > 0 else "train_loss"  # an empty valid split must never score 0

    def say(text: str) -> None:
        if echo is not None and rank == 0:
            echo(text)

    saved: dict[str, Any] | None = None
    if resume:
        if not last_path.exists():
            raise CheckpointError(f"{last_path}: nothing to resume; run without --resume to start training")
        ck = load_checkpoint(last_path)
        saved = ck.raw
        if ck.codec != codec:
            raise CheckpointError(f"{last_path}: trained with {ck.codec!r}, but {data_folder} was prepared with "
                                  f"{codec!r}; resume with the same data")
        missing = [k for k in ("train_config", "optimizer", "scheduler", "trainer", "rng_torch") if k not in saved]
        if missing or not isinstance(saved["train_config"], dict):
            raise CheckpointError(f"{last_path}: holds no training state ({', '.join(missing) or 'train_config'} "
                                  "missing), so training cannot resume from it; it is a model-only checkpoint")
        known = {f.name for f in fields(TrainConfig)}
        cfg = TrainConfig(**{**asdict(cfg), **{k: v for k, v in saved["train_config"].items() if k in known},
                             "device": cfg.device})
    torch.manual_seed(cfg.seed)
    init_weights = None
    if cfg.init_from and saved is None:
        init = load_checkpoint(cfg.init_from)  # a file, a run folder or a bundled name such as "default"
        if init.codec != codec:
            raise CheckpointError(codec_mismatch(init.path, init.codec, data_folder, codec, "fine-tune it"))
        c = init.model.config  # the checkpoint's architecture wins; dropout is this run's
        cfg = replace(cfg, arch=c.arch, layers=c.layers, hidden=c.hidden, embedding=c.embedding,
                      tie_weights=c.tie_weights, attention=c.attention)
        init_weights = init.model.state_dict()
    model_cfg = ModelConfig(codec.vocab_size, cfg.arch, cfg.layers, cfg.hidden, cfg.embedding, cfg.dropout,
                            cfg.tie_weights, cfg.attention)
    model = MusicRNN(model_cfg)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    model = model.to(device)
    streams = PieceStreams(train_data, cfg, rank, world)
    steps_per_epoch = max(1, int(math.ceil(train_data.num_tokens / world / (cfg.batch_size * cfg.seq_len))))
    total_steps = cfg.max_steps or 0
    if cfg.epochs:
        by_epochs = int(math.ceil(cfg.epochs * steps_per_epoch))
        total_steps = min(total_steps, by_epochs) if total_steps else by_epochs
    if not total_steps and cfg.time_limit:
        total_steps = 2**62  # the time limit ends training
    if not total_steps:
        raise MusicRNNError("give --epochs, --max-steps or --time-limit so training knows when to stop")
    limit_s = cfg.time_limit * 60 if cfg.time_limit else None
    clock = {"offset": 0.0, "start": time.perf_counter()}  # training seconds so far (offset: before a resume)

    def train_seconds() -> float:
        return clock["offset"] + time.perf_counter() - clock["start"]

    def time_progress() -> float:
        return train_seconds() / limit_s if limit_s else 0.0

    eval_every = cfg.eval_every or steps_per_epoch

    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise MusicRNNError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or rmsprop")
    lr_scale = [1.0]  # halved on plateaus (schedule "plateau"); saved for resume
    base_lambda = _lr_lambda(cfg, total_steps, time_progress)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: base_lambda(s) * lr_scale[0])

    step, best, bad_evals = 0, float("inf"), 0
    since_eval_loss, since_eval_n = 0.0, 0  # training loss since the last evaluation (what an empty valid split uses)
    carried = None
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            t = saved["trainer"]
            step, best, bad_evals, lr_scale[0] = int(t["step"]), float(t["best"]), int(t["bad_evals"]), float(t["plateau_scale"])
            clock["offset"] = float(t.get("elapsed", 0.0))
            since_eval_loss, since_eval_n = (float(t["since_eval"][0]), int(t["since_eval"][1])) if "since_eval" in t else (0.0, 0)
            saved_streams = t["streams"] if isinstance(t["streams"], list) else [t["streams"]]
            if len(saved_streams) != world:
                raise CheckpointError(f"{last_path}: saved with {len(saved_streams)} processes, resumed with {world}; resume with the same number")
            streams.load_state_dict(saved_streams[rank])
            torch.set_rng_state(saved["rng_torch"])
            carried = _state_from_saved(saved.get("carried"), device)
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(f"{last_path}: damaged training state ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:160]}); resume from an intact last.pt or start again") from None

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    if cfg.precision not in ("fp32", "bf16", "fp16"):
        raise MusicRNNError(f"unknown precision {cfg.precision!r}; choose fp32, bf16 or fp16")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    net: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:  # temp files of checkpoint writes cut short by a kill (the .pt files themselves are intact)
        for stale in [*run_dir.glob(".last.pt.*.tmp"), *run_dir.glob(".best.pt.*.tmp")]:
            stale.unlink(missing_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    if rank == 0 and overwrite and not resume:  # asked for: the old run goes, so the folder never mixes two runs
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    meta_base = {"data": str(data_folder), "train_config": asdict(cfg), "world_size": world, "device": str(device),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
                 "parameters": model.num_parameters, "command": " ".join(["musicrnn", *sys.argv[1:]]) if sys.argv else "",
                 "torch": str(torch.__version__),
                 # a model of key-normalised data knows one home key: compose picks a key per piece, live play transposes
                 "key_normalised": bool(train_data.manifest.get("key_normalise"))}

    def log(row: dict) -> None:
        if rank == 0:
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        if on_progress:
            on_progress(row)

    def validate() -> float:
        mine = list(range(rank, valid_n, world))
        scorer = TorchStepper(model, device, autocast=amp_dtype if device.type == "cuda" else None)
        r = evaluate_pieces(scorer, [valid_data.piece(i) for i in mine], codec, batch_size=max(8, cfg.batch_size))
        sums = torch.tensor([r["nll_per_token"] * r["tokens"], r["tokens"]], dtype=torch.float64)
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(sums)
        model.train()
        return float(sums[0] / max(sums[1], 1))

    def save(path: Path, kind: str, extra_meta: dict | None = None) -> None:
        """Collective under DDP (every rank's data position is stored); rank 0 writes."""
        streams_state: Any = streams.state_dict()
        if distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, streams_state)
            streams_state = gathered
        if rank != 0:
            return
        save_checkpoint(
            path, model, codec,
            meta={**meta_base, "step": step, "epochs": streams.epochs_done, "kind": kind, "chosen_by": chosen_by,
                  "best_valid_nll": best if chosen_by == "valid_nll" else None,
                  **({"best_train_loss": best} if chosen_by == "train_loss" else {}),
                  **(extra_meta or {})},
            train_config=asdict(cfg),
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            trainer={"step": step, "best": best, "bad_evals": bad_evals, "plateau_scale": lr_scale[0],
                     "streams": streams_state, "elapsed": train_seconds(), "since_eval": [since_eval_loss, since_eval_n]},
            rng_torch=torch.get_rng_state(),
            carried=_state_to_saved(carried),
        )

    def mean_train_loss(total: float, count: int) -> float:
        """The training loss since the previous evaluation, averaged over every rank (all must agree)."""
        sums = torch.tensor([total, count], dtype=torch.float64)
        if distributed:
            import torch.distributed as dist

            dist.all_reduce(sums)
        return float(sums[0] / max(sums[1], 1))

    say(f"device: {device}{f' x {world} processes' if world > 1 else ''} ({meta_base['device_name']}); "
        f"model: {cfg.arch} {cfg.layers}x{cfg.hidden}, {model.num_parameters:,} parameters")
    say(f"data: {data_folder}: train {len(train_data):,} pieces, {train_data.num_tokens:,} tokens; valid {len(valid_data):,} "
        f"pieces, {valid_data.num_tokens:,} tokens; {steps_per_epoch:,} steps per epoch ({cfg.batch_size} x {cfg.seq_len} tokens)")
    ends = [f"{total_steps:,} steps" if total_steps < 2**62 else "", f"{cfg.time_limit:g} min" if limit_s else ""]
    say(f"{'resuming at step ' + format(step, ',') + '; ' if step else ''}stops after {' or '.join(e for e in ends if e)}"
        f"{f'; evaluates every {eval_every:,} steps' if eval_every < total_steps else ''}")
    if chosen_by == "train_loss":
        say(f"{data_folder}: the valid split is empty: best.pt is chosen by training loss (no valid NLL is reported); "
            "prepare the data with a non-zero valid fraction (--split) to measure it")
    model.train()
    stopped = "done"
    window_tokens, window_loss, window_n = 0, 0.0, 0
    compute_time, window_start = 0.0, time.perf_counter()
    start_time = time.perf_counter()
    clock["start"] = start_time
    start_step = step

    def timing() -> dict[str, float | None]:
        """Training seconds so far and an estimate of those left (the time limit or the step rate)."""
        rate = (time.perf_counter() - start_time) / max(1, step - start_step)
        left = [limit_s - train_seconds()] if limit_s else []
        left += [(total_steps - step) * rate] if total_steps < 2**62 else []
        return {"elapsed_s": round(train_seconds(), 3), "remaining_s": round(max(0.0, min(left)), 3) if left else None}
    with _Interrupt() as interrupt:
        while step < total_steps:
            if interrupt.hit:
                stopped = "interrupted"
                break
            inputs, targets, fresh = streams.next_batch()
            t0 = time.perf_counter()
            inp, tgt = torch.from_numpy(inputs), torch.from_numpy(targets)
            if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
                inp, tgt = inp.pin_memory(), tgt.pin_memory()
            inp, tgt = inp.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
            keep = torch.from_numpy(~fresh).to(device)
            carried = model.reset_state_rows(carried, keep)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                nll, carried = token_nll(net, inp, tgt, carried)  # type: ignore[arg-type]
                n_tok = (tgt >= 0).sum()
                loss = nll.sum() / n_tok.clamp(min=1)
            carried = MusicRNN.detach_state(carried)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            compute_time += time.perf_counter() - t0
            window_tokens += int(n_tok) * world
            window_loss += float(loss.detach())
            window_n += 1
            since_eval_loss += float(loss.detach())
            since_eval_n += 1

            elapsed = time.perf_counter() - window_start
            if step % cfg.log_every == 0 or step == total_steps or elapsed >= LOG_MAX_SECONDS:
                row = {"step": step, "total_steps": total_steps if total_steps < 2**62 else None, "epoch": round(streams.epochs_done, 4),
                       "train_loss": window_loss / window_n,
                       "lr": opt.param_groups[0]["lr"], "tokens_per_s": window_tokens / max(elapsed, 1e-9),
                       "compute_share": compute_time / max(elapsed, 1e-9), "time": time.perf_counter() - start_time,
                       **timing()}
                log(row)
                window_tokens, window_loss, window_n, compute_time = 0, 0.0, 0, 0.0
                window_start = time.perf_counter()

            out_of_time = limit_s is not None and _agree(train_seconds() >= limit_s, distributed, device)
            if step % eval_every == 0 or step == total_steps or out_of_time:
                v = validate() if chosen_by == "valid_nll" else mean_train_loss(since_eval_loss, since_eval_n)
                since_eval_loss, since_eval_n = 0.0, 0
                improved = v < best - 1e-6
                if improved:
                    best, bad_evals = v, 0
                    save(best_path, "best", {chosen_by: v})
                else:
                    bad_evals += 1
                    if cfg.schedule == "plateau":
                        lr_scale[0] *= 0.5
                        for g in opt.param_groups:  # apply the new scale now, not at the next step
                            g["lr"] = g["initial_lr"] * base_lambda(sched.last_epoch) * lr_scale[0]
                if chosen_by == "valid_nll":
                    log({"step": step, "epoch": round(streams.epochs_done, 4), "valid_nll": v, "best_valid_nll": best,
                         "time": time.perf_counter() - start_time, **timing()})
                else:  # no valid number at all, rather than a made-up one
                    log({"step": step, "epoch": round(streams.epochs_done, 4), "valid_nll": None, "chosen_by": "train_loss",
                         "train_loss_since_eval": v, "best_train_loss": best, "time": time.perf_counter() - start_time,
                         **timing()})
                save(last_path, "last")
                if cfg.patience and bad_evals >= cfg.patience:
                    stopped = "early-stopped"
                    break
                if out_of_time:
                    stopped = "time-limit"
                    break
                window_start = time.perf_counter()
                compute_time = 0.0
                window_tokens, window_loss, window_n = 0, 0.0, 0
    if stopped == "interrupted":
        save(last_path, "last")
        signum = int(interrupt.signum)
    else:
        signum = 0
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return TrainResult(run_dir, step, best if chosen_by == "valid_nll" else None, stopped, model, chosen_by, best, signum)


def _agree(flag: bool, distributed: bool, device: torch.device | None = None) -> bool:
    """Under DDP every rank must stop at the same step: true if any rank says so."""
    if not distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _state_to_saved(state):
    if state is None:
        return None
    rnn_state, history = state
    if isinstance(rnn_state, tuple):
        rnn = {"h": rnn_state[0].detach().cpu(), "c": rnn_state[1].detach().cpu()}
    else:
        rnn = {"h": rnn_state.detach().cpu()}
    if history is not None:
        rnn["history"] = history.detach().cpu()
    return rnn


def _state_from_saved(saved, device):
    if not saved:
        return None
    rnn = (saved["h"].to(device), saved["c"].to(device)) if "c" in saved else saved["h"].to(device)
    history = saved["history"].to(device) if "history" in saved else None
    return rnn, history
