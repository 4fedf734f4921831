"""musicrnn.midi: every file of the shared MIDI corpus loads or fails with one clear line; writing
round-trips; tempo maps convert both ways."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicrnn.errors import MidiError
from musicrnn.midi import load_midi, write_midi
from musicrnn.notes import NOTE_DTYPE, Piece, make_notes

from helpers.paths import MIDI_CORPUS

CORPUS_FILES = sorted(p for p in MIDI_CORPUS.rglob("*") if p.is_file())

# files that must be rejected, and a word the reason must contain
KNOWN_BAD = {
    "test-corrupt-file-missing-byte.mid": "corrupt",
    "test-empty-file.mid": "empty",
    "test-not-a-midi-file.mid": "not a MIDI",
    "test-empty.mid": "no notes",
    "test-illegal-message-f4.mid": "corrupt",
}
SENSIBLE_WORDS = ("corrupt", "empty", "not a midi", "no notes", "not supported", "not found")

TICK = 1 / 480


# --------------------------------------------------------------------------------------------
# the shared corpus
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.relative_to(MIDI_CORPUS).as_posix())
def test_every_corpus_file_loads_or_fails_in_one_line(path: Path) -> None:
    try:
        piece = load_midi(path)
    except MidiError as exc:
        msg = str(exc)
        assert "\n" not in msg
        assert path.name in msg, f"error does not name the file: {msg}"
        assert any(w in msg.lower() for w in SENSIBLE_WORDS), f"no reason given: {msg}"
        assert path.name not in KNOWN_BAD or KNOWN_BAD[path.name].lower() in msg.lower(), msg
        return
    assert path.name not in KNOWN_BAD, f"{path.name} should have been rejected"
    assert isinstance(piece, Piece)
    notes = piece.notes
    assert notes.dtype == NOTE_DTYPE and len(notes) > 0
    assert np.all(notes["end"] > notes["start"]) and np.all(notes["start"] >= 0)
    assert np.all((notes["pitch"] >= 0) & (notes["pitch"] <= 127))
    assert np.all((notes["velocity"] >= 1) & (notes["velocity"] <= 127))
    assert piece.tempos[0][0] == 0.0 and all(bpm > 0 for _, bpm in piece.tempos)
    assert piece.time_signatures[0][0] == 0.0


def test_corpus_walk_saw_the_known_files() -> None:
    names = {p.name for p in CORPUS_FILES}
    assert set(KNOWN_BAD) <= names
    assert len([p for p in CORPUS_FILES if p.suffix == ".mid"]) >= 70


@pytest.mark.parametrize("name,word", sorted(KNOWN_BAD.items()))
def test_known_bad_files_are_rejected_with_a_reason(name: str, word: str) -> None:
    path = MIDI_CORPUS / "edge-cases" / name
    with pytest.raises(MidiError) as info:
        load_midi(path)
    msg = str(info.value)
    assert word.lower() in msg.lower()
    assert msg.startswith(f"{path}: ")
    assert "\n" not in msg


def test_valid_file_without_notes_loads_when_notes_are_not_required() -> None:
    piece = load_midi(MIDI_CORPUS / "edge-cases" / "test-empty.mid", require_notes=False)
    assert len(piece.notes) == 0


# --------------------------------------------------------------------------------------------
# write -> load round trip
# --------------------------------------------------------------------------------------------


@st.composite
def pieces(draw) -> Piece:
    """Notes on the 1/480-beat grid, never overlapping on the same pitch; a tempo map from beat 0."""
    rows = []
    for pitch in draw(st.lists(st.integers(0, 127), min_size=1, max_size=6, unique=True)):
        # strictly increasing tick boundaries; each pair (on, off) is a note, gaps allowed
        ticks = sorted(draw(st.lists(st.integers(0, 480 * 32), min_size=2, max_size=8, unique=True)))
        program, drum = draw(st.sampled_from([(0, False), (24, False), (40, False), (0, True)]))
        for on, off in zip(ticks[0::2], ticks[1::2]):
            rows.append((pitch, draw(st.integers(1, 127)), on * TICK, off * TICK, program, drum))
    tempo_beats = sorted(draw(st.lists(st.integers(1, 480 * 32), max_size=4, unique=True)))
    tempos = [(0.0, draw(st.floats(30, 240)))] + [(t * TICK, draw(st.floats(30, 240))) for t in tempo_beats]
    return Piece(make_notes(rows), tempos=tempos, time_signatures=[(0.0, 3, 4)])


def _sorted(notes: np.ndarray) -> np.ndarray:
    return notes[np.lexsort((notes["start"], notes["pitch"], notes["is_drum"]))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(piece=pieces())
def test_write_then_load_keeps_notes_and_tempo(piece: Piece) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = write_midi(piece, Path(d) / "out.mid")
        back = load_midi(path)
        assert os.listdir(d) == ["out.mid"]
    a, b = _sorted(piece.notes), _sorted(back.notes)
    assert len(a) == len(b)
    np.testing.assert_array_equal(a["pitch"], b["pitch"])
    np.testing.assert_array_equal(a["velocity"], b["velocity"])
    np.testing.assert_array_equal(a["is_drum"], b["is_drum"])
    np.testing.assert_array_equal(a["program"][~a["is_drum"]], b["program"][~b["is_drum"]])
    np.testing.assert_allclose(a["start"], b["start"], atol=TICK / 2)
    np.testing.assert_allclose(a["end"], b["end"], atol=TICK / 2)
    assert len(back.tempos) == len(piece.tempos)
    for (b0, bpm0), (b1, bpm1) in zip(piece.tempos, back.tempos):
        assert b1 == pytest.approx(b0, abs=TICK / 2)
        assert bpm1 == pytest.approx(bpm0, rel=1e-5)  # MIDI stores whole microseconds per beat
    assert back.time_signatures[0] == (0.0, 3, 4)


def test_restruck_note_survives_the_round_trip(tmp_path: Path) -> None:
    # the same pitch ends and starts again on the same tick: note-off must be written first
    piece = Piece(make_notes([(60, 90, 0.0, 1.0), (60, 70, 1.0, 2.0)]))
    back = load_midi(write_midi(piece, tmp_path / "r.mid"))
    assert back.notes[["pitch", "velocity", "start", "end"]].tolist() == [(60, 90, 0.0, 1.0), (60, 70, 1.0, 2.0)]


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mido

    target = tmp_path / "sub" / "song.mid"
    write_midi(Piece(make_notes([(60, 80, 0.0, 1.0)])), target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["song.mid"]
    before = target.read_bytes()

    def broken_save(self, *args, **kwargs):
        kwargs["file"].write(b"MThd partial")
        raise OSError("disk full")

    monkeypatch.setattr(mido.MidiFile, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_midi(Piece(make_notes([(62, 80, 0.0, 4.0)])), target)
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["song.mid"]  # no temp file left


# --------------------------------------------------------------------------------------------
# tempo maps
# --------------------------------------------------------------------------------------------


def test_seconds_and_beats_with_a_tempo_change() -> None:
    piece = Piece(make_notes([]), tempos=[(0.0, 120.0), (4.0, 60.0)])
    np.testing.assert_allclose(piece.seconds([0.0, 2.0, 4.0, 5.0, 6.5]), [0.0, 1.0, 2.0, 3.0, 4.5])
    np.testing.assert_allclose(piece.beats([0.0, 1.0, 2.0, 3.0, 4.5]), [0.0, 2.0, 4.0, 5.0, 6.5])


@settings(max_examples=80, deadline=None)
@given(
    changes=st.lists(st.tuples(st.floats(0.25, 64), st.floats(20, 300)), max_size=6),
    first_bpm=st.floats(20, 300),
    beats=st.lists(st.floats(0, 200), min_size=1, max_size=20),
)
def test_seconds_and_beats_are_inverses(changes, first_bpm, beats) -> None:
    tempos = [(0.0, first_bpm)]
    for b, bpm in sorted(dict(changes).items()):
        tempos.append((b, bpm))
    piece = Piece(make_notes([]), tempos=tempos)
    b = np.asarray(beats)
    s = piece.seconds(b)
    np.testing.assert_allclose(piece.beats(s), b, rtol=1e-9, atol=1e-9)
    order = np.argsort(b)
    assert np.all(np.diff(s[order]) >= -1e-12)  # time only moves forward
    np.testing.assert_allclose(piece.seconds(piece.beats(s)), s, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# bad paths
# --------------------------------------------------------------------------------------------


def test_missing_file_gives_midi_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mid"
    with pytest.raises(MidiError, match="not found") as info:
        load_midi(missing)
    assert str(missing) in str(info.value)


def test_folder_gives_midi_error(tmp_path: Path) -> None:
    with pytest.raises(MidiError, match="folder"):
        load_midi(tmp_path)


def test_last_tempo_at_the_same_time_wins(tmp_path: Path) -> None:
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(140), time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0))
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    mid.save(tmp_path / "t.mid")
    piece = load_midi(tmp_path / "t.mid")
    assert len(piece.tempos) == 1 and piece.tempos[0][1] == pytest.approx(100.0)
