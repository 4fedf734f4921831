"""``musicrnn data prepare`` / ``data stats`` as a user with their own multi-track MIDI folder
meets them (issue 13 items 5 and 6, issue 16's data part): a split that does not depend on the
folder's name, chosen tracks, clear option errors, durations/tempi/metres, key normalisation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.corpus import SPLITS, read_manifest

from helpers.midi import write_song


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


# --------------------------------------------------------------------------------------------
# 2. multi-track files: what was merged and dropped, and choosing tracks
# --------------------------------------------------------------------------------------------

MELODY, BRIDGE, PIANO = [72, 74, 76, 77, 79], [66, 68, 70], [48, 50, 52, 53, 55]
BASS, GUITAR, DRUMS = [28, 30, 32], [60, 62, 64], [35, 38, 42, 46]


@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three songs: a POP909-like one (MELODY, BRIDGE, PIANO, drums), a band (bass, guitar,
    drums) and a drum loop."""
    root = tmp_path_factory.mktemp("band") / "band"
    write_song(root / "pop.mid", [("MELODY", 0, False, MELODY), ("BRIDGE", 0, False, BRIDGE),
                                  ("PIANO", 0, False, PIANO), ("Drums", 0, True, DRUMS)])
    write_song(root / "rock.mid", [("Bass", 33, False, BASS), ("Guitar", 24, False, GUITAR), ("Drums", 0, True, DRUMS)])
    write_song(root / "loop.mid", [("Drums", 0, True, DRUMS)])
    return root


def pitches_by_file(folder: Path) -> dict[str, set[int]]:
    """The pitches each piece of a data folder decodes to, by file name."""
    from musicrnn.corpus import TokenData

    out = {}
    for s in SPLITS:
        data = TokenData(folder, s)
        names = [line.split("\t")[0] for line in (folder / f"{s}.index.tsv").read_text().splitlines()[1:]]
        for i, name in enumerate(names):
            out[Path(name).name] = {int(p) for p in data.codec.decode(data.piece(i))["pitch"]}
    return out


def rejected(folder: Path) -> dict[str, str]:
    return {Path(r["file"]).name: r["reason"] for r in read_manifest(folder)["rejected"]}


def test_default_merges_pitched_tracks_drops_drums_and_says_so(band: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = prepare(band, out)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("tracks: "))
    assert "merged 5 tracks: " in line and all(f"{n} x1" in line for n in ("MELODY", "BRIDGE", "PIANO", "Bass", "Guitar"))
    assert "dropped 2 drum tracks: Drums x2" in line  # the drum loop is rejected, so its track is not counted
    assert pitches_by_file(out) == {"pop.mid": set(MELODY + BRIDGE + PIANO), "rock.mid": set(BASS + GUITAR)}
    assert "no pitched notes" in rejected(out)["loop.mid"] and "--drums keep" in rejected(out)["loop.mid"]
    tracks = read_manifest(out)["tracks"]
    assert tracks["choice"] == {"tracks": None, "programs": None, "drums": "drop"}
    assert tracks["drums_dropped"] == {"Drums": 2} and tracks["kept"]["MELODY"] == 1


def test_tracks_by_name_any_case(band: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = prepare(band, out, "--tracks", "melody,Piano")
    assert result.exit_code == 0, result.output
    assert pitches_by_file(out) == {"pop.mid": set(MELODY + PIANO)}
    reasons = rejected(out)
    assert reasons["rock.mid"] == ("none of its tracks is chosen by --tracks melody,piano --drums drop; "
                                   "its tracks: Bass, Guitar, Drums (drums)")
    assert "merged 2 tracks: MELODY x1, PIANO x1; dropped 1 track: BRIDGE x1; dropped 1 drum track" in result.stdout


def test_tracks_by_program_and_drums_kept_or_alone(band: Path, tmp_path: Path) -> None:
    out = tmp_path / "guitar"
    assert prepare(band, out, "--programs", "24-31").exit_code == 0
    assert pitches_by_file(out) == {"rock.mid": set(GUITAR)}
    assert "--programs 24-31" in rejected(out)["pop.mid"]
    out = tmp_path / "keep"
    result = prepare(band, out, "--programs", "0-7,33", "--drums", "keep")
    assert result.exit_code == 0, result.output
    assert pitches_by_file(out) == {"pop.mid": set(MELODY + BRIDGE + PIANO + DRUMS), "rock.mid": set(BASS + DRUMS),
                                    "loop.mid": set(DRUMS)}
    assert "kept 3 drum tracks: Drums x3" in result.stdout and "dropped 1 track: Guitar x1" in result.stdout
    out = tmp_path / "only"
    assert prepare(band, out, "--drums", "only").exit_code == 0
    assert pitches_by_file(out) == {name: set(DRUMS) for name in ("pop.mid", "rock.mid", "loop.mid")}


@pytest.mark.parametrize("args,text", [
    (["--programs", "0-200"], "--programs 0-200: give General MIDI program numbers 0-127"),
    (["--programs", "piano"], "--programs piano"),
    (["--tracks", " , "], "--tracks"),
])
def test_bad_track_options_are_one_error_line(band: Path, tmp_path: Path, args, text) -> None:
    result = prepare(band, tmp_path / "o", *args)
    assert result.exit_code == 1, result.output
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0]
    assert not (tmp_path / "o").exists()


