"""``musicrnn data prepare`` / ``data stats`` as a user with their own multi-track MIDI folder
meets them (issue 13 items 5 and 6, issue 16's data part): a split that does not depend on the
folder's name, chosen tracks, clear option errors, durations/tempi/metres, key normalisation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pretty_midi
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.corpus import SPLITS, read_manifest


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


def prepare(src: Path, out: Path, *args: str):
    result = CliRunner().invoke(cli, ["data", "prepare", str(src), "-o", str(out), "--workers", "1", *args])
    return result


def index_rows(folder: Path) -> dict[str, dict[str, str]]:
    """Every piece of a data folder: name -> its index.tsv row (plus its split)."""
    rows = {}
    for s in SPLITS:
        lines = (folder / f"{s}.index.tsv").read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t")
        for line in lines[1:]:
            row = dict(zip(header, line.split("\t")))
            rows[row["name"]] = {**row, "split": s}
    return rows


# --------------------------------------------------------------------------------------------
# 1. the split follows the file's path inside the source, not the source folder's name
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thirty_songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "pop909"
    for i in range(30):
        write_song(root / f"{i:03d}" / f"{i:03d}.mid", [("PIANO", 0, False, [60 + i % 12, 64, 67, 72])])
    return root


def test_same_files_under_two_folder_names_get_the_same_split(thirty_songs: Path, tmp_path: Path) -> None:
    songs = tmp_path / "songs"
    shutil.copytree(thirty_songs, songs)
    a, b = tmp_path / "a", tmp_path / "b"
    for src, out in ((thirty_songs, a), (songs, b)):
        result = prepare(src, out, "--split", "0.5,0.25,0.25")
        assert result.exit_code == 0, result.output
    rows_a, rows_b = index_rows(a), index_rows(b)
    assert sorted(rows_a) == [f"pop909/{i:03d}/{i:03d}.mid" for i in range(30)]
    split_a = {r["split_key"]: r["split"] for r in rows_a.values()}
    split_b = {r["split_key"]: r["split"] for r in rows_b.values()}
    assert split_a == split_b and len(split_a) == 30
    assert set(split_a.values()) == {"train", "valid", "test"}
    assert "000/000.mid" in split_a  # the key: the path relative to the folder given
    split = read_manifest(a)["split"]
    assert split["seed"] == 0 and split["fractions"] == [0.5, 0.25, 0.25] and "sha1" in split["rule"]


def test_split_seed_gives_another_split_and_is_recorded(thirty_songs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert prepare(thirty_songs, a).exit_code == 0
    result = prepare(thirty_songs, b, "--split-seed", "7")
    assert result.exit_code == 0, result.output
    assert read_manifest(b)["split"]["seed"] == 7
    split_a = {n: r["split"] for n, r in index_rows(a).items()}
    split_b = {n: r["split"] for n, r in index_rows(b).items()}
    assert split_a.keys() == split_b.keys() and split_a != split_b
