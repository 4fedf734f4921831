"""Fuzzing every reader of untrusted input: MIDI files, piano-roll .mat files, token sequences
(the codecs' decoders), data-folder manifests and checkpoints.

The property is the same everywhere: the input either loads into something valid, or the
project's own error comes back with a one-line message; never another exception, never a hang
(a time guard fails the example), never a crash of the process.

Example counts are small so CI stays fast; for a long run scale them, e.g.::

    MUSICRNN_FUZZ_SCALE=50 python -m pytest -q tests/test_fuzz.py

(the counts of a long run are recorded in docs/reliability.md). scripts/fuzz_atheris.py runs
the same targets under atheris (coverage-guided) where it is installed.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import pickle
import shutil
import signal
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from musicrnn.checkpoint import load_checkpoint, save_checkpoint
from musicrnn.codec import GridCodec, PerformanceCodec
from musicrnn.config import ModelConfig
from musicrnn.corpus import TokenData, data_stats, prepare, read_manifest
from musicrnn.errors import CheckpointError, DataError, MidiError
from musicrnn.midi import MAX_PIECE_BEATS, load_midi, write_midi
from musicrnn.model import MusicRNN
from musicrnn.notes import NOTE_DTYPE, Piece, make_notes
from musicrnn.sources import find_items, mat_rolls

from helpers.paths import MIDI_CORPUS

SCALE = max(1, int(os.environ.get("MUSICRNN_FUZZ_SCALE", "1")))
TIME_LIMIT_S = 10.0  # one example; a parser that takes this long on a small file is hanging


def fuzz_settings(n: int):
    return settings(max_examples=n * SCALE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT_S):
    """Fail (TimeoutError) a Python-level hang; a hang inside C code that ignores signals
    ends the whole process after 3x the limit with every thread's traceback (faulthandler)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s: a hang")

    faulthandler.dump_traceback_later(seconds * 3, exit=True)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="musicrnn-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, repr(msg)
    return msg


# ============================================================================================
# MIDI files
# ============================================================================================


def _synthetic_midi() -> bytes:
    """A small real MIDI file made here (a seed with a tempo change and 3/4, which the corpus files lack)."""
    rows = [(60 + (i * 7) % 24, 40 + i, i * 0.5, i * 0.5 + 0.75) for i in range(24)]
    piece = Piece(make_notes(rows), tempos=[(0.0, 100.0), (4.0, 140.0)], time_signatures=[(0.0, 3, 4)])
    with tempfile.TemporaryDirectory() as d:
        write_midi(piece, Path(d) / "s.mid")
        return (Path(d) / "s.mid").read_bytes()


SEED_FILES = sorted(p.read_bytes() for p in MIDI_CORPUS.rglob("*") if p.is_file() and p.stat().st_size < 48_000)
SEED_FILES.append(_synthetic_midi())

# (operation, where in the file 0..1, bytes); point changes are the most common, as in a damaged file
mutation = st.tuples(st.sampled_from(["set", "set", "flip", "flip", "insert", "delete", "varint", "header", "truncate"]),
                     st.floats(0, 1), st.binary(min_size=1, max_size=8))
HEADER = 22  # MThd chunk (14 bytes) and the first MTrk chunk's header (8)
HEADER_FIELDS = [*range(4, 14), *range(18, 22)]  # all but the chunk names


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, where, payload in ops:
        if op == "header":  # a field of the header chunks: length, format, track count, division, track length
            i = min(HEADER_FIELDS[int(where * (len(HEADER_FIELDS) - 1))], max(len(b) - 1, 0))
        else:  # the body, where most of a file is
            lo = min(HEADER, len(b))
            i = min(lo + int(where * (len(b) - lo)), max(len(b) - 1, 0))
        if op in ("set", "header") and b:
            b[i] = payload[0]
        elif op == "flip" and b:
            b[i] ^= 1 << (payload[0] % 8)
        elif op == "insert":
            b[i:i] = payload
        elif op == "delete" and b:
            del b[i:i + 1 + payload[0] % 16]
        elif op == "truncate":
            b = b[:i]
        elif op == "varint":  # a long run of continuation bytes: delta times of 10^12 beats and worse
            b[i:i] = b"\xff" * (1 + payload[0] % 12) + bytes([payload[-1] & 0x7F])
    return bytes(b)


