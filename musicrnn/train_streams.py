"""Training data as *piece streams*: each of the ``batch_size`` rows plays whole pieces one after
another, ``seq_len`` tokens per step (truncated backprop through time); the training loop resets a
row's RNN state where a new piece starts. Augmentation (random transposition, time stretch where
the codec can stretch) is drawn per piece. Resumable exactly (:meth:`PieceStreams.state_dict`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from musicrnn.config import TrainConfig
from musicrnn.corpus import TokenData


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
