"""The harmony follower (issue 17): the chords a melody implies (offline over the whole melody,
live from what was heard so far), the prior it puts on an accompaniment's new notes, and where a
melody's beats fall on its file's grid."""

from __future__ import annotations

import numpy as np
import pytest

from musicrnn.harmony import CHORD_BIAS, ChordFollower, chord_prior, estimate_chords
from musicrnn.metre import melody_grid
from musicrnn.notes import make_notes
from musicrnn.tonality import Key

C, F, G, AM = (0, 4, 7), (5, 9, 0), (7, 11, 2), (9, 0, 4)


def _arpeggios(chords, beats_per_chord: int = 4, phase: float = 0.0, passing: bool = False) -> np.ndarray:
    """A melody of quarter notes arpeggiating ``chords`` (a bar each), its beats at ``phase``;
    ``passing``: the last beat of every bar an eighth of the chord, then a passing eighth a
    step above its root."""
    pitch, start, length = [], [], []
    for b, chord in enumerate(chords):
        for k in range(beats_per_chord):
            at = phase + b * beats_per_chord + k
            if passing and k == beats_per_chord - 1:
                pitch += [72 + chord[0], 72 + (chord[0] + 2) % 12]
                start += [at, at + 0.5]
                length += [0.45, 0.45]
            else:
                pitch.append(72 + chord[k % 3])
                start.append(at)
                length.append(0.9)
    start = np.array(start, float)
    return make_notes(pitch=pitch, velocity=[90] * len(pitch), start=start, end=start + np.array(length))


def _tones(chord) -> set[int]:
    return set(chord)


def test_the_whole_melodys_chords_change_on_bars_not_on_a_passing_note() -> None:
    chords = [C, F, G, C, AM, F, G, C]
    melody = _arpeggios(chords, passing=True)
    est = estimate_chords(melody, Key(0, "major"), beat_phase=0.0, bar_beats=4)
    assert len(est.starts) == 32 and est.starts[:3].tolist() == [0.0, 1.0, 2.0]
    per_beat = [set(np.flatnonzero(t)) for t in est.tones]
    # every beat of a bar has that bar's chord: the passing note (D over C, G over F ...) moves nothing
    assert per_beat == [_tones(c) for c in chords for _ in range(4)]
    assert set(np.flatnonzero(est.at(np.array([4.5]))[0])) == _tones(F)


def test_chords_follow_the_melodys_own_beats() -> None:
    melody = _arpeggios([C, G, C, F], phase=0.25)  # a sixteenth after the file's beats
    est = estimate_chords(melody, Key(0, "major"), beat_phase=0.25, bar_beats=4)
    assert est.starts[0] == pytest.approx(0.25)
    assert set(np.flatnonzero(est.at(np.array([4.3]))[0])) == _tones(G)


@pytest.mark.parametrize("sub, beat_step", [(0.0, 0), (0.08, 0), (-0.1, 1), (0.1, 3)])
def test_melody_grid_finds_where_the_melodys_beats_fall(sub: float, beat_step: int) -> None:
    phase = beat_step * 0.25 + sub
    melody = _arpeggios([C, F, G, C] * 2, phase=phase)
    eighths = melody.copy()  # off-beat eighths (short) do not move the beat
    eighths["start"] += 0.5
    eighths["end"] = eighths["start"] + 0.2
    both = np.concatenate([melody, eighths])
    got = melody_grid(both["start"], both["end"] - both["start"], 4)
    assert (got - phase + 0.5) % 1.0 - 0.5 == pytest.approx(0.0, abs=1e-9)


def test_the_prior_lifts_chord_tones_and_moves_with_the_models_pitches() -> None:
    tones = np.zeros(12, bool)
    tones[list(G)] = True
    nats = chord_prior(tones, 1.0)
    assert nats[7] - nats[1] == pytest.approx(CHORD_BIAS) and nats[2] == nats[11] == nats[7]
    moved = chord_prior(tones, 0.5, shift=-2)  # a melody in D heard in C: G B D is heard as F A C
    assert set(np.flatnonzero(moved > 0)) == {5, 9, 0} and moved[5] - moved[6] == pytest.approx(CHORD_BIAS / 2)


def test_the_live_follower_hears_the_current_beat_and_keeps_its_chord_on_a_tie() -> None:
    follower, key = ChordFollower(), Key(0, "major")
    assert follower.chord_at(0.0, key) is None  # nothing heard: no chord
    follower.note_on(0.0, 64)  # E: C major covers it first in the tie order (I before iii, vi)
    assert follower.chord_at(0.0, key) == C
    follower.note_off(0.9, 64)
    follower.note_on(1.0, 69)  # A on the next beat: C does not hold it, F and Am do; F comes first
    assert follower.chord_at(1.0, key) == F
    follower.note_off(1.5, 69)
    follower.note_on(1.5, 72)  # C: F still holds both
    assert follower.chord_at(1.5, key) == F
    follower.note_off(2.0, 72)
    assert follower.chord_at(2.25, key) == F  # silence: the chord before
    for t in np.arange(3.0, 40.0):
        follower.note_on(t, 67)
        follower.note_off(t + 0.5, 67)
    assert len(follower.ended) <= 3  # memory stays bounded