def _header(fmt: int, ntracks: int, division: int, length: int = 6) -> bytes:
    return b"MThd" + struct.pack(">IHHH", length, fmt, ntracks, division)


def _track(body: bytes, length: int | None = None) -> bytes:
    return b"MTrk" + struct.pack(">I", len(body) if length is None else length) + body


def _varint(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


# an event: a delta time (sometimes huge), then a plausible or garbage message
channel_message = st.tuples(st.sampled_from([0x80, 0x90, 0x90, 0xA0, 0xB0, 0xE0]), st.integers(0, 15),
                            st.integers(0, 127), st.integers(0, 127)).map(lambda m: bytes([m[0] | m[1], m[2], m[3]]))
midi_event = st.tuples(
    st.one_of(st.integers(0, 960), st.integers(0, 0x0FFFFFFF)),
    st.one_of(
        channel_message, channel_message, channel_message,
        st.tuples(st.sampled_from([0x51, 0x58, 0x59, 0x2F, 0x01, 0x7F]), st.binary(max_size=6))
        .map(lambda m: bytes([0xFF, m[0]]) + _varint(len(m[1])) + m[1]),
        st.binary(min_size=1, max_size=6),  # garbage: running status, bad status bytes, sysex
    ),
)


@st.composite
def structured_midi(draw) -> bytes:
    """A well-framed file (header and track chunks) holding random, often invalid, events."""
    tracks = []
    for _ in range(draw(st.integers(0, 3))):
        body = b"".join(_varint(dt) + msg for dt, msg in draw(st.lists(midi_event, max_size=40)))
        if draw(st.booleans()):
            body += b"\x00\xff\x2f\x00"
        length = draw(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))
        tracks.append(_track(body, length))
    division = draw(st.one_of(st.integers(1, 960), st.integers(0, 0xFFFF)))
    header = _header(draw(st.integers(0, 3)), draw(st.integers(0, 0xFFFF)), division,
                     draw(st.sampled_from([6, 6, 6, 0, 7, 0xFFFFFFFF])))
    return header + b"".join(tracks)


mutated_midi = st.tuples(st.sampled_from(SEED_FILES), st.lists(mutation, min_size=1, max_size=6)).map(lambda t: mutate(*t))
midi_bytes = st.one_of(
    mutated_midi, mutated_midi, mutated_midi,  # weighted: damaged real files reach deepest
    structured_midi(),
    st.binary(max_size=512),
    st.binary(max_size=512).map(lambda b: b"MThd" + b),
    st.binary(max_size=512).map(lambda b: _header(1, 1, 480) + b),
)


def _reason(exc: BaseException) -> str:
    """The kind of an error message (its first words after the path), for hypothesis statistics."""
    text = str(exc).split(": ", 1)[-1]
    return " ".join(text.split()[:3])


def check_midi_bytes(data: bytes, folder: Path) -> Piece | None:
    """Load ``data`` as a MIDI file: a valid piece that writes and reads back, or a one-line MidiError."""
    path = folder / "fuzz.mid"
    path.write_bytes(data)
    with time_limit():
        try:
            piece = load_midi(path)
        except MidiError as exc:
            assert one_line(exc).startswith(f"{path}: ")
            event(f"MidiError: {_reason(exc)}")
            return None
    event("loaded")
    notes = piece.notes
    assert notes.dtype == NOTE_DTYPE and len(notes) > 0
    assert np.all(np.isfinite(notes["start"])) and np.all(notes["end"] > notes["start"]) and np.all(notes["start"] >= 0)
    assert float(notes["end"].max()) <= MAX_PIECE_BEATS
    assert np.all((notes["pitch"] >= 0) & (notes["pitch"] <= 127))
    assert np.all((notes["velocity"] >= 1) & (notes["velocity"] <= 127))
    assert piece.tempos[0][0] == 0.0 and all(bpm > 0 and np.isfinite(bpm) for _, bpm in piece.tempos)
    assert piece.time_signatures[0][0] == 0.0
    with time_limit():
        write_midi(piece, folder / "again.mid")
        again = load_midi(folder / "again.mid")
        # every codec turns it into a bounded number of tokens without blowing up memory
        PerformanceCodec(time_unit="beats").encode_piece(piece)
        GridCodec(steps_per_beat=4).encode_piece(piece)
    assert len(again.notes) == len(notes)
    a = np.sort(notes[["pitch", "start"]], order=["pitch", "start"])
    b = np.sort(again.notes[["pitch", "start"]], order=["pitch", "start"])
    assert np.array_equal(a["pitch"], b["pitch"])
    assert np.allclose(a["start"], b["start"], atol=0.5 / 480 + 1e-9)
    return piece


