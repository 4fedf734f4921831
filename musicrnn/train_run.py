"""One training run's moving parts and its loop: the optimizer and learning-rate schedule, the
piece streams, counters and carried RNN state (:class:`Run`), one optimizer step, progress rows,
evaluation (best.pt) and checkpoints that continue exactly (last.pt); the processes under DDP
agree on when to stop. :func:`musicrnn.train.train` sets a run up and calls :meth:`Run.loop`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from musicrnn.checkpoint import save_checkpoint
from musicrnn.config import OPTIMIZERS, TRAIN_PRECISIONS, TrainConfig
from musicrnn.corpus import TokenData
from musicrnn.errors import CheckpointError, MusicRNNError
from musicrnn.evaluate import evaluate_pieces
from musicrnn.inference import TorchStepper
from musicrnn.model import MusicRNN, token_nll
from musicrnn.train_streams import PieceStreams

RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl")
LOG_MAX_SECONDS = 30.0  # a progress row at least this often, however slow the steps (logs of long runs)
FOREVER = 2**62  # total steps of a run that only its time limit ends


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


@dataclass
class Processes:
    """Where this process trains: its rank among ``world`` processes (DDP under torchrun) and device."""

    world: int
    rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1


@dataclass
class RunData:
    """The data folder's train and valid splits, and what is evaluated of them."""

    folder: str | os.PathLike
    train: TokenData
    valid: TokenData
    valid_n: int  # valid pieces scored per evaluation
    chosen_by: str  # what best.pt is chosen by: valid NLL, or (an empty valid split) the training loss

    @classmethod
    def open(cls, folder: str | os.PathLike, cfg: TrainConfig) -> RunData:
        train_data, valid_data = TokenData(folder, "train"), TokenData(folder, "valid")
        if len(train_data) == 0:
            raise MusicRNNError(f"{folder}: the train split is empty; prepare more data or change --split")
        valid_n = len(valid_data) if cfg.eval_max_pieces is None else min(cfg.eval_max_pieces, len(valid_data))
        chosen_by = "valid_nll" if valid_n > 0 else "train_loss"  # an empty valid split must never score 0
        return cls(folder, train_data, valid_data, valid_n, chosen_by)

    @property
    def codec(self):
        return self.train.codec


def _lr_lambda(cfg: TrainConfig, total_steps: int, time_progress: Callable[[], float] = lambda: 0.0) -> Callable[[int], float]:
    """Warm-up, then cosine decay by whichever runs out first: steps or (with a time limit) minutes."""

    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.schedule != "cosine" or total_steps <= 0:
            return warm
        progress = min(1.0, max(step / max(1, total_steps), time_progress()))
        return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return f


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


