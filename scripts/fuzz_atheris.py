"""Coverage-guided fuzzing with atheris (libFuzzer for Python) of the readers of untrusted input.
The same property as tests/test_fuzz.py: the input loads into something valid, or the project's
own error comes back; any other exception (or a crash, or a hang past -timeout) is a finding,
and libFuzzer writes the input that caused it to ./crash-* (or ./timeout-*).

    pip install atheris            # binary wheels for CPython 3.11 on x86-64 Linux
    python scripts/fuzz_atheris.py midi -atheris_runs=20000 [CORPUS_DIR ...]
    python scripts/fuzz_atheris.py checkpoint -max_total_time=300

Targets: midi (load_midi, then write and read back), tokens (bytes -> token ids -> decode ->
MIDI file), manifest (manifest.json of a small prepared folder), checkpoint (load_checkpoint).
The .mat reader is not a target here: musicrnn parses .mat files in a child process because
scipy's reader crashes on crafted files (tests/test_fuzz.py covers it), and a process per input
is too slow for coverage-guided fuzzing. Any argument after the target goes to libFuzzer.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import numpy as np

    from musicrnn.checkpoint import load_checkpoint
    from musicrnn.codec import GridCodec, PerformanceCodec
    from musicrnn.corpus import TokenData, prepare, read_manifest
    from musicrnn.errors import CheckpointError, DataError, MidiError
    from musicrnn.midi import load_midi, write_midi
    from musicrnn.notes import Piece, make_notes

WORK = Path(tempfile.mkdtemp(prefix="musicrnn-atheris-"))
CODECS = [PerformanceCodec(), PerformanceCodec(time_unit="beats"), GridCodec(), GridCodec(mark_restrikes=True)]


def midi(data: bytes) -> None:
    path = WORK / "in.mid"
    path.write_bytes(data)
    try:
        piece = load_midi(path)
    except MidiError as exc:
        assert "\n" not in str(exc)
        return
    write_midi(piece, WORK / "out.mid")
    assert len(load_midi(WORK / "out.mid").notes) == len(piece.notes)


def tokens(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    codec = CODECS[fdp.ConsumeIntInRange(0, len(CODECS) - 1)]
    ids = [fdp.ConsumeIntInRange(-2, codec.vocab_size + 2) for _ in range(fdp.ConsumeIntInRange(0, 500))]
    piece = codec.decode_piece(ids, bpm=fdp.ConsumeFloatInRange(20.0, 400.0))
    notes = piece.notes
    assert np.all(notes["end"] > notes["start"]) and np.all((notes["velocity"] >= 1) & (notes["velocity"] <= 127))
    write_midi(piece, WORK / "tok.mid")
    assert len(load_midi(WORK / "tok.mid", require_notes=False).notes) == len(notes)


_DATA: Path | None = None


def manifest(data: bytes) -> None:
    global _DATA
    if _DATA is None:
        src = WORK / "src"
        src.mkdir()
        for i in range(6):
            write_midi(Piece(make_notes([(60 + i, 80, j * 0.5, j * 0.5 + 0.5) for j in range(8)])), src / f"{i}.mid")
        _DATA = WORK / "data"
        prepare([str(src)], _DATA, GridCodec(steps_per_beat=2), split=(0.5, 0.25, 0.25), workers=1)
    (_DATA / "manifest.json").write_bytes(data)
    try:
        read_manifest(_DATA)
        for split in ("train", "valid", "test"):
            TokenData(_DATA, split)
    except DataError as exc:
        assert "\n" not in str(exc)


def checkpoint(data: bytes) -> None:
    path = WORK / "in.pt"
    path.write_bytes(data)
    try:
        load_checkpoint(path)
    except CheckpointError as exc:
        assert "\n" not in str(exc)


TARGETS = {"midi": midi, "tokens": tokens, "manifest": manifest, "checkpoint": checkpoint}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = TARGETS[sys.argv.pop(1)]
    try:
        atheris.Setup(sys.argv, target)
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
