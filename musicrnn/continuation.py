"""How new music follows what it continues (``compose --primer``): the primer is heard by a
:class:`~musicrnn.listening.Listener` (the same rules as live play), the model hears it moved into
its home key and register, samples with the followers' nudges, and its notes are moved back with
the primer's dynamics and on its grid (straight, swung or triplet: a model that picks its own
times is nudged onto it, a straight-grid model's off-beat eighths are delayed to its swing). A
home-key model (trained on key-normalised data) gets a key per piece."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from musicrnn.codecs import Codec
from musicrnn.errors import MusicRNNError
from musicrnn.listening import Follow, Listener, fold_into
from musicrnn.logit_bias import GridBias, NoteBias
from musicrnn.notes import Piece
from musicrnn.sample import SamplingConfig

RowBias = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]  # (pitch sums, counts) per row -> [B, vocab]
TimeLogits = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (codec steps per row so far, logits [B, vocab]) -> logits


def listen(piece: Piece | None, follow: Follow, key_tonic: int | None) -> Listener:
    """The listener that heard the primer (or nothing): the same rules as live play."""
    listener = Listener(follow=follow, fixed_tonic=key_tonic)
    if piece is not None:
        notes = np.sort(piece.pitched(), order="start")
        for n in notes:
            listener.note_on(float(n["start"]), int(n["pitch"]), int(n["velocity"]))
        for n in np.sort(notes, order="end"):
            listener.note_off(float(n["end"]), int(n["pitch"]))
        listener.update_key()
    return listener


def moved(piece: Piece, semitones: int) -> Piece:
    """``piece`` with its pitched notes moved by ``semitones`` (drums stay)."""
    if not semitones:
        return piece
    notes = piece.notes.copy()
    pitched = ~notes["is_drum"]
    notes["pitch"][pitched] = notes["pitch"][pitched] + semitones
    return Piece(notes, piece.tempos, piece.time_signatures, source=piece.source)


def playable(transpose: int, lo: int, hi: int, codec: Codec) -> int:
    """The shift nearest ``transpose`` (by whole octaves) that keeps notes ``lo``-``hi``, moved
    by it, in the model's range (0 if none does)."""
    fits = [t for t in range(transpose - 120, transpose + 121, 12)
            if codec.min_pitch <= lo - t and hi - t <= codec.max_pitch]
    return min(fits, key=lambda t: abs(t - transpose)) if fits else 0


def register_bias(listener: Listener, note_bias: NoteBias, transpose: int) -> RowBias:
    """Each row's register tilt from the notes it has played (model pitches; they sound moved by
    ``transpose``), as live play tilts an answer (see Listener.register_tilt)."""

    def row_bias(pitch_sums: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
        tilts = listener.register_tilts(transpose, pitch_sums + transpose * counts, counts)
        if tilts is None:
            return None
        return (tilts[:, None] * note_bias.octaves[None, :]).astype(np.float32)

    return row_bias


def grid_logits(listener: Listener, codec: Codec, cut_units: float, cut: float, bpm: float) -> TimeLogits | None:
    """Each row's grid follower nudge from where in the beat it is (codecs with time shifts), as
    live play nudges an answer (see GridBias); None when no grid is followed. The new music's
    codec time ``cut_units`` is the primer's beat ``cut``."""
    strength = listener.grid_strength()
    grid = listener.grid
    if strength <= 0 or grid is None or codec.has_frames:
        return None
    nats = GridBias(codec)
    if not len(nats.shifts):
        return None
    per_unit = codec.beats_per_unit(bpm)
    per_step = per_unit / codec.steps_per_unit

    def rows(steps: np.ndarray, logits: np.ndarray) -> np.ndarray:
        beats = cut + (np.asarray(steps, np.float64) / codec.steps_per_unit - cut_units) * per_unit
        return nats.logits(logits, np.stack([nats(grid, strength, float(b), per_step) for b in beats]))

    return rows


def piece_keys(seed: int, n: int) -> list[int]:
    """A tonic per piece, drawn from ``(seed, piece)`` like the piece's notes (same seed, same keys)."""
    return [int(np.random.default_rng([seed, i, 12]).integers(12)) for i in range(n)]


def model_pitches(cfg: SamplingConfig, transpose: int, codec: Codec) -> SamplingConfig:
    """The user's key and range (output pitches) as the model sees them (moved by ``-transpose``)."""
    if not transpose:
        return cfg
    key = None if cfg.key is None else frozenset((p - transpose) % 12 for p in cfg.key)
    rng = None
    if cfg.pitch_range is not None:
        rng = (max(codec.min_pitch, cfg.pitch_range[0] - transpose), min(codec.max_pitch, cfg.pitch_range[1] - transpose))
        if rng[0] > rng[1]:
            raise MusicRNNError(f"--pitch-range {cfg.pitch_range[0]}-{cfg.pitch_range[1]} lies outside what the model "
                                f"plays in this key and register; widen it, or give --follow none")
    moved = replace(cfg, key=key, pitch_range=rng)
    moved.validate(codec)
    return moved


def followed(notes: np.ndarray, transpose: int, listener: Listener | None, beat_shift: float,
              pitch_span: tuple[int, int] = (0, 127), swing: bool = False) -> np.ndarray:
    """New notes in output pitches (moved by ``transpose``) with the velocities the listener
    gives them (the primer's level and contour, by the velocity follower's strength); ``swing``
    (a straight-grid model): their times warped onto the primer's grid (off-beat eighths late,
    see Listener.warp). ``beat_shift``: the notes' beats -> the primer's beats."""
    notes = np.sort(notes, order="start")
    notes["pitch"] = fold_into(notes["pitch"].astype(np.int64) + transpose, *pitch_span)
    if listener is not None and swing and listener.grid_strength() > 0:
        for name in ("start", "end"):
            notes[name] = listener.warp(notes[name] + beat_shift) - beat_shift
    if listener is not None:
        for n in notes:
            v = int(n["velocity"])
            listener.answered(int(n["pitch"]) - transpose, int(n["pitch"]), v)
            n["velocity"] = listener.velocity(v, float(n["start"]) + beat_shift)
    return notes