@fuzz_settings(300)
@given(data=midi_bytes)
def test_fuzzed_midi_loads_or_fails_in_one_line(data: bytes, scratch: Path) -> None:
    check_midi_bytes(data, scratch)


def test_corrupt_delta_time_cannot_blow_up_memory(tmp_path: Path) -> None:
    """Found by fuzzing: one corrupt varint put a note at beat ~10^12 and the grid codec then
    asked for hundreds of GiB (or, for some values, quietly took several GiB)."""
    note_on, note_off = b"\x00\x90\x3c\x40", b"\x80\x3c\x00"
    for delta in (b"\xff\xff\xff\x7f", b"\xff" * 40 + b"\x00"):  # 2.7e8 ticks; a 287-bit number (mido reads it)
        path = tmp_path / "long.mid"
        path.write_bytes(_header(1, 1, 1) + _track(note_on + delta + note_off + b"\x00\xff\x2f\x00"))
        with pytest.raises(MidiError, match="too long: a note ends at beat"):
            load_midi(path)
    ok = tmp_path / "ok.mid"  # a long but sane piece still loads
    ok.write_bytes(_header(1, 1, 1) + _track(note_on + _varint(MAX_PIECE_BEATS) + note_off + b"\x00\xff\x2f\x00"))
    assert load_midi(ok).duration_beats == MAX_PIECE_BEATS


# ============================================================================================
# codecs: any token sequence decodes to valid notes and a MIDI file that reads back
# ============================================================================================

codecs = st.one_of(
    st.builds(lambda unit, steps, shift, bins: PerformanceCodec(time_unit=unit, steps_per_unit=steps,
                                                                 max_shift_steps=shift, velocity_bins=bins),
              st.sampled_from(["seconds", "beats"]), st.sampled_from([None, 4, 24, 1000]),
              st.sampled_from([None, 1, 5]), st.sampled_from([0, 1, 32, 127])),
    st.builds(lambda spb, restrike, lo, span: GridCodec(steps_per_beat=spb, mark_restrikes=restrike,
                                                         min_pitch=lo, max_pitch=min(127, lo + span)),
              st.sampled_from([1, 2, 4, 12]), st.booleans(), st.integers(0, 127), st.integers(0, 127)),
)


@st.composite
def codec_and_any_tokens(draw):
    codec = draw(codecs)
    token = st.one_of(st.integers(0, codec.vocab_size - 1), st.integers(0, codec.vocab_size - 1),
                      st.integers(-2**70, 2**70), st.sampled_from([-1, codec.vocab_size, 2**63, -2**63 - 1]))
    as_array = draw(st.booleans())
    tokens = draw(st.lists(token, max_size=400))
    if as_array:  # an int64 array, as the samplers hand over (values beyond int64 cannot be in one)
        tokens = np.asarray([t for t in tokens if -2**63 <= t < 2**63], dtype=np.int64)
    return codec, tokens


@fuzz_settings(200)
@given(case=codec_and_any_tokens(), bpm=st.floats(20, 400))
def test_any_token_sequence_decodes_to_a_midi_file_that_reads_back(case, bpm: float, scratch: Path) -> None:
    codec, tokens = case
    with time_limit():
        piece = codec.decode_piece(tokens, bpm=bpm)
    notes = piece.notes
    assert notes.dtype == NOTE_DTYPE
    assert np.all(notes["end"] > notes["start"]) and np.all(notes["start"] >= 0)
    assert np.all((notes["pitch"] >= codec.min_pitch) & (notes["pitch"] <= codec.max_pitch))
    assert np.all((notes["velocity"] >= 1) & (notes["velocity"] <= 127))
    path = scratch / "decoded.mid"
    with time_limit():
        write_midi(piece, path)
        back = load_midi(path, require_notes=False)
    assert len(back.notes) == len(notes)
    key = ["pitch", "start"]
    a, b = np.sort(notes[key], order=key), np.sort(back.notes[key], order=key)
    assert np.array_equal(a["pitch"], b["pitch"])
    assert np.allclose(a["start"], b["start"], atol=0.5 / 480 + 1e-9)
    assert np.array_equal(np.sort(notes["velocity"]), np.sort(back.notes["velocity"]))