def _total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Steps until the run ends: --max-steps or --epochs, whichever comes first; "forever" when
    only --time-limit ends it."""
    total = cfg.max_steps or 0
    if cfg.epochs:
        by_epochs = int(math.ceil(cfg.epochs * steps_per_epoch))
        total = min(total, by_epochs) if total else by_epochs
    if not total and cfg.time_limit:
        total = FOREVER
    if not total:
        raise MusicRNNError("give --epochs, --max-steps or --time-limit so training knows when to stop")
    return total


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise MusicRNNError(f"unknown optimizer {cfg.optimizer!r}; choose {' or '.join(OPTIMIZERS)}")


def _autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in TRAIN_PRECISIONS:
        raise MusicRNNError(f"unknown precision {precision!r}; choose {', '.join(TRAIN_PRECISIONS)}")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@dataclass
class _Window:
    """Training rows since the last progress row (averaged into the next one)."""

    start: float = field(default_factory=time.perf_counter)
    tokens: int = 0
    loss: float = 0.0
    steps: int = 0
    compute: float = 0.0  # seconds spent in steps (the rest: data, logging, evaluation)


class Run:
    """One training run: model, optimizer, schedule, data streams and counters, and the steps of
    its loop (:meth:`step`, :meth:`progress`, :meth:`evaluate`, :meth:`save`)."""

    def __init__(self, data: RunData, run_dir: Path, cfg: TrainConfig, procs: Processes, model: MusicRNN,
                 saved: dict[str, Any] | None, on_progress: Callable[[dict], None] | None,
                 echo: Callable[[str], None] | None) -> None:
        self.data, self.run_dir, self.cfg, self.procs, self.on_progress, self.echo = data, run_dir, cfg, procs, on_progress, echo
        self.last_path, self.best_path = run_dir / "last.pt", run_dir / "best.pt"
        self.model = model.to(procs.device)
        self.streams = PieceStreams(data.train, cfg, procs.rank, procs.world)
        self.steps_per_epoch = max(1, int(math.ceil(data.train.num_tokens / procs.world / (cfg.batch_size * cfg.seq_len))))
        self.total_steps = _total_steps(cfg, self.steps_per_epoch)
        self.limit_s = cfg.time_limit * 60 if cfg.time_limit else None
        self.clock_offset, self.clock_start = 0.0, time.perf_counter()  # training seconds before a resume; since
        self.eval_every = cfg.eval_every or self.steps_per_epoch
        self.opt = _optimizer(cfg, self.model)
        self.lr_scale = 1.0  # halved on plateaus (schedule "plateau"); saved for resume
        self.base_lambda = _lr_lambda(cfg, self.total_steps, self.time_progress)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: self.base_lambda(s) * self.lr_scale)
        self.step_no, self.best, self.bad_evals = 0, float("inf"), 0
        self.since_eval_loss, self.since_eval_n = 0.0, 0  # training loss since the last evaluation (an empty valid split's measure)
        self.carried = None  # the RNN state carried from one step to the next
        if saved is not None:
            self._restore(saved)
        self.amp_dtype = _autocast_dtype(cfg.precision)
        self.scaler = torch.amp.GradScaler(procs.device.type, enabled=cfg.precision == "fp16" and procs.device.type == "cuda")
        self.net: nn.Module = self.model
        if procs.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(self.model, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.meta_base = self._meta()

    # --- time ------------------------------------------------------------------------------------
    def train_seconds(self) -> float:
        return self.clock_offset + time.perf_counter() - self.clock_start

    def time_progress(self) -> float:
        return self.train_seconds() / self.limit_s if self.limit_s else 0.0

    def timing(self) -> dict[str, float | None]:
        """Training seconds so far and an estimate of those left (the time limit or the step rate)."""
        rate = (time.perf_counter() - self.start_time) / max(1, self.step_no - self.start_step)
        left = [self.limit_s - self.train_seconds()] if self.limit_s else []
        left += [(self.total_steps - self.step_no) * rate] if self.total_steps < FOREVER else []
        return {"elapsed_s": round(self.train_seconds(), 3), "remaining_s": round(max(0.0, min(left)), 3) if left else None}

    # --- set-up ----------------------------------------------------------------------------------
    def _restore(self, saved: dict[str, Any]) -> None:
        """Continue exactly where ``last.pt`` stopped: weights, optimizer, schedule, counters, data
        position, RNG and the carried RNN state."""
        world, rank = self.procs.world, self.procs.rank
        try:
            self.model.load_state_dict(saved["model"])
            self.opt.load_state_dict(saved["optimizer"])
            self.sched.load_state_dict(saved["scheduler"])
            t = saved["trainer"]
            self.step_no, self.best, self.bad_evals = int(t["step"]), float(t["best"]), int(t["bad_evals"])
            self.lr_scale = float(t["plateau_scale"])
            self.clock_offset = float(t.get("elapsed", 0.0))
            self.since_eval_loss, self.since_eval_n = (float(t["since_eval"][0]), int(t["since_eval"][1])) if "since_eval" in t else (0.0, 0)
            saved_streams = t["streams"] if isinstance(t["streams"], list) else [t["streams"]]
            if len(saved_streams) != world:
                raise CheckpointError(f"{self.last_path}: saved with {len(saved_streams)} processes, resumed with {world}; resume with the same number")
            self.streams.load_state_dict(saved_streams[rank])
            torch.set_rng_state(saved["rng_torch"])
            self.carried = MusicRNN.state_from_dict(saved.get("carried"), self.procs.device)
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.last_path}: damaged training state ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:160]}); resume from an intact last.pt or start again") from None

    def _meta(self) -> dict[str, Any]:
        device = self.procs.device
        return {"data": str(self.data.folder), "train_config": self.cfg.to_dict(), "world_size": self.procs.world,
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
                "parameters": self.model.num_parameters, "command": " ".join(["musicrnn", *sys.argv[1:]]) if sys.argv else "",
                "torch": str(torch.__version__),
                # a model of key-normalised data knows one home key: compose picks a key per piece, live play transposes
                "key_normalised": bool(self.data.train.manifest.get("key_normalise")),
                **_roles_meta(self.data.train.manifest)}

    def prepare_folder(self, replace_old: bool) -> None:
        """The run folder, without temp files of checkpoint writes cut short by a kill (the .pt
        files themselves are intact); with ``replace_old`` the old run's files go, so the folder
        never mixes two runs."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.procs.rank != 0:
            return
        for stale in [*self.run_dir.glob(".last.pt.*.tmp"), *self.run_dir.glob(".best.pt.*.tmp")]:
            stale.unlink(missing_ok=True)
        if replace_old:
            for name in RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)

    def say(self, text: str) -> None:
        if self.echo is not None and self.procs.rank == 0:
            self.echo(text)

    def announce(self) -> None:
        cfg, data, m = self.cfg, self.data, self.cfg.model
        world = self.procs.world
        self.say(f"device: {self.procs.device}{f' x {world} processes' if world > 1 else ''} ({self.meta_base['device_name']}); "
                 f"model: {m.arch} {m.layers}x{m.hidden}, {self.model.num_parameters:,} parameters")
        self.say(f"data: {data.folder}: train {len(data.train):,} pieces, {data.train.num_tokens:,} tokens; valid "
                 f"{len(data.valid):,} pieces, {data.valid.num_tokens:,} tokens; {self.steps_per_epoch:,} steps per epoch "
                 f"({cfg.batch_size} x {cfg.seq_len} tokens)")
        ends = [f"{self.total_steps:,} steps" if self.total_steps < FOREVER else "", f"{cfg.time_limit:g} min" if self.limit_s else ""]
        self.say(f"{'resuming at step ' + format(self.step_no, ',') + '; ' if self.step_no else ''}stops after "
                 f"{' or '.join(e for e in ends if e)}"
                 f"{f'; evaluates every {self.eval_every:,} steps' if self.eval_every < self.total_steps else ''}")
        if data.chosen_by == "train_loss":
            self.say(f"{data.folder}: the valid split is empty: best.pt is chosen by training loss (no valid NLL is "
                     "reported); prepare the data with a non-zero valid fraction (--split) to measure it")

    # --- the loop's steps ------------------------------------------------------------------------
    def log(self, row: dict) -> None:
        if self.procs.rank == 0:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        if self.on_progress:
            self.on_progress(row)

    def step(self) -> tuple[float, int, float]:
        """One optimizer step on the next batch of the piece streams: (loss, target tokens, seconds
        of compute: the step without reading the batch)."""
        device = self.procs.device
        inputs, targets, fresh = self.streams.next_batch()
        t0 = time.perf_counter()
        inp, tgt = torch.from_numpy(inputs), torch.from_numpy(targets)
        if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
            inp, tgt = inp.pin_memory(), tgt.pin_memory()
        inp, tgt = inp.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
        keep = torch.from_numpy(~fresh).to(device)
        carried = self.model.reset_state_rows(self.carried, keep)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            nll, carried = token_nll(self.net, inp, tgt, carried)  # type: ignore[arg-type]
            n_tok = (tgt >= 0).sum()
            loss = nll.sum() / n_tok.clamp(min=1)
        self.carried = MusicRNN.detach_state(carried)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.step_no += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        value = float(loss.detach())
        self.since_eval_loss += value
        self.since_eval_n += 1
        return value, int(n_tok), seconds

    def progress(self, window: _Window) -> None:
        """A progress row of the training since ``window`` started."""
        elapsed = time.perf_counter() - window.start
        self.log({"step": self.step_no, "total_steps": self.total_steps if self.total_steps < FOREVER else None,
                  "epoch": round(self.streams.epochs_done, 4), "train_loss": window.loss / window.steps,
                  "lr": self.opt.param_groups[0]["lr"], "tokens_per_s": window.tokens / max(elapsed, 1e-9),
                  "compute_share": window.compute / max(elapsed, 1e-9), "time": time.perf_counter() - self.start_time,
                  **self.timing()})

    def validate(self) -> float:
        """Valid NLL per token over every rank's share of the valid pieces."""
        procs, data = self.procs, self.data
        mine = list(range(procs.rank, data.valid_n, procs.world))
        scorer = TorchStepper(self.model, procs.device, autocast=self.amp_dtype if procs.device.type == "cuda" else None)
        r = evaluate_pieces(scorer, [data.valid.piece(i) for i in mine], data.codec, batch_size=max(8, self.cfg.batch_size))
        self.model.train()
        return _mean_over_ranks(r["nll_per_token"] * r["tokens"], r["tokens"], procs.distributed)

    def evaluate(self) -> None:
        """Score the model (valid NLL, or the training loss since the last evaluation), keep the best
        in best.pt, adjust a plateau schedule, log, save last.pt."""
        data = self.data
        if data.chosen_by == "valid_nll":
            v = self.validate()
        else:
            v = _mean_over_ranks(self.since_eval_loss, self.since_eval_n, self.procs.distributed)
        self.since_eval_loss, self.since_eval_n = 0.0, 0
        if v < self.best - 1e-6:
            self.best, self.bad_evals = v, 0
            self.save(self.best_path, "best", {data.chosen_by: v})
        else:
            self.bad_evals += 1
            if self.cfg.schedule == "plateau":
                self.lr_scale *= 0.5
                for g in self.opt.param_groups:  # apply the new scale now, not at the next step
                    g["lr"] = g["initial_lr"] * self.base_lambda(self.sched.last_epoch) * self.lr_scale
        row = {"step": self.step_no, "epoch": round(self.streams.epochs_done, 4)}
        if data.chosen_by == "valid_nll":
            self.log({**row, "valid_nll": v, "best_valid_nll": self.best, "time": time.perf_counter() - self.start_time,
                      **self.timing()})
        else:  # no valid number at all, rather than a made-up one
            self.log({**row, "valid_nll": None, "chosen_by": "train_loss", "train_loss_since_eval": v,
                      "best_train_loss": self.best, "time": time.perf_counter() - self.start_time, **self.timing()})
        self.save(self.last_path, "last")

    def save(self, path: Path, kind: str, extra_meta: dict | None = None) -> None:
        """Collective under DDP (every rank's data position is stored); rank 0 writes."""
        streams_state: Any = self.streams.state_dict()
        if self.procs.distributed:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.procs.world
            dist.all_gather_object(gathered, streams_state)
            streams_state = gathered
        if self.procs.rank != 0:
            return
        chosen_by, best = self.data.chosen_by, self.best
        save_checkpoint(
            path, self.model, self.data.codec,
            meta={**self.meta_base, "step": self.step_no, "epochs": self.streams.epochs_done, "kind": kind,
                  "chosen_by": chosen_by, "best_valid_nll": best if chosen_by == "valid_nll" else None,
                  **({"best_train_loss": best} if chosen_by == "train_loss" else {}),
                  **(extra_meta or {})},
            train_config=self.cfg.to_dict(),
            optimizer=self.opt.state_dict(),
            scheduler=self.sched.state_dict(),
            trainer={"step": self.step_no, "best": best, "bad_evals": self.bad_evals, "plateau_scale": self.lr_scale,
                     "streams": streams_state, "elapsed": self.train_seconds(),
                     "since_eval": [self.since_eval_loss, self.since_eval_n]},
            rng_torch=torch.get_rng_state(),
            carried=MusicRNN.state_to_dict(self.carried),
        )

    # --- the loop ----------------------------------------------------------------------------------
    def loop(self) -> TrainResult:
        """Train until the steps, the epochs or the time run out, patience ends it, or a signal
        stops it (then last.pt is saved); every process stops at the same step."""
        cfg, distributed = self.cfg, self.procs.distributed
        self.model.train()
        stopped = "done"
        self.start_time = time.perf_counter()
        self.clock_start = self.start_time
        self.start_step = self.step_no
        window = _Window()
        with _Interrupt() as interrupt:
            while self.step_no < self.total_steps:
                if interrupt.hit:
                    stopped = "interrupted"
                    break
                loss, n_tok, seconds = self.step()
                window.compute += seconds
                window.tokens += n_tok * self.procs.world
                window.loss += loss
                window.steps += 1
                if (self.step_no % cfg.log_every == 0 or self.step_no == self.total_steps
                        or time.perf_counter() - window.start >= LOG_MAX_SECONDS):
                    self.progress(window)
                    window = _Window()
                out_of_time = self.limit_s is not None and _agree(self.train_seconds() >= self.limit_s, distributed,
                                                                  self.procs.device)
                if self.step_no % self.eval_every == 0 or self.step_no == self.total_steps or out_of_time:
                    self.evaluate()
                    if cfg.patience and self.bad_evals >= cfg.patience:
                        stopped = "early-stopped"
                        break
                    if out_of_time:
                        stopped = "time-limit"
                        break
                    window = _Window()
        signum = 0
        if stopped == "interrupted":
            self.save(self.last_path, "last")
            signum = int(interrupt.signum)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
        chosen_by = self.data.chosen_by
        return TrainResult(self.run_dir, self.step_no, self.best if chosen_by == "valid_nll" else None, stopped, self.model,
                           chosen_by, self.best, signum)


def _agree(flag: bool, distributed: bool, device: torch.device | None = None) -> bool:
    """Under DDP every rank must stop at the same step: true if any rank says so."""
    if not distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _mean_over_ranks(total: float, count: int, distributed: bool) -> float:
    """``total / count`` summed over every rank (all must agree on the measure)."""
    sums = torch.tensor([total, count], dtype=torch.float64)
    if distributed:
        import torch.distributed as dist

        dist.all_reduce(sums)
    return float(sums[0] / max(sums[1], 1))


def _roles_meta(manifest: dict) -> dict[str, Any]:
    """``{"roles": {role: track names}}`` for data prepared with ``--roles`` (compose reads the
    melody's track names from it), else nothing (other checkpoints' meta stays as it was)."""
    roles = ((manifest.get("tracks") or {}).get("choice") or {}).get("roles")
    return {"roles": roles} if roles else {}
