"""Training: one loop for one CPU, one GPU, or many GPUs/nodes under torchrun (DDP).

Data are read as piece streams (:mod:`musicrnn.train_streams`): the RNN state is carried from
one step to the next within a piece and reset to zero where a new piece starts, so training sees
exactly what evaluation and generation see: a piece that starts from BOS and a fresh state.

``RUN/last.pt`` holds everything needed to continue exactly (model, optimizer, scheduler, step,
RNG streams, data position, carried RNN state); ``RUN/best.pt`` the best model on valid NLL (or,
when the valid split is empty, on the mean training loss since the previous evaluation: an
announced fallback; no valid number is then reported).

:func:`train` reads as its steps: join the processes (:func:`_join_processes`), open the data
(:class:`RunData`), take up a run to resume (:func:`_resume_state`), build the network
(:func:`_build_model`, ``--init-from``), then :class:`_Run` sets up the optimizer and schedule
and runs the loop (:meth:`_Run.step`, :meth:`_Run.progress`, :meth:`_Run.evaluate`,
:meth:`_Run.save`). What the user sees of it: :mod:`musicrnn.train_progress`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.config import TrainConfig
from musicrnn.errors import CheckpointError, MusicRNNError
from musicrnn.evaluate import codec_mismatch
from musicrnn.inference import pick_device
from musicrnn.model import MusicRNN
from musicrnn.train_run import RUN_FILES, Processes, Run, RunData, TrainResult

__all__ = ["TrainConfig", "TrainResult", "check_run_folder", "train"]


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


def _join_processes(run_dir: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> Processes:
    """This process's rank and device; under torchrun, the process group (joined only after every
    rank has checked the run folder, so none writes into a folder another refuses)."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    check_run_folder(run_dir, resume, overwrite)
    procs = Processes(world, rank, pick_device(cfg.device))
    if procs.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():  # joining waits for every rank, so each has checked the folder first
            dist.init_process_group("nccl" if procs.device.type == "cuda" else "gloo")
        else:  # the caller's group: wait until every rank has checked the run folder before any writes
            dist.barrier()
    if procs.device.type == "cuda":
        torch.cuda.set_device(procs.device)
        torch.backends.cudnn.benchmark = True
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return procs


def _resume_state(last_path: Path, cfg: TrainConfig, data: RunData) -> tuple[dict[str, Any], TrainConfig]:
    """What ``last.pt`` holds to continue a run, and the run's config as saved there (nested or
    flat, see :meth:`TrainConfig.from_dict`); the device is this run's."""
    if not last_path.exists():
        raise CheckpointError(f"{last_path}: nothing to resume; run without --resume to start training")
    ck = load_checkpoint(last_path)
    saved = ck.raw
    if ck.codec != data.codec:
        raise CheckpointError(f"{last_path}: trained with {ck.codec!r}, but {data.folder} was prepared with "
                              f"{data.codec!r}; resume with the same data")
    missing = [k for k in ("train_config", "optimizer", "scheduler", "trainer", "rng_torch") if k not in saved]
    if missing or not isinstance(saved["train_config"], dict):
        raise CheckpointError(f"{last_path}: holds no training state ({', '.join(missing) or 'train_config'} "
                              "missing), so training cannot resume from it; it is a model-only checkpoint")
    return saved, replace(TrainConfig.from_dict(saved["train_config"], base=cfg), device=cfg.device)


def _build_model(cfg: TrainConfig, data: RunData, fresh: bool) -> tuple[MusicRNN, TrainConfig]:
    """The network to train and the config it was built from: the data's vocabulary; with
    ``init_from`` (a fresh run only) that checkpoint's architecture and weights, this run's dropout."""
    init_weights = None
    model_cfg = replace(cfg.model, vocab_size=data.codec.vocab_size)
    if cfg.init_from and fresh:
        init = load_checkpoint(cfg.init_from)  # a file, a run folder or a bundled name such as "default"
        if init.codec != data.codec:
            raise CheckpointError(codec_mismatch(init.path, init.codec, data.folder, data.codec, "fine-tune it"))
        model_cfg = replace(init.model.config, dropout=cfg.model.dropout)
        init_weights = init.model.state_dict()
    cfg = replace(cfg, model=model_cfg)
    model = MusicRNN(model_cfg)
    if init_weights is not None:
        model.load_state_dict(init_weights)
    return model, cfg


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
    procs = _join_processes(run_dir, cfg, resume, overwrite)  # checked by every rank before any writes
    data = RunData.open(data_folder, cfg)
    saved = None
    if resume:
        saved, cfg = _resume_state(run_dir / "last.pt", cfg, data)
    torch.manual_seed(cfg.seed)
    model, cfg = _build_model(cfg, data, fresh=saved is None)
    run = Run(data, run_dir, cfg, procs, model, saved, on_progress, echo)
    run.prepare_folder(replace_old=overwrite and not resume)
    run.announce()
    return run.loop()