def test_decoders_ignore_ids_beyond_int64() -> None:
    """Found by fuzzing: a Python int beyond int64 made decode raise OverflowError."""
    for codec in (PerformanceCodec(), GridCodec()):
        valid = [1, codec.shift0 if isinstance(codec, PerformanceCodec) else codec.step_token]  # a note, then time
        notes = codec.decode([valid[0], 2**70, -2**70, codec.vocab_size, -1, valid[1]])
        assert len(notes) == 1 and notes["pitch"][0] == codec.min_pitch
        assert np.array_equal(notes, codec.decode(valid))


# ============================================================================================
# piano-roll .mat files (parsed in a child process: scipy's reader can crash on crafted files)
# ============================================================================================


def _mat_bytes(cells: dict | None = None, compress: bool = False) -> bytes:
    import scipy.io

    rng = np.random.default_rng(0)
    if cells is None:
        cell = np.empty(2, dtype=object)
        cell[0] = (rng.random((6, 88)) > 0.8).astype(np.uint8)
        cell[1] = np.zeros((3, 88))
        cells = {"traindata": cell, "validdata": cell, "testdata": cell}
    bio = io.BytesIO()
    scipy.io.savemat(bio, cells, do_compression=compress)
    return bio.getvalue()


def check_mat_bytes(data: bytes, folder: Path) -> None:
    path = folder / "fuzz.mat"
    path.write_bytes(data)
    with time_limit(120):
        try:
            items = find_items(str(path))
            rolls = {s: mat_rolls(path, s) for s in ("train", "valid", "test")}
        except DataError as exc:
            assert one_line(exc).startswith(str(path))
            event(f"DataError: {_reason(exc)}")
            return
    event("loaded")
    assert len(items) == sum(len(r) for r in rolls.values())
    for rs in rolls.values():
        for roll in rs:
            assert roll.dtype == bool and roll.ndim == 2 and roll.shape[1] == 88


def test_mat_file_that_crashes_scipy_is_a_data_error(tmp_path: Path) -> None:
    """Found by fuzzing: one changed byte (a data element's type code) makes scipy.io.loadmat
    (1.17) die with SIGSEGV; musicrnn parses .mat files in a child process, so it is an error here."""
    data = bytearray(_mat_bytes({"traindata": np.zeros((1, 2))}))
    i = data.index(struct.pack("<II", 9, 16))  # the tag of the array's data: miDOUBLE, 16 bytes
    data[i] = 0  # an element type code scipy does not check before it indexes a table with it
    path = tmp_path / "crash.mat"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        find_items(str(path))
    msg = one_line(info.value)
    assert msg.startswith(str(path)) and "not a readable MATLAB piano-roll file" in msg


BAD_MATS = {
    "missing split": lambda: {"traindata": np.zeros((1,)), "validdata": np.zeros((1,))},
    "rolls of 87 keys": lambda: {k: _cells(np.zeros((4, 87))) for k in ("traindata", "validdata", "testdata")},
    "3-d rolls": lambda: {k: _cells(np.zeros((2, 4, 88))) for k in ("traindata", "validdata", "testdata")},
    "text instead of rolls": lambda: {k: _cells("hello") for k in ("traindata", "validdata", "testdata")},
    "complex rolls": lambda: {k: _cells(np.ones((3, 88)) * 1j) for k in ("traindata", "validdata", "testdata")},
    "struct rolls": lambda: {k: _cells({"a": np.zeros((3, 88))}) for k in ("traindata", "validdata", "testdata")},
    "a plain matrix, not cells": lambda: {k: np.zeros((5, 88)) for k in ("traindata", "validdata", "testdata")},
}


def _cells(value) -> np.ndarray:
    cell = np.empty(1, dtype=object)
    cell[0] = value
    return cell


