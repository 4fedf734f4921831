"""Music statistics of pieces, as defined by MusPy (Dong et al. 2020, muspy.metrics).

Used to compare generated music with held-out real music (``musicrnn eval --music-stats`` and
benchmarks/compose.py). Every function takes a note array with times in beats.

- pitch_class_entropy: Shannon entropy (bits) of the pitch-class histogram of all notes.
- scale_consistency: the largest share of notes that fits one major or (natural) minor scale.
- polyphony: mean number of sounding pitches over the time steps where any pitch sounds.
- polyphony_rate: share of time steps with more than one pitch sounding (MusPy threshold 2).
- empty_beat_rate: share of beats in which no note sounds.
- groove_consistency: 1 - mean Hamming distance between the onset patterns of neighbouring
  bars, divided by the steps per bar.
- pitch_range: highest minus lowest pitch.
- note_density: notes per beat.

Beyond MusPy, for models that play with dynamics and articulation:

- velocity_mean, velocity_spread: mean and standard deviation of the notes' velocities.
- duration_spread: standard deviation of note durations in beats.
"""

from __future__ import annotations

import math

import numpy as np

MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
STEPS_PER_BEAT = 12  # 16ths and triplets fall on this grid

STAT_NAMES = ("pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate",
              "groove_consistency", "pitch_range", "note_density", "velocity_mean", "velocity_spread", "duration_spread")


def pitch_class_entropy(notes: np.ndarray) -> float:
    if len(notes) == 0:
        return float("nan")
    hist = np.bincount(notes["pitch"] % 12, minlength=12) / len(notes)
    nz = hist[hist > 0]
    return float(-(nz * np.log2(nz)).sum())


def scale_consistency(notes: np.ndarray) -> float:
    if len(notes) == 0:
        return float("nan")
    pcs = notes["pitch"] % 12
    best = 0.0
    for tonic in range(12):
        for scale in (MAJOR, MINOR):
            best = max(best, float(np.isin(pcs, (scale + tonic) % 12).mean()))
    return best


def _roll(notes: np.ndarray) -> np.ndarray:
    if len(notes) == 0:
        return np.zeros((0, 128), bool)
    on = np.round(notes["start"] * STEPS_PER_BEAT).astype(int)
    off = np.maximum(np.round(notes["end"] * STEPS_PER_BEAT).astype(int), on + 1)
    roll = np.zeros((int(off.max()), 128), np.int32)
    np.add.at(roll, (on, notes["pitch"]), 1)
    np.add.at(roll, (np.minimum(off, len(roll) - 1), notes["pitch"]), -1)
    roll[-1] = 0
    return np.cumsum(roll, axis=0) > 0


def polyphony(notes: np.ndarray) -> float:
    counts = _roll(notes).sum(1)
    active = counts[counts > 0]
    return float(active.mean()) if len(active) else float("nan")


def polyphony_rate(notes: np.ndarray, threshold: int = 2) -> float:
    counts = _roll(notes).sum(1)
    return float((counts >= threshold).mean()) if len(counts) else float("nan")


def empty_beat_rate(notes: np.ndarray) -> float:
    if len(notes) == 0:
        return float("nan")
    beats = int(math.ceil(float(notes["end"].max())))
    busy = np.zeros(max(beats, 1), bool)
    for s, e in zip(notes["start"], notes["end"]):
        busy[int(math.floor(s)) : max(int(math.ceil(e)), int(math.floor(s)) + 1)] = True
    return float(1.0 - busy.mean())


def groove_consistency(notes: np.ndarray, beats_per_bar: float = 4.0) -> float:
    if len(notes) == 0:
        return float("nan")
    per_bar = int(round(beats_per_bar * STEPS_PER_BEAT))
    onsets = np.round(notes["start"] * STEPS_PER_BEAT).astype(int)
    bars = int(onsets.max() // per_bar) + 1
    if bars < 2:
        return float("nan")
    pattern = np.zeros((bars, per_bar), bool)
    pattern[onsets // per_bar, onsets % per_bar] = True
    hamming = (pattern[1:] != pattern[:-1]).sum(1) / per_bar
    return float(1.0 - hamming.mean())


def pitch_range(notes: np.ndarray) -> float:
    return float(notes["pitch"].max() - notes["pitch"].min()) if len(notes) else float("nan")


def note_density(notes: np.ndarray) -> float:
    if len(notes) == 0:
        return float("nan")
    return float(len(notes) / max(float(notes["end"].max()), 1e-9))


def velocity_mean(notes: np.ndarray) -> float:
    return float(notes["velocity"].mean()) if len(notes) else float("nan")


def velocity_spread(notes: np.ndarray) -> float:
    return float(notes["velocity"].std()) if len(notes) else float("nan")


def duration_spread(notes: np.ndarray) -> float:
    return float((notes["end"] - notes["start"]).std()) if len(notes) else float("nan")


def music_stats(notes: np.ndarray, beats_per_bar: float = 4.0) -> dict[str, float]:
    return {
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "polyphony": polyphony(notes),
        "polyphony_rate": polyphony_rate(notes),
        "empty_beat_rate": empty_beat_rate(notes),
        "groove_consistency": groove_consistency(notes, beats_per_bar),
        "pitch_range": pitch_range(notes),
        "note_density": note_density(notes),
        "velocity_mean": velocity_mean(notes),
        "velocity_spread": velocity_spread(notes),
        "duration_spread": duration_spread(notes),
    }


def mean_stats(pieces: list[np.ndarray], beats_per_bar: float = 4.0) -> dict[str, float]:
    """Each statistic averaged over pieces (NaNs, e.g. one-bar pieces for groove, skipped)."""
    rows = [music_stats(p, beats_per_bar) for p in pieces if len(p)]
    return {k: float(np.nanmean([r[k] for r in rows])) if rows else float("nan") for k in STAT_NAMES}


def closer_count(real: dict[str, float], ours: dict[str, float], baseline: dict[str, float]) -> tuple[int, int]:
    """On how many statistics ``ours`` is closer to ``real`` than ``baseline`` is (and of how many).
    A statistic all three share exactly (e.g. velocities of a codec without them) tells nothing
    and is not counted."""
    wins = total = 0
    for k in STAT_NAMES:
        if any(math.isnan(d[k]) for d in (real, ours, baseline)) or real[k] == ours[k] == baseline[k]:
            continue
        total += 1
        wins += abs(ours[k] - real[k]) < abs(baseline[k] - real[k])
    return wins, total
