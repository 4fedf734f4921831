"""Tiny MIDI files written by the tests themselves (pretty_midi), so no test reads music from
outside the repo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi


def write_song(path: Path, tracks: list[tuple[str, int, bool, list[int]]], bpm: float = 120.0,
               metre: tuple[int, int] = (4, 4), beat: float = 0.5) -> Path:
    """A tiny MIDI file: per track (name, program, is_drum, pitches played one after another,
    ``beat`` beats each)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(metre[0], metre[1], 0.0))
    spb = 60.0 / bpm
    for name, program, drum, pitches in tracks:
        inst = pretty_midi.Instrument(program=program, is_drum=drum, name=name)
        for i, p in enumerate(pitches):
            inst.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=i * beat * spb, end=(i + 1) * beat * spb))
        pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def write_piano_pieces(folder: Path, count: int, tune: tuple[int, int], length: float, held: tuple[int, ...]) -> Path:
    """``count`` short random piano pieces ``pieceNN.mid`` in a new ``folder`` (seed 0): 4 bars
    of eighth notes at 120 BPM, pitches drawn from ``tune`` (low, high exclusive), each sounding
    ``length`` seconds, over the ``held`` pitches for all 8 seconds."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pm = pretty_midi.PrettyMIDI(initial_tempo=120)
        inst = pretty_midi.Instrument(program=0, name="piano")
        for beat in range(16):
            inst.notes.append(pretty_midi.Note(80, int(rng.integers(*tune)), beat * 0.5, beat * 0.5 + length))
        for pitch in held:
            inst.notes.append(pretty_midi.Note(70, pitch, 0.0, 8.0))
        pm.instruments.append(inst)
        pm.write(str(folder / f"piece{i:02d}.mid"))
    return folder