@pytest.mark.parametrize("name", sorted(BAD_MATS))
def test_mat_files_of_the_wrong_shape_are_data_errors(name: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.mat"
    path.write_bytes(_mat_bytes(BAD_MATS[name]()))
    with pytest.raises(DataError) as info:
        find_items(str(path))
        mat_rolls(path, "train")
    assert one_line(info.value).startswith(str(path))


def test_garbage_mat_files_are_data_errors(tmp_path: Path) -> None:
    for i, data in enumerate([b"", b"MATLAB 5.0 MAT-file" + b"\0" * 200, os.urandom(300), b"\x89HDF\r\n\x1a\n" + b"\0" * 600]):
        path = tmp_path / f"g{i}.mat"
        path.write_bytes(data)
        with pytest.raises(DataError) as info:
            find_items(str(path))
        assert one_line(info.value).startswith(str(path))


@pytest.mark.slow
@fuzz_settings(40)
@given(data=st.one_of(
    st.tuples(st.sampled_from([_mat_bytes(), _mat_bytes(compress=True)]), st.lists(mutation, min_size=1, max_size=6))
    .map(lambda t: mutate(*t)),
    st.binary(max_size=400).map(lambda b: _mat_bytes()[:128] + b),
))
def test_fuzzed_mat_files_load_or_fail_in_one_line(data: bytes, scratch: Path) -> None:
    check_mat_bytes(data, scratch)


# ============================================================================================
# manifests and token files of a prepared data folder
# ============================================================================================


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("midi")
    rng = np.random.default_rng(1)
    for i in range(12):
        rows = [(int(rng.integers(48, 84)), 80, j * 0.5, j * 0.5 + 0.5) for j in range(int(rng.integers(4, 20)))]
        write_midi(Piece(make_notes(rows)), src / f"p{i:02d}.mid")
    out = tmp_path_factory.mktemp("data") / "d"
    prepare([str(src)], out, GridCodec(steps_per_beat=2), split=(0.5, 0.25, 0.25), workers=1)
    return out


def _open_all(folder: Path) -> None:
    """Everything that reads a data folder: it works (and gives valid tokens) or raises DataError."""
    with time_limit():
        try:
            read_manifest(folder)
            for split in ("train", "valid", "test"):
                data = TokenData(folder, split)
                for i in range(len(data)):
                    toks = data.piece(i, with_bos=True)
                    assert toks.min(initial=0) >= 0 and toks.max(initial=0) < data.codec.vocab_size
            data_stats(folder)
            event("loaded")
        except DataError as exc:
            assert one_line(exc).startswith(str(folder))
            event(f"DataError: {_reason(exc)}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def manifest_edits(draw, manifest: dict):
    """A manifest with some values replaced by random JSON, or deleted."""
    m = json.loads(json.dumps(manifest))
    paths = [p for p in _paths(m) if p]
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths))
        parent = m
        try:
            for k in path[:-1]:
                parent = parent[k]
            if draw(st.booleans()):
                parent[path[-1]] = draw(json_values)
            elif isinstance(parent, dict):
                del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or replaced this path
    return m


@fuzz_settings(150)
@given(data=st.data())
def test_fuzzed_manifests_load_or_fail_in_one_line(data, data_folder: Path, scratch: Path) -> None:
    folder = scratch / "data"
    if not folder.exists():
        shutil.copytree(data_folder, folder)
    original = json.loads((data_folder / "manifest.json").read_text())
    kind = data.draw(st.sampled_from(["edit", "bytes", "text"]))
    if kind == "edit":
        text = json.dumps(data.draw(manifest_edits(original)))
    elif kind == "bytes":
        text = mutate((data_folder / "manifest.json").read_bytes(), data.draw(st.lists(mutation, min_size=1, max_size=6)))
    else:
        text = data.draw(st.sampled_from(["", "[]", "null", "1e999", "[" * 100_000 + "]" * 100_000, '{"format": "musicrnn-data"}']))
    (folder / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    _open_all(folder)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")  # numpy parsing a damaged .npy header
@fuzz_settings(120)
@given(name=st.sampled_from(["train.tokens", "train.offsets.npy", "valid.offsets.npy", "test.tokens"]),
       ops=st.lists(mutation, min_size=1, max_size=6))
def test_fuzzed_token_files_load_or_fail_in_one_line(name: str, ops, data_folder: Path, scratch: Path) -> None:
    folder = scratch / "tokens"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(data_folder, folder)
    (folder / name).write_bytes(mutate((folder / name).read_bytes(), ops))
    _open_all(folder)


def test_offsets_with_a_damaged_npy_header_are_a_data_error(data_folder: Path, tmp_path: Path) -> None:
    """Found by fuzzing: one flipped bit in the .npy header makes numpy raise tokenize.TokenError."""
    folder = shutil.copytree(data_folder, tmp_path / "d")
    raw = bytearray((folder / "train.offsets.npy").read_bytes())
    raw[raw.index(b"(")] = ord(" ")  # the shape tuple loses its "(": the header no longer parses
    (folder / "train.offsets.npy").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train.offsets.npy is corrupt"):
        TokenData(folder, "train")


def test_manifest_version_errors_name_both_versions(data_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(data_folder, tmp_path / "d")
    manifest = json.loads((folder / "manifest.json").read_text())
    for version, shown in ((2, "data format version 2 "), ("1", "data format version '1' "), (None, "version None ")):
        (folder / "manifest.json").write_text(json.dumps({**manifest, "format_version": version}))
        with pytest.raises(DataError) as info:
            read_manifest(folder)
        msg = one_line(info.value)
        assert shown in msg and "(data format version 1)" in msg, msg
    codec = {**manifest["codec"], "version": 7}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "codec": codec}))
    with pytest.raises(DataError) as info:
        TokenData(folder, "train")
    msg = one_line(info.value)
    assert "codec format version 7" in msg and "codec format version 1" in msg, msg


