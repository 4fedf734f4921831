"""What training tells the user: progress rows as plain lines for logs (:class:`PlainProgress`),
times as text, and what ``best.pt`` was chosen by (:func:`result_summary`). The rows themselves
are made by :func:`musicrnn.train.train` (also written to ``metrics.jsonl``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from musicrnn.train_run import TrainResult


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
    ``every`` seconds (train() sends one at least every :data:`musicrnn.train.LOG_MAX_SECONDS`)."""

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
