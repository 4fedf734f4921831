"""benchmarks/accompany.py (issue 17, "Numbers"): the chord-label parser, the note-in-chord and
beat-grid measures on hand-built notes, the rule baseline, and the script end to end on a tiny
POP909-like folder (a tiny random model, an n-gram driven through compose --accompany's code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.codecs import AccompanyCodec
from musicrnn.errors import MusicRNNError
from musicrnn.notes import make_notes
from musicrnn.tonality import Key

import accompany as bench  # benchmarks/accompany.py (benchmarks/ is on pytest's pythonpath)


@pytest.mark.parametrize("label, pcs", [
    ("B:maj", {11, 3, 6}),
    ("C#:min7", {1, 4, 8, 11}),
    ("A:sus4(b7)", {9, 2, 4, 7}),
    ("E:maj/3", {4, 8, 11}),
    ("C:maj/b7", {0, 4, 7, 10}),  # the bass degree sounds too
    ("Eb:min/b3", {3, 6, 10}),
    ("F:hdim7", {5, 8, 11, 3}),
    ("Db:maj6", {1, 5, 8, 10}),
    ("G", {7, 11, 2}),  # a root alone: major
    ("C:(1,b3,5)", {0, 3, 7}),
    ("C:maj7(*5)", {0, 4, 11}),
    ("Cb:maj", {11, 3, 6}),
])
def test_chord_labels_give_their_pitch_classes(label: str, pcs: set[int]) -> None:
    assert bench.parse_chord(label) == frozenset(pcs)


def test_no_chord_and_unreadable_labels() -> None:
    assert bench.parse_chord("N") is None and bench.parse_chord("X") is None
    for bad in ("H:maj", "C:fancy", "C:maj(b15)", "maj", ""):
        with pytest.raises(ValueError):
            bench.parse_chord(bad)


def test_a_bad_chord_line_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "chord_midi.txt"
    path.write_text("0.0\t1.0\tC:maj\n1.0\t2.0\tC:weird\n")
    with pytest.raises(MusicRNNError, match=r"chord_midi.txt, line 2: '1.0\\t2.0\\tC:weird' is not 'start_s end_s chord'"):
        bench.read_chords(path)


def _chords(tmp_path: Path) -> bench.Chords:
    path = tmp_path / "chord_midi.txt"
    path.write_text("0 2 C:maj\n2 3 N\n3 5 G:maj\n")  # nothing annotated after 5 s
    return bench.read_chords(path)


def test_note_in_chord_by_onset_and_by_duration(tmp_path: Path) -> None:
    notes = make_notes(pitch=[60, 62, 64, 71, 65], velocity=[80] * 5,
                       start=[0.0, 0.5, 2.2, 3.0, 5.5], end=[1.0, 2.5, 3.5, 4.0, 6.0])
    c = bench.note_in_chord(notes, _chords(tmp_path))
    # onsets: C under C:maj (in), D under C:maj (out), E under N (left out), B under G:maj (in),
    # F after the last chord (left out)
    assert (c["onset_in"], c["onset_counted"]) == (2, 3)
    # seconds: C 1 in; D 1.5 out under C:maj (its 0.5 s under N left out); E 0.5 out under G:maj; B 1 in
    assert c["seconds_in"] == pytest.approx(2.0) and c["seconds_counted"] == pytest.approx(4.0)
    song = bench.Song("s", tmp_path / "s.mid", notes, notes, _chords(tmp_path), np.zeros(0), np.zeros(0), Key(0, "major"))
    assert bench.scale_chance([song]) == pytest.approx((2 * 3 / 7 + 2 * 3 / 7) / 4)  # C and G major: 3 of 7 scale notes; N left out
    empty = bench.note_in_chord(notes[:0], _chords(tmp_path))
    assert empty["onset_counted"] == 0 and empty["seconds_counted"] == 0


def test_onsets_on_the_sixteenths_of_the_beats() -> None:
    grid = bench.sixteenths(np.array([1.0, 2.0, 3.0]), until=4.0)
    assert grid.tolist() == pytest.approx(np.arange(0.0, 4.01, 0.25).tolist())  # the beat carried before and after
    onsets = np.array([1.26, 1.30, 0.02, 3.74, 3.9])
    assert bench.on_grid(onsets, grid, 0.03) == 3  # 1.26, 0.02, 3.74
    near, total = bench.chance_on_grid(grid, 1.0, 3.0, 0.03)
    assert near / total == pytest.approx(0.24)  # 0.06 s of every 0.25 s


def test_the_rule_strikes_the_triad_that_fits_the_melody_on_each_beat(tmp_path: Path) -> None:
    melody = make_notes(pitch=[72, 76, 79, 71, 74], velocity=[100] * 5, start=[0, 0.25, 0.5, 1.0, 1.5],
                        end=[0.25, 0.5, 1.0, 1.5, 2.0])
    song = bench.Song("s", tmp_path / "s.mid", melody, melody[:0], _chords(tmp_path), np.array([0.0, 1.0, 2.0]),
                      np.zeros(0), Key(0, "major"))
    rule = bench.rule_accompaniment(song)
    assert [(int(n["pitch"]), float(n["start"]), float(n["end"])) for n in rule] == [
        (48, 0.0, 1.0), (52, 0.0, 1.0), (55, 0.0, 1.0),  # C E G: the tonic
        (55, 1.0, 2.0), (59, 1.0, 2.0), (62, 1.0, 2.0)]  # B D: the dominant, root in C3-B3
    assert set(rule["velocity"].tolist()) == {bench.RULE_VELOCITY}
    assert bench.diatonic_triads(Key(9, "minor"))[:3] == [(9, 0, 4), (4, 7, 11), (2, 5, 9)]  # i, v, iv


# --- end to end --------------------------------------------------------------------------------

BPM = 100.0
CHORDS = [(0, 4, "C:maj", (48, 52, 55)), (4, 8, "F:maj", (53, 57, 60)), (8, 12, "G:maj", (55, 59, 62)),
          (12, 16, "C:maj", (48, 52, 55))]  # beats: start, end, label, the piano's notes


def _pop909_song(folder: Path, name: str, shift: int) -> None:
    """A POP909-like song folder: NAME.mid (MELODY, BRIDGE, PIANO), chords, beats and key, in C
    moved by ``shift`` semitones."""
    beat = 60.0 / BPM
    pm = pretty_midi.PrettyMIDI(initial_tempo=BPM)
    tracks = {n: pretty_midi.Instrument(0, name=n) for n in ("MELODY", "BRIDGE", "PIANO")}
    for i in range(16):
        tracks["MELODY"].notes.append(pretty_midi.Note(100, 72 + shift + [0, 4, 7, 5][i % 4], i * beat, (i + 0.9) * beat))
    tracks["BRIDGE"].notes.append(pretty_midi.Note(90, 79 + shift, 14 * beat, 16 * beat))
    for a, b, _, pitches in CHORDS:
        for p in pitches:
            tracks["PIANO"].notes.append(pretty_midi.Note(70, p + shift, a * beat, b * beat))
    pm.instruments.extend(tracks.values())
    song = folder / name
    song.mkdir(parents=True)
    pm.write(str(song / f"{name}.mid"))
    roots = ["C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B"]
    (song / "chord_midi.txt").write_text("".join(
        f"{a * beat}\t{b * beat}\t{roots[(bench.ROOTS[label[0]] + shift) % 12]}{label[1:]}\n" for a, b, label, _ in CHORDS)
        + f"{16 * beat}\t{20 * beat}\tN\n")
    (song / "beat_midi.txt").write_text("".join(f"{i * beat} {i % 2}.0 {int(i % 4 == 0)}.0\n" for i in range(17)))
    (song / "key_audio.txt").write_text(f"0.0\t{16 * beat}\t{roots[shift % 12]}:maj\n")


def test_the_benchmark_runs_end_to_end_on_a_tiny_pop909_folder(tmp_path: Path, capsys) -> None:
    from helpers.models import tiny_checkpoint

    src = tmp_path / "pop909"
    _pop909_song(src, "001", 0)
    _pop909_song(src, "002", 3)
    data = tmp_path / "data"
    res = CliRunner().invoke(cli, ["data", "prepare", str(src), "-o", str(data), "--codec", "accompany",
                                   "--roles", "melody=MELODY,BRIDGE", "--roles", "accompaniment=PIANO",
                                   "--key-normalise", "--split", "1,0,0", "--workers", "1"])
    assert res.exit_code == 0, res.output
    model = tiny_checkpoint(tmp_path / "acc.pt", AccompanyCodec(),
                            {"roles": {"melody": ["bridge", "melody"], "accompaniment": ["piano"]}, "key_normalised": True})
    out = tmp_path / "results.json"
    kept = tmp_path / "kept"
    rc = bench.main(["--model", str(model), "--data", str(data), "--dataset", str(src), "--split", "train",
                     "--ngram-order", "2", "--seed", "1", "--json", str(out), "--out", str(kept)])
    shown = capsys.readouterr().out
    assert rc == 0, shown
    assert shown.startswith(f"2 train songs of {data}, model {model}, seed 1, temperature 1")
    for row in ("| real (PIANO track) | 24 | 1.000 | 1.000 | 1.000 | 1.000 | 70.0 | 0.0 / 0.0 |", "| ours (",
                "| 2-gram |", "| rule (key's triads) |"):
        assert row in shown
    assert "goal: ours' note-in-chord ratio (onsets) ≥ 0.9 × the real track's:" in shown
    assert "note-in-chord ratio of a random note of the song's key: 0.429" in shown  # C, F, G major: 3 of 7
    result = json.loads(out.read_text())
    assert result["songs"] == ["001", "002"] and list(result["systems"]) == ["real", "ours", "ngram", "rule"]
    systems = result["systems"]
    assert systems["ours"]["notes"] > 0 and systems["ngram"]["notes"] > 0  # the n-gram drove compose's code
    assert systems["rule"]["on_beat_grid"] == 1.0 and systems["rule"]["in_chord_onsets"] > 0.5
    assert set(systems["ours"]["per_song"]) == {"001", "002"}
    assert sorted(p.name for p in (kept / "ngram").iterdir()) == ["001.mid", "002.mid"]  # --out keeps the files
    for g in result["goals"]:
        assert g["met"] == (g["share"] >= 0.9)

    # a wrong folder: one line, status 1
    assert bench.main(["--model", str(model), "--data", str(tmp_path), "--dataset", str(src)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'test.index.tsv'}: no such file;") and err.count("\n") == 1
