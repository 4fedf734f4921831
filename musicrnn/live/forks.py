"""The engine's view of the music and its forks: what :class:`~musicrnn.live.engine.Engine`
(and the accompany engine) step, copy, and adopt or drop (the engine's docstring tells the
story). Apart so that engine.py keeps to its job: when to step what.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from musicrnn.codecs import NoteEvent
from musicrnn.inference import Stepper
from musicrnn.sample import Constraints


def _fork(obj: Any) -> Any:
    """A copy that shares nothing mutable with ``obj`` (for encoders and decoders)."""
    new = copy.copy(obj)
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            setattr(new, key, value.clone())
        elif isinstance(value, (set, dict, list, np.ndarray)):
            setattr(new, key, copy.copy(value))
    return new


class _Stream:
    """The model's view of the music so far: its stepper (one row of model state), next-token
    logits [1, vocab], constraints, decoder."""

    __slots__ = ("stepper", "logits", "cons", "decoder")

    def __init__(self, stepper: Stepper, logits, cons: Constraints, decoder) -> None:
        self.stepper, self.logits, self.cons, self.decoder = stepper, logits, cons, decoder

    def fork(self) -> _Stream:
        return _Stream(self.stepper.fork(), self.logits, self.cons.fork(), _fork(self.decoder))  # logits are never changed in place


@dataclass
class _Spec:
    """Tokens stepped ahead on a fork, waiting to be confirmed by the real stream. ``pending``:
    the last token is heard (constraints, decoder) but not yet stepped by the model, which is
    done once the fork is adopted (an event codec's note-on: its note goes out first)."""

    tokens: list[int]
    stream: _Stream
    events: list[NoteEvent] = field(default_factory=list)
    pending: bool = False


@dataclass
class _Proposal:
    """Event codecs (performance): the model's next event (a note, or time passing), not yet played."""

    spec: _Spec
    base: float  # codec time the fork was advanced to before sampling
    time: float  # when the event happens (for time passing: when the wait ends)
    kind: int
    pitch: int = -1
    velocity: int = 0
    force_note: bool = False
