"""``prepare`` encodes MIDI files in chunks, with one set of numpy calls per chunk: each piece
must come out byte for byte as it does alone (a chunk of one), and one bad file must stay the
only one rejected."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from musicrnn import corpus, midi
from musicrnn import ingest as ingest_mod
from musicrnn.codec import Codec, GridCodec, PerformanceCodec
from musicrnn.corpus import prepare
from musicrnn.ingest import chunk_items, encode_chunk
from musicrnn.notes import NOTE_DTYPE, NoteBatch, beats_to_seconds, beats_to_seconds_batch, make_notes
from musicrnn.sources import find_items, piece_tracks

from ingest import make_score  # benchmarks/ingest.py (benchmarks/ is on pytest's pythonpath)

CODECS = {
    "performance-seconds": PerformanceCodec(),
    "performance-beats": PerformanceCodec(time_unit="beats"),
    "grid": GridCodec(),
    "grid-restrikes": GridCodec(steps_per_beat=12, mark_restrikes=True),
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic songs as benchmarks/ingest.py makes them (tempo changes, drums), some moved a
    few beats later (so prepare moves them back by whole bars), and files that fail."""
    folder = tmp_path_factory.mktemp("synth")
    for i in range(10):
        score = make_score(np.random.default_rng([7, i]))
        if i % 3 == 1:
            score = score.shift_time(480 * (4 * i + 3))
        score.dump_midi(str(folder / f"song-{i:02d}.mid"))
    (folder / "song-03-empty.mid").write_bytes(b"")
    (folder / "song-05-text.mid").write_text("not a MIDI file")
    (folder / "song-07-truncated.mid").write_bytes((folder / "song-07.mid").read_bytes()[:300])
    return folder


def _sources(synth: Path, midi_corpus: Path) -> list:
    return find_items(str(synth)) + find_items(str(midi_corpus))


def _results(items: list, codec: Codec, size: int) -> list[tuple]:
    """Every piece as (name, tokens bytes or None, notes, reason), through chunks of ``size``."""
    codec_json = json.dumps(codec.to_dict(), sort_keys=True)
    out = []
    for chunk in chunk_items(items, size):
        for pieces in encode_chunk((chunk, codec_json)).items():
            out += [(n, None if t is None else t.astype("<u2").tobytes(), k, r) for n, t, k, r, _ in pieces]
    return out


@pytest.mark.parametrize("name", sorted(CODECS))
def test_chunks_give_each_file_its_own_tokens(name: str, synth: Path, midi_corpus: Path) -> None:
    items = _sources(synth, midi_corpus)
    alone = _results(items, CODECS[name], 1)
    assert _results(items, CODECS[name], 64) == alone
    assert _results(items, CODECS[name], 5) == alone
    kept = [r for r in alone if r[1] is not None]
    assert len(kept) > 40 and all(r[2] > 0 for r in kept)
    reasons = {Path(n).name: r for n, _, _, r in alone if r}
    assert reasons["song-03-empty.mid"] == "empty file (0 bytes)"
    assert reasons["song-05-text.mid"] == "not a MIDI file (no 'MThd' header)"
    assert reasons["song-07-truncated.mid"].startswith("corrupt MIDI")


