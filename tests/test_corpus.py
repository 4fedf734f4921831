"""musicrnn.corpus: preparing data folders from .mat piano rolls and MIDI folders, reading them
back, reproducibility and clear failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from musicrnn.codec import BOS, GridCodec, PerformanceCodec
from musicrnn.corpus import MANIFEST_FORMAT_VERSION, SPLITS, TokenData, data_stats, prepare, read_manifest
from musicrnn.errors import DataError
from musicrnn.sources import MAT_SPLITS

# rejected by the edge-cases prepare, with a word the reason must contain
EDGE_REJECTS = {
    "test-corrupt-file-missing-byte.mid": "corrupt",
    "test-empty-file.mid": "empty",
    "test-not-a-midi-file.mid": "not a MIDI",
    "test-empty.mid": "no notes",
    "test-illegal-message-f4.mid": "corrupt",
    "test-all-gm-percussion.mid": "no pitched notes",  # drums only
}


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _index(folder: Path, split: str) -> list[str]:
    lines = (folder / f"{split}.index.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("name\ttokens\tnotes\tframes\tsplit_key")
    return [line.split("\t")[0] for line in lines[1:]]


# --------------------------------------------------------------------------------------------
# JSB Chorales (.mat piano rolls)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jsb_rolls(jsb_path: Path) -> dict[str, list[np.ndarray]]:
    data = scipy.io.loadmat(str(jsb_path))
    return {s: [np.asarray(c) > 0 for c in np.asarray(data[k]).ravel()] for s, k in MAT_SPLITS.items()}


@pytest.fixture(scope="module")
def jsb_data(jsb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jsb") / "data"
    prepare([str(jsb_path)], out, GridCodec(steps_per_beat=1))
    return out


def test_jsb_keeps_the_published_split_and_frames(jsb_data: Path, jsb_rolls) -> None:
    manifest = read_manifest(jsb_data)
    counts = manifest["splits"]
    assert [counts[s]["pieces"] for s in SPLITS] == [229, 76, 77]
    for s in SPLITS:
        assert counts[s]["frames"] == sum(r.shape[0] for r in jsb_rolls[s])
    assert manifest["rejected"] == [] and manifest["files_seen"] == 229 + 76 + 77
    assert manifest["codec"] == GridCodec(steps_per_beat=1).to_dict()


def test_jsb_reads_back_to_the_same_piano_rolls(jsb_data: Path, jsb_rolls) -> None:
    for s in SPLITS:
        data = TokenData(jsb_data, s)
        codec = data.codec
        assert isinstance(codec, GridCodec) and codec.num_pitches == 88
        assert len(data) == len(jsb_rolls[s])
        assert data.num_tokens == sum(r.shape[0] + int(r.sum()) for r in jsb_rolls[s])
        for i, roll in enumerate(jsb_rolls[s]):
            tokens = data.piece(i)
            assert tokens.dtype == np.int64
            assert data.piece(i, with_bos=True)[0] == BOS
            assert int(np.count_nonzero(tokens == codec.step_token)) == roll.shape[0]
            back = np.zeros_like(roll)
            for n in codec.decode(tokens):
                back[int(round(n["start"])) : int(round(n["end"])), n["pitch"] - codec.min_pitch] = True
            np.testing.assert_array_equal(back, roll, err_msg=f"{s} piece {i}")


def test_jsb_stats(jsb_data: Path) -> None:
    st = data_stats(jsb_data)
    assert st["splits"]["train"]["pieces"] == 229
    assert st["vocab_size"] == GridCodec(steps_per_beat=1).vocab_size
    assert st["top_tokens"][0][0] == "STEP"


def test_token_data_rejects_unknown_split(jsb_data: Path) -> None:
    with pytest.raises(DataError, match="unknown split"):
        TokenData(jsb_data, "dev")


# --------------------------------------------------------------------------------------------
# a folder of MIDI files, good and bad
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_data(edge_cases: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("edge") / "data"
    manifest = prepare([str(edge_cases)], out, PerformanceCodec(), workers=2)
    return out, manifest


def test_edge_cases_prepare_lists_rejected_files(edge_data, edge_cases: Path) -> None:
    out, manifest = edge_data
    n_files = len(list(edge_cases.glob("*.mid")))
    assert manifest["files_seen"] == n_files
    kept = sum(manifest["splits"][s]["pieces"] for s in SPLITS)
    assert kept > 0 and kept + len(manifest["rejected"]) == n_files
    reasons = {Path(r["file"]).name: r["reason"] for r in manifest["rejected"]}
    for name, word in EDGE_REJECTS.items():
        assert name in reasons, f"{name} was not rejected"
        assert word.lower() in reasons[name].lower()
    assert all(r["reason"] and "\n" not in r["reason"] for r in manifest["rejected"])
    assert not any(str(edge_cases) in r["reason"] for r in manifest["rejected"])  # path said once, in "file"
    rows = (out / "rejected.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "file\treason"
    assert [tuple(r.split("\t")) for r in rows[1:]] == [(r["file"], r["reason"]) for r in manifest["rejected"]]
    # every kept file appears in exactly one split
    names = [n for s in SPLITS for n in _index(out, s)]
    assert len(names) == len(set(names)) == kept
    assert not set(names) & {r["file"] for r in manifest["rejected"]}


def test_edge_cases_token_data_is_valid(edge_data) -> None:
    out, manifest = edge_data
    for s in SPLITS:
        data = TokenData(out, s)
        assert len(data) == manifest["splits"][s]["pieces"]
        assert data.num_tokens == manifest["splits"][s]["tokens"]
        if len(data):
            assert int(np.asarray(data.tokens).max()) < data.codec.vocab_size
            assert np.all(data.lengths() > 0)


def test_prepare_twice_gives_identical_bytes(edge_data, edge_cases: Path, tmp_path: Path) -> None:
    out1, _ = edge_data
    out2 = tmp_path / "again"
    prepare([str(edge_cases)], out2, PerformanceCodec(), workers=2)
    a, b = _folder_bytes(out1), _folder_bytes(out2)
    assert sorted(a) == sorted(b)
    assert "manifest.json" in a and "train.tokens" in a
    for name in a:
        assert a[name] == b[name], f"{name} differs between two runs"


def test_prepare_replaces_its_own_output_atomically(edge_cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare([str(edge_cases)], out, PerformanceCodec(), workers=1)
    first = _folder_bytes(out)
    prepare([str(edge_cases)], out, PerformanceCodec(), workers=1)  # an existing data folder is replaced
    assert _folder_bytes(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no .partial folder left


def test_hash_split_is_stable_when_a_file_is_added(note_seq: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "songs"
    corpus.mkdir()
    sources = [note_seq / n for n in ("english1.mid", "english2.mid", "melody.mid", "example.mid")]
    for i in range(30):  # the split is chosen from the name, so copies under new names spread out
        shutil.copy(sources[i % len(sources)], corpus / f"song-{i:02d}.mid")
    before = tmp_path / "before"
    prepare([str(corpus)], before, PerformanceCodec(), workers=1)
    shutil.copy(note_seq / "english3.mid", corpus / "added.mid")
    after = tmp_path / "after"
    prepare([str(corpus)], after, PerformanceCodec(), workers=1)
    split_before = {n: s for s in SPLITS for n in _index(before, s)}
    split_after = {n: s for s in SPLITS for n in _index(after, s)}
    assert len(split_before) == 30 and len(set(split_before.values())) >= 2
    assert set(split_after) == set(split_before) | {"songs/added.mid"}
    for name, s in split_before.items():
        assert split_after[name] == s, f"{name} moved from {s} to {split_after[name]}"
    # and each piece's tokens are unchanged
    for s in SPLITS:
        old, new = TokenData(before, s), TokenData(after, s)
        new_names = _index(after, s)
        for i, name in enumerate(_index(before, s)):
            np.testing.assert_array_equal(old.piece(i), new.piece(new_names.index(name)))


# --------------------------------------------------------------------------------------------
# failures
# --------------------------------------------------------------------------------------------


def test_output_folder_that_is_not_ours_is_refused(edge_cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(DataError, match="not a musicrnn data folder"):
        prepare([str(edge_cases)], out, PerformanceCodec(), workers=1)
    assert (out / "thesis.tex").read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_output_that_is_a_file_is_refused(edge_cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        prepare([str(edge_cases)], out, PerformanceCodec(), workers=1)


def test_no_usable_piece_is_an_error_and_leaves_nothing(edge_cases: Path, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    for name in ("test-empty-file.mid", "test-not-a-midi-file.mid"):
        shutil.copy(edge_cases / name, src / name)
    with pytest.raises(DataError, match="no usable pieces"):
        prepare([str(src)], tmp_path / "out", PerformanceCodec(), workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_missing_source_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        prepare([str(tmp_path / "missing")], tmp_path / "out", GridCodec())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MIDI files found"):
        prepare([str(tmp_path / "empty")], tmp_path / "out", GridCodec())


def test_bad_split_fractions(edge_cases: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="sum to 1"):
        prepare([str(edge_cases)], tmp_path / "out", GridCodec(), split=(0.5, 0.1, 0.1))


def test_read_manifest_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="no manifest.json"):
        TokenData(tmp_path)


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_data_version_mismatch_names_both_versions(jsb_data: Path, tmp_path: Path) -> None:
    data = _copy_data(jsb_data, tmp_path / "old")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["format_version"] = 99
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError) as info:
        read_manifest(data)
    msg = str(info.value)
    assert "data format version 99" in msg and f"data format version {MANIFEST_FORMAT_VERSION}" in msg
    assert "\n" not in msg


def test_codec_version_mismatch_in_data_is_a_data_error(jsb_data: Path, tmp_path: Path) -> None:
    data = _copy_data(jsb_data, tmp_path / "old")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["codec"]["version"] = 99
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="codec format version 99"):
        TokenData(data, "train")


def test_corrupt_manifest_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt manifest"):
        read_manifest(tmp_path)


def test_truncated_tokens_are_detected(jsb_data: Path, tmp_path: Path) -> None:
    data = _copy_data(jsb_data, tmp_path / "cut")
    tokens = (data / "valid.tokens").read_bytes()
    (data / "valid.tokens").write_bytes(tokens[:-2])
    with pytest.raises(DataError, match="offsets do not match"):
        TokenData(data, "valid")


def test_music21_song_book_gives_one_piece_per_tune():
    pytest.importorskip("music21", reason="music21 corpora need the optional 'corpora' extra")
    from music21 import corpus

    from musicrnn.sources import find_items, load_item

    items = find_items("music21:oneills1850")
    assert items and all(i.kind == "music21" for i in items)
    tunes = load_item(items[0])
    assert len(tunes) > 10 and len({name for name, _ in tunes}) == len(tunes)
    assert all(len(p.notes) > 0 for _, p in tunes)
    assert not [i for i in find_items("music21:bach") if i.path.endswith(".rntxt")]
    assert corpus.getComposer("bach")