def test_tracks_on_a_source_without_tracks_is_refused(jsb_path: Path, tmp_path: Path) -> None:
    result = prepare(jsb_path, tmp_path / "o", "--codec", "grid", "--tracks", "PIANO")
    assert result.exit_code == 1
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert lines == [(f"error: {jsb_path}: --tracks and --programs choose tracks of MIDI files, and this source has "
                      "none; prepare it without them (into its own data folder)")]


# --------------------------------------------------------------------------------------------
# key normalisation
# --------------------------------------------------------------------------------------------

F_SHARP_MAJOR = [66, 68, 70, 71, 73, 75, 77, 78, 66, 70, 73, 78]  # the scale, then the tonic arpeggio
WHITE_KEYS = {0, 2, 4, 5, 7, 9, 11}


@pytest.fixture(scope="module")
def in_f_sharp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An F# major song alone, one with a key annotation (D major for most of its length) and
    one with an unreadable annotation."""
    root = tmp_path_factory.mktemp("keys") / "keys"
    write_song(root / "plain" / "plain.mid", [("PIANO", 0, False, F_SHARP_MAJOR), ("Drums", 0, True, DRUMS)])
    write_song(root / "noted" / "noted.mid", [("PIANO", 0, False, F_SHARP_MAJOR)])
    (root / "noted" / "key_audio.txt").write_text("0.5\t2.0\tF#:maj\n2.0\t9.5\tD:maj\n")
    write_song(root / "broken" / "broken.mid", [("PIANO", 0, False, F_SHARP_MAJOR)])
    (root / "broken" / "key_audio.txt").write_text("0.5 2.0 H:maj\n")
    return root


def test_key_normalise_moves_f_sharp_major_onto_the_white_keys(in_f_sharp: Path, tmp_path: Path) -> None:
    out = tmp_path / "home"
    result = prepare(in_f_sharp, out, "--key-normalise", "--drums", "keep")
    assert result.exit_code == 0, result.output
    pitches = pitches_by_file(out)
    assert {p % 12 for p in pitches["plain.mid"] - set(DRUMS)} <= WHITE_KEYS
    assert pitches["plain.mid"] == {p + 6 for p in F_SHARP_MAJOR} | set(DRUMS)  # up 6; drum keys never move
    rows = {Path(n).name: r for n, r in index_rows(out).items()}
    assert (rows["plain.mid"]["key"], rows["plain.mid"]["shift"]) == ("F#:major", "6")
    assert rows["plain.mid"]["key_source"].startswith("estimated (")
    # the annotation wins over the notes, and its longest key wins: D major, down 2
    assert (rows["noted.mid"]["key"], rows["noted.mid"]["key_source"], rows["noted.mid"]["shift"]) == (
        "D:major", "key_audio.txt", "-2")
    assert pitches["noted.mid"] == {p - 2 for p in F_SHARP_MAJOR}
    assert "key_audio.txt beside it, line 1: '0.5 2.0 H:maj' is not 'start_s end_s key'" in rejected(out)["broken.mid"]
    keys = read_manifest(out)["key_normalise"]
    assert (keys["from_annotation"], keys["estimated"], keys["shifts"]) == (1, 1, {"-2": 1, "6": 1})
    assert "keys: tonic moved to C (C major / C minor): keys from key_audio.txt 1, estimated 1; pieces per shift -2: 1, +6: 1" \
        in result.stdout


def test_without_key_normalise_nothing_moves(in_f_sharp: Path, tmp_path: Path) -> None:
    out = tmp_path / "as-is"
    assert prepare(in_f_sharp, out).exit_code == 0
    assert pitches_by_file(out)["plain.mid"] == set(F_SHARP_MAJOR)
    assert read_manifest(out)["key_normalise"] is None and not rejected(out)
    assert all(r["key"] == r["shift"] == "" for r in index_rows(out).values())


def test_key_normalise_drops_notes_pushed_out_of_range_as_the_codec_does(tmp_path: Path) -> None:
    # F# major an octave up, all within 21-90; +6 pushes its top notes past 90
    song = [p + 12 for p in F_SHARP_MAJOR]
    write_song(tmp_path / "src" / "high.mid", [("PIANO", 0, False, song)])
    out = tmp_path / "d"
    result = prepare(tmp_path / "src", out, "--key-normalise", "--pitch-range", "21-90")
    assert result.exit_code == 0, result.output
    assert max(song) <= 90 and pitches_by_file(out)["high.mid"] == {p + 6 for p in song if p + 6 <= 90}
    assert index_rows(out)["src/high.mid"]["notes"] == str(sum(p + 6 <= 90 for p in song))


# --------------------------------------------------------------------------------------------
# data stats: durations, tempi, metres, notes per second
# --------------------------------------------------------------------------------------------


def write_tempo_change_song(path: Path) -> Path:
    """8 one-beat notes: 4 beats at 120 BPM in 2/4, then 4 at 60 BPM in 6/8 (6 s in all)."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0),
        mido.MetaMessage("time_signature", numerator=2, denominator=4, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(60), time=4 * 480),
        mido.MetaMessage("time_signature", numerator=6, denominator=8, time=0),
    ])
    notes = mido.MidiTrack()
    for p in range(60, 68):
        notes += [mido.Message("note_on", note=p, velocity=80, time=0), mido.Message("note_off", note=p, time=480)]
    mid.tracks += [meta, notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


def test_stats_show_durations_tempi_metres_and_note_rate(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_song(src / "a.mid", [("PIANO", 0, False, list(range(60, 68)))], bpm=120, metre=(4, 4), beat=0.5)  # 4 beats, 2 s
    write_song(src / "b.mid", [("PIANO", 0, False, list(range(60, 66)))], bpm=60, metre=(3, 4), beat=1.0)  # 6 beats, 6 s
    write_tempo_change_song(src / "c.mid")  # 8 beats, 6 s
    out = tmp_path / "d"
    assert prepare(src, out, "--split", "1,0,0").exit_code == 0
    music = read_manifest(out)["music"]
    assert music["train"] == music["all"]
    m = music["all"]
    assert (m["pieces"], m["pieces_with_tempo"]) == (3, 3)
    assert m["seconds"] == pytest.approx({"total": 14.0, "mean": 14.0 / 3})
    assert m["beats"] == pytest.approx({"total": 18.0, "mean": 6.0})
    assert m["bpm"] == pytest.approx({"min": 60.0, "median": 60.0, "max": 120.0})  # c.mid: as many beats at 60 as at 120
    assert m["time_signatures"] == {"2/4": 1, "3/4": 1, "4/4": 1, "6/8": 1}
    assert m["notes_per_second"] == pytest.approx(22 / 14)
    assert music["valid"]["pieces"] == 0 and music["valid"]["seconds"] is None
    rows = {Path(n).name: r for n, r in index_rows(out).items()}
    assert (rows["c.mid"]["beats"], rows["c.mid"]["seconds"], rows["c.mid"]["bpm_min"], rows["c.mid"]["bpm_max"],
            rows["c.mid"]["time_signatures"]) == ("8", "6", "60", "120", "2/4 6/8")

    result = CliRunner().invoke(cli, ["data", "stats", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    train = next(x for x in result.stdout.splitlines() if "BPM" in x and " train " in x)
    for text in ("0:00:14", "4.7 s", "6.0", "60/60/120 BPM", "1.57"):
        assert text in train, f"{text} missing from: {train}"
    assert "time signatures (pieces): 2/4 1, 3/4 1, 4/4 1, 6/8 1" in result.stdout
    assert "tracks: merged 3 tracks: PIANO x2, (unnamed) x1" in result.stdout


def test_stats_of_an_older_data_folder_say_how_to_get_them(tmp_path: Path) -> None:
    import json

    src = tmp_path / "src"
    write_song(src / "a.mid", [("PIANO", 0, False, [60, 62, 64])])
    out = tmp_path / "d"
    assert prepare(src, out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["music"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["data", "stats", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "durations, tempi and metres: not recorded in this data folder" in result.stdout


def test_music21_scores_keep_their_time_signatures(tmp_path: Path) -> None:
    pytest.importorskip("music21", reason="music21 corpora need the optional 'corpora' extra")
    from musicrnn.sources import load_music21

    abc = tmp_path / "tunes.abc"
    abc.write_text("X:1\nT:waltz\nM:3/4\nL:1/4\nK:G\nGAB|c2B|\n\nX:2\nT:jig\nM:6/8\nL:1/8\nK:D\nDFA dAF|\n")
    pieces = load_music21(str(abc))
    assert [p.time_signatures for _, p in pieces] == [[(0.0, 3, 4)], [(0.0, 6, 8)]]


def test_key_line_orders_shifts_by_number_after_a_json_round_trip() -> None:
    import json

    from musicrnn.corpus import key_summary_line

    manifest = json.loads(json.dumps({"key_normalise": {"from_annotation": 3, "estimated": 1,
                                                        "shifts": {"6": 1, "-1": 2, "-2": 1}}}, sort_keys=True))
    assert key_summary_line(manifest).endswith("pieces per shift -2: 1, -1: 2, +6: 1")
    assert key_summary_line({"key_normalise": None}) is None