# sha256 (first 16 hex digits) of every accepted piece of the shared MIDI corpus (name, notes,
# tokens) as the per-file encoder before chunking gave them: chunking changed no token. Rejection
# texts are left out: they quote the parser's own error messages, which change between releases.
BEFORE_CHUNKING = {
    "performance-seconds": "9ffeac052907b780",
    "performance-beats": "28c02007368dba26",
    "grid": "b8034fb6e698651c",
    "grid-restrikes": "d85a27afb1bc0234",
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_tokens_are_those_of_the_per_file_encoder(name: str, midi_corpus: Path) -> None:
    h = hashlib.sha256()
    accepted = [r for r in _results(find_items(str(midi_corpus)), CODECS[name], 64) if r[1] is not None]
    for piece, tokens, notes, _ in accepted:
        h.update(f"{piece}\t{notes}\n".encode())
        h.update(tokens)
    assert len(accepted) == 58 and h.hexdigest()[:16] == BEFORE_CHUNKING[name]


def test_a_parser_crash_rejects_only_its_file(synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = find_items(str(synth))
    codec = CODECS["performance-seconds"]
    alone = _results(items, codec, 1)
    parse = midi._parse

    def crash_on_song_04(path: Path):
        if path.name == "song-04.mid":
            raise RuntimeError("boom\nat line 1")
        return parse(path)

    monkeypatch.setattr(midi, "_parse", crash_on_song_04)
    got = _results(items, codec, 64)
    crashed = [i for i, r in enumerate(alone) if r[0].endswith("song-04.mid")]
    assert [r[3] for i, r in enumerate(got) if i in crashed] == ["unexpected RuntimeError: boom at line 1"]
    assert [r for i, r in enumerate(got) if i not in crashed] == [r for i, r in enumerate(alone) if i not in crashed]


def test_a_failing_chunk_is_encoded_file_by_file(synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = find_items(str(synth))
    codec = CODECS["grid"]
    alone = _results(items, codec, 1)
    encode_pieces = ingest_mod.encode_pieces

    def fail_on_chunks(codec, batch, *options):
        if len(batch) > 1:
            raise MemoryError("a chunk too large")
        return encode_pieces(codec, batch, *options)

    monkeypatch.setattr(ingest_mod, "encode_pieces", fail_on_chunks)
    assert _results(items, codec, 64) == alone


def test_prepare_output_does_not_depend_on_the_chunk_size(
    synth: Path, midi_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = []
    for size in (1, 64):
        monkeypatch.setattr(corpus, "CHUNK_FILES", size)
        out = tmp_path / f"data-{size}"
        prepare([str(synth), str(midi_corpus)], out, CODECS["performance-seconds"], workers=2)
        outputs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert outputs[0] == outputs[1]
    assert b"song-05-text.mid\tnot a MIDI file" in outputs[0]["rejected.tsv"]


def _random_pieces(rng: np.random.Generator, n: int, long: bool = False) -> list[np.ndarray]:
    """Notes with what real files hold: same-pitch notes starting together (with other
    velocities), overlaps, pitches out of range, NaN, negative times; empty pieces too."""
    pieces = []
    for _ in range(n):
        k = int(rng.integers(0, 40))
        start = np.round(rng.uniform(0, 2e6 if long else 30, k), 2)
        start[rng.random(k) < 0.1] = np.nan
        start[rng.random(k) < 0.05] = -1.0
        dup = rng.random(k) < 0.3  # a second note where the one before starts
        start[1:][dup[1:]] = start[:-1][dup[1:]]
        pieces.append(make_notes(
            pitch=rng.integers(0, 128, k), velocity=rng.integers(0, 140, k),
            start=start, end=start + rng.choice([0.0, 0.004, 0.25, 1.0, 3.0], k),
        ))
    return pieces


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("count", [3, 300, 600])  # int16 keys up to 256 pieces, packed keys up to 512
def test_codec_batch_equals_piece_by_piece(name: str, count: int) -> None:
    codec = CODECS[name]
    rng = np.random.default_rng(count)
    pieces = _random_pieces(rng, count, long=name == "performance-seconds" and count == 3)
    notes = np.concatenate(pieces)
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
    tokens, token_bounds = codec._encode_batch(notes["pitch"], notes["velocity"], notes["start"], notes["end"], bounds)
    for i, piece in enumerate(pieces):
        assert np.array_equal(tokens[token_bounds[i] : token_bounds[i + 1]], codec.encode(piece))
    assert token_bounds[-1] == len(tokens)


def test_seconds_of_several_tempo_maps_are_exact() -> None:
    rng = np.random.default_rng(1)
    maps = [[(0.0, 120.0)], [(0.0, 97.3), (3.25, 141.0), (10.0 / 3, 60.5)], [(0.0, 80.0), (8.0, 100.0)], [(0.0, 90.0)]]
    counts = [5, 40, 0, 7]
    beats = [np.concatenate([[0.0, 3.25, 8.0], rng.uniform(0, 20, k - 3)]) if k else np.zeros(0) for k in counts]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    got = beats_to_seconds_batch(maps, bounds, np.stack([np.concatenate(beats)] * 2))
    want = np.concatenate([beats_to_seconds(t, b) for t, b in zip(maps, beats)])
    assert got.shape == (2, bounds[-1]) and np.array_equal(got[0], want) and np.array_equal(got[1], want)


def test_a_pieces_length_in_seconds_is_its_tempo_maps_to_the_bit() -> None:
    """index.tsv's seconds come from a plain-Python pass over each piece's tempo map (a numpy
    call per piece cost more than its arithmetic): the bits of ``beats_to_seconds``, at tempo
    changes, between and after them."""
    rng = np.random.default_rng(2)
    maps = [[(0.0, 120.0)], [(0.0, 97.3), (3.25, 141.0), (10.0 / 3, 60.5)], [(0.0, 80.0), (8.0, 100.0)]]
    maps += [[(0.0, 90.0)] + [(float(b), float(t)) for b, t in zip(np.sort(rng.uniform(0.1, 30, 9)), rng.uniform(30, 240, 9))]]
    for tempos in maps:
        for beat in [0.0, 3.25, 10.0 / 3, 8.0, *[float(t[0]) for t in tempos], *rng.uniform(0, 40, 30).tolist()]:
            assert ingest_mod._seconds_at(tempos, beat) == float(beats_to_seconds(tempos, beat))


def test_track_report_counts_each_track_with_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracks a piece reports (name, drums, kept): only tracks with notes, a note beyond the
    named tracks under "(unnamed)", none for a piece without track names."""
    rows = [(0, False, True), (0, False, False), (2, True, False), (5, False, True),  # piece 0: names a, b, c
            (1, False, True),  # piece 1: no names
            (0, False, True), (1, False, False)]  # piece 2: names "  x  y ", ""
    cols = {name: np.zeros(len(rows), NOTE_DTYPE[name]) for name in NOTE_DTYPE.names}
    cols["track"] = np.array([r[0] for r in rows], np.int16)
    cols["is_drum"] = np.array([r[1] for r in rows])
    batch = NoteBatch(cols, np.array([0, 4, 5, 7]), [None] * 3, [["a", "b", "c"], [], ["  x  y ", ""]])
    got = piece_tracks(batch, np.array([r[2] for r in rows]))
    assert got == [[("a", False, True), ("c", True, False), ("(unnamed)", False, True)], [],
                   [("x y", False, True), ("(unnamed)", False, False)]]


def test_a_lone_file_reads_as_before(note_seq: Path, tmp_path: Path) -> None:
    """``load_midi`` (one file, the batch path underneath) still reports clear reasons."""
    path = next(iter(sorted(note_seq.glob("*.mid"))))
    assert len(midi.load_midi(path).notes) > 0
    shutil.copy(path, tmp_path / "x.mid")
    (tmp_path / "x.mid").write_bytes(b"MThd")
    with pytest.raises(midi.MidiError, match="truncated header"):
        midi.load_midi(tmp_path / "x.mid")
    with pytest.raises(midi.MidiError, match="file not found"):
        midi.load_midi(tmp_path / "missing.mid")
    with pytest.raises(midi.MidiError, match="is a folder"):
        midi.load_midi(tmp_path)