# ============================================================================================
# checkpoints
# ============================================================================================


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ck") / "m.pt"
    codec = GridCodec(steps_per_beat=2)
    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(codec.vocab_size, hidden=8, embedding=4, layers=1, attention=2))
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(path, model, codec, meta={"step": 3}, optimizer=opt.state_dict(), trainer={"step": 3})
    return path.read_bytes()


def check_checkpoint_file(path: Path) -> None:
    with time_limit():
        try:
            ck = load_checkpoint(path)
        except CheckpointError as exc:
            assert one_line(exc).startswith(str(path))
            event(f"CheckpointError: {_reason(exc)}")
            return
        # it loaded: then it is a usable model
        logits, _ = ck.model.step(torch.tensor([0]))
    event("loaded")
    assert logits.shape == (1, ck.codec.vocab_size) and bool(torch.isfinite(logits).all())
    assert isinstance(ck.meta, dict)


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _rezip(members: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_STORED) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return bio.getvalue()


@fuzz_settings(200)
@given(data=st.data())
def test_fuzzed_checkpoint_bytes_load_or_fail_in_one_line(data, checkpoint_bytes: bytes, scratch: Path) -> None:
    kind = data.draw(st.sampled_from(["mutate", "truncate", "random", "member", "zip-garbage"]))
    raw = checkpoint_bytes
    if kind == "mutate":
        out = mutate(raw, data.draw(st.lists(mutation, min_size=1, max_size=6)))
    elif kind == "truncate":
        out = raw[: data.draw(st.integers(0, len(raw)))]
    elif kind == "random":
        out = data.draw(st.binary(max_size=2048))
    elif kind == "member":  # a valid zip whose pickle or tensor data is damaged
        members = _zip_members(raw)
        name = data.draw(st.sampled_from(sorted(members)))
        members[name] = mutate(members[name], data.draw(st.lists(mutation, min_size=1, max_size=4)))
        out = _rezip(members)
    else:  # a zip of random members
        names = data.draw(st.lists(st.sampled_from(["m/data.pkl", "m/byteorder", "m/version", "m/data/0", "m/.format_version",
                                                   "data.pkl", "x"]), max_size=5, unique=True))
        out = _rezip({n: data.draw(st.binary(max_size=200)) for n in names})
    path = scratch / "fuzz.pt"
    path.write_bytes(out)
    check_checkpoint_file(path)


# values the weights-only unpickler accepts, put where the checkpoint's parts go
safe_values = st.one_of(
    json_values,
    st.builds(lambda shape: torch.zeros(shape), st.lists(st.integers(0, 5), max_size=3)),
    st.just(torch.tensor([float("nan")])),
    st.builds(lambda v: {"hidden": v, "vocab_size": 90}, st.one_of(st.integers(-5, 10**9), st.text(max_size=3))),
)


@fuzz_settings(200)
@given(data=st.data())
def test_fuzzed_checkpoint_contents_load_or_fail_in_one_line(data, checkpoint_bytes: bytes, scratch: Path) -> None:
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(raw) + ["model_config.hidden", "model_config.vocab_size",
                                                        "model_config.arch", "codec.type", "codec.steps_per_beat",
                                                        "codec.min_pitch", "model.head.weight", "model.embed.weight"]))
        target, _, sub = key.partition(".")
        value = data.draw(safe_values)
        if sub and isinstance(raw.get(target), dict):
            raw[target][sub] = value
        elif data.draw(st.booleans()):
            raw.pop(target, None)
        else:
            raw[target] = value
    path = scratch / "edited.pt"
    torch.save(raw, path)
    check_checkpoint_file(path)


def test_checkpoint_with_a_huge_config_is_refused_before_allocating(checkpoint_bytes: bytes, tmp_path: Path) -> None:
    """Crafted config (hidden=10^7) must be refused by shape, not by building a 10^14-weight model."""
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    raw["model_config"]["hidden"] = 10**7
    torch.save(raw, tmp_path / "huge.pt")
    with time_limit(5):
        with pytest.raises(CheckpointError, match="weights do not fit the model config"):
            load_checkpoint(tmp_path / "huge.pt")
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    raw["codec"]["steps_per_beat"] = 10**9  # a grid of 10^9 steps per beat would hang live play
    torch.save(raw, tmp_path / "grid.pt")
    with pytest.raises(CheckpointError, match="steps per beat"):
        load_checkpoint(tmp_path / "grid.pt")


def test_checkpoint_with_nan_weights_is_refused(checkpoint_bytes: bytes, tmp_path: Path) -> None:
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    raw["model"]["head.bias"][3] = float("nan")
    torch.save(raw, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or infinity"):
        load_checkpoint(tmp_path / "nan.pt")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("where", ["top", "weights"])
def test_checkpoint_that_runs_code_is_refused_in_either_format(legacy: bool, where: str, checkpoint_bytes: bytes,
                                                               tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    if where == "top":
        raw["payload"] = _Evil(marker)
    else:
        raw["model"]["head.bias"] = _Evil(marker)
    path = tmp_path / "evil.pt"
    torch.save(raw, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = one_line(info.value)
    assert ("refused to load" in msg) if not legacy else ("not a torch zip archive" in msg), msg
    assert not marker.exists()
    # and a raw pickle (no torch at all) is refused the same way
    path.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_from_another_version_or_codec_names_both(checkpoint_bytes: bytes, tmp_path: Path) -> None:
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    raw["format_version"], raw["musicrnn_version"] = 2, "9.9.9"
    torch.save(raw, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "v2.pt")
    msg = one_line(info.value)
    assert "checkpoint format version 2 (musicrnn 9.9.9)" in msg and "(checkpoint format version 1)" in msg, msg
    raw = torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)
    raw["codec"]["version"] = 5
    torch.save(raw, tmp_path / "c5.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "c5.pt")
    msg = one_line(info.value)
    assert "codec format version 5" in msg and "codec format version 1" in msg, msg


def test_resume_from_a_model_only_or_other_codec_checkpoint_is_a_clear_error(data_folder: Path, tmp_path: Path) -> None:
    from musicrnn.config import TrainConfig
    from musicrnn.train import train

    cfg = TrainConfig.from_dict(dict(hidden=8, embedding=4, layers=1, batch_size=2, seq_len=8, max_steps=2, device="cpu", threads=1))
    run = tmp_path / "run"
    data_codec = TokenData(data_folder, "train").codec
    save_checkpoint(run / "last.pt", MusicRNN(ModelConfig(data_codec.vocab_size, hidden=8, embedding=4, layers=1)), data_codec)
    with pytest.raises(CheckpointError) as info:  # e.g. an exported model renamed to last.pt
        train(data_folder, run, cfg, resume=True)
    assert "holds no training state" in one_line(info.value)
    other = PerformanceCodec()
    save_checkpoint(run / "last.pt", MusicRNN(ModelConfig(other.vocab_size, hidden=8, embedding=4, layers=1)), other)
    with pytest.raises(CheckpointError) as info:
        train(data_folder, run, cfg, resume=True)
    msg = one_line(info.value)
    assert "trained with PerformanceCodec(" in msg and "prepared with GridCodec(" in msg, msg
