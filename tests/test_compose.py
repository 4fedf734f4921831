"""`musicrnn compose` and the shared sampling function, as a producer would use them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
import torch
from click.testing import CliRunner

from musicrnn.checkpoint import save_checkpoint
from musicrnn.cli import cli
from musicrnn.codec import GridCodec, PerformanceCodec
from musicrnn.compose import generate
from musicrnn.config import ModelConfig
from musicrnn.inference import stepper_for
from musicrnn.midi import load_midi, write_midi
from musicrnn.model import MusicRNN
from musicrnn.notes import Piece, make_notes
from musicrnn.sample import Constraints, RowRandom, SamplingConfig, parse_key, sample_next

CODECS = {
    "grid": GridCodec(steps_per_beat=2, mark_restrikes=True),
    "grid-plain": GridCodec(steps_per_beat=4),
    "performance": PerformanceCodec(time_unit="beats"),
}


def _checkpoint(path: Path, codec) -> Path:
    torch.manual_seed(0)
    model = MusicRNN(ModelConfig(codec.vocab_size, hidden=32, embedding=16, layers=1))
    save_checkpoint(path, model, codec)
    return path


@pytest.fixture(params=list(CODECS))
def ckpt(request, tmp_path) -> tuple[Path, object]:
    codec = CODECS[request.param]
    return _checkpoint(tmp_path / f"{request.param}.pt", codec), codec


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_compose_writes_valid_midi_and_png_reproducibly(ckpt, tmp_path):
    path, _ = ckpt
    out = tmp_path / "out"
    r = run("compose", "--model", path, "-n", 3, "-o", out, "--seed", 1, "--png", "--bars", 4)
    assert r.exit_code == 0, r.output
    mids = sorted(out.glob("*.mid"))
    assert [m.name for m in mids] == ["musicrnn-001.mid", "musicrnn-002.mid", "musicrnn-003.mid"]
    assert len(list(out.glob("*.png"))) == 3
    for m in mids:
        assert len(pretty_midi.PrettyMIDI(str(m)).instruments) >= 0
        mido.MidiFile(str(m))
    assert "musicrnn-001.mid" in r.output and "pitch range" in r.output
    first = [m.read_bytes() for m in mids]
    run("compose", "--model", path, "-n", 3, "-o", out, "--seed", 1, "--bars", 4, "--overwrite")
    assert [m.read_bytes() for m in mids] == first
    run("compose", "--model", path, "-n", 3, "-o", out, "--seed", 2, "--bars", 4, "--overwrite")
    assert [m.read_bytes() for m in mids] != first


def test_every_note_is_closed_and_no_orphan_note_off(ckpt, tmp_path):
    path, _ = ckpt
    run("compose", "--model", path, "-n", 4, "-o", tmp_path, "--seed", 3, "--bars", 4, "--temperature", 1.5)
    for m in tmp_path.glob("*.mid"):
        for track in mido.MidiFile(str(m)).tracks:
            sounding: set[tuple[int, int]] = set()
            for msg in track:
                if msg.type == "note_on" and msg.velocity > 0:
                    assert (msg.channel, msg.note) not in sounding
                    sounding.add((msg.channel, msg.note))
                elif msg.type in ("note_off", "note_on"):
                    assert (msg.channel, msg.note) in sounding, "note-off without its note-on"
                    sounding.discard((msg.channel, msg.note))
            assert not sounding, "a note was left hanging"


def test_key_range_and_polyphony_are_honoured_in_every_note(ckpt, tmp_path):
    path, _ = ckpt
    r = run("compose", "--model", path, "-n", 6, "-o", tmp_path, "--seed", 5, "--bars", 8, "--temperature", 1.3,
            "--key", "D:dorian", "--pitch-range", "50-74", "--max-polyphony", "3")
    assert r.exit_code == 0, r.output
    allowed = parse_key("D:dorian")
    total = 0
    for m in tmp_path.glob("*.mid"):
        notes = load_midi(m, require_notes=False).notes
        total += len(notes)
        assert all(int(p) % 12 in allowed for p in notes["pitch"])
        assert notes["pitch"].min(initial=50) >= 50 and notes["pitch"].max(initial=74) <= 74
        for t in np.unique(notes["start"]):
            sounding = (notes["start"] <= t) & (notes["end"] > t)
            assert sounding.sum() <= 3
    assert total > 0


def test_bf16_compose_honours_the_masks_closes_every_note_and_reproduces(ckpt, tmp_path):
    path, _ = ckpt
    args = ("compose", "--model", path, "-n", 4, "--seed", 5, "--bars", 4, "--precision", "bf16",
            "--key", "A:minor", "--pitch-range", "45-76")
    r = run(*args, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    run(*args, "-o", tmp_path / "b")
    allowed = parse_key("A:minor")
    for m in sorted((tmp_path / "a").glob("*.mid")):
        assert m.read_bytes() == (tmp_path / "b" / m.name).read_bytes()
        notes = load_midi(m, require_notes=False).notes
        assert all(int(p) % 12 in allowed and 45 <= p <= 76 for p in notes["pitch"])
        assert (notes["end"] > notes["start"]).all()


def test_primer_is_preserved_then_continued(ckpt, tmp_path):
    path, codec = ckpt
    primer_notes = make_notes([(60, 90, 0.0, 1.0), (64, 80, 1.0, 2.0), (67, 70, 2.0, 3.5), (72, 100, 2.0, 4.0)])
    primer = write_midi(Piece(primer_notes, tempos=[(0.0, 100.0)]), tmp_path / "riff.mid")
    out = tmp_path / "out"
    r = run("compose", "--model", path, "--primer", primer, "-n", 2, "-o", out, "--bars", 4, "--seed", 0, "--png")
    assert r.exit_code == 0, r.output
    for m in sorted(out.glob("riff-*.mid")):
        piece = load_midi(m)
        assert piece.tempos[0][1] == pytest.approx(100.0, abs=0.01)
        got = piece.notes[piece.notes["track"] == piece.notes["track"].min()]
        first = got[np.lexsort((got["pitch"], got["start"]))]
        assert np.array_equal(first["pitch"], primer_notes["pitch"])
        assert np.allclose(first["start"], primer_notes["start"]) and np.allclose(first["end"], primer_notes["end"])
        cont = piece.notes[piece.notes["track"] != piece.notes["track"].min()]
        assert len(cont) > 0 and cont["start"].min() >= 4.0 - 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--primer", "missing.mid"], "file not found"),
        (["--key", "H:major"], "key"),
        (["--key", "C:major", "--pitch-range", "61-61"], "no pitch satisfies"),
        (["--bars", "4", "--seconds", "4"], "either --bars or --seconds"),
        (["--temperature", "-1"], "temperature"),
    ],
)
def test_bad_input_gives_one_error_line_and_no_files(tmp_path, args, message):
    path = _checkpoint(tmp_path / "m.pt", CODECS["grid"])
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["compose", "--model", str(path), "-o", str(out), *args])
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.output
    assert not out.exists() or not any(out.iterdir())


def test_primer_outside_the_model_range_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "m.pt", GridCodec(min_pitch=48, max_pitch=84))
    primer = write_midi(Piece(make_notes([(30, 90, 0.0, 1.0)])), tmp_path / "low.mid")
    r = CliRunner().invoke(cli, ["compose", "--model", str(path), "--primer", str(primer), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "outside the model's range 48-84" in r.output


def test_missing_model_is_one_clear_line(tmp_path):
    r = CliRunner().invoke(cli, ["compose", "--model", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no such checkpoint" in r.output


def test_corrupt_primer_is_refused(tmp_path, edge_cases):
    path = _checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = CliRunner().invoke(cli, ["compose", "--model", str(path), "--primer",
                                 str(edge_cases / "test-corrupt-file-missing-byte.mid"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "corrupt" in r.output


def test_wav_render_or_clear_instruction(tmp_path):
    path = _checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = CliRunner().invoke(cli, ["compose", "--model", str(path), "-n", "1", "--bars", "2", "--wav", "-o", str(tmp_path / "o")])
    import shutil

    if shutil.which("fluidsynth") and Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").exists():
        assert r.exit_code == 0, r.output
        wav = tmp_path / "o" / "musicrnn-001.wav"
        assert wav.exists() and wav.stat().st_size > 1000
    else:
        assert r.exit_code == 1 and "apt install fluidsynth" in r.output


def test_pieces_stop_independently_at_their_length():
    codec = CODECS["grid"]
    model = MusicRNN(ModelConfig(codec.vocab_size, hidden=16, embedding=8, layers=1))
    g = generate(stepper_for(model), codec, 5, 16, SamplingConfig(), seed=0)
    assert g.steps == [16] * 5
    assert len({len(t) for t in g.tokens}) > 1  # different token counts, same musical length
    for toks in g.tokens:
        assert int((toks == codec.step_token).sum()) == 16


def test_sampling_controls():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 4)
    u = torch.tensor([0.0, 0.3, 0.6, 0.999])
    assert sample_next(logits, SamplingConfig(temperature=0), u).tolist() == [1, 1, 1, 1]
    assert sample_next(logits, SamplingConfig(top_k=1), u).tolist() == [1, 1, 1, 1]
    assert set(sample_next(logits, SamplingConfig(top_k=2), u).tolist()) <= {1, 3}
    assert sample_next(logits, SamplingConfig(top_p=0.5), u).tolist() == [1, 1, 1, 1]
    mask = torch.tensor([[True, False, True, False]] * 4)
    assert set(sample_next(logits, SamplingConfig(), u, mask).tolist()) <= {0, 2}


def test_row_random_streams_do_not_depend_on_batch_size():
    a, b = RowRandom([7, 8, 9]), RowRandom([7])
    for _ in range(3000):
        assert a.next()[0] == b.next()[0]


def test_grid_constraints_enforce_ascending_frames():
    codec = CODECS["grid"]
    cons = Constraints.for_codec(codec, 1, SamplingConfig())
    cons.update(torch.tensor([codec.pitch0 + 10]))
    m = cons.mask()[0]
    assert not m[codec.pitch0 : codec.pitch0 + 11].any() and m[codec.pitch0 + 11] and m[codec.step_token]
    assert not m[codec.hold0 : codec.hold0 + codec.num_pitches].any()  # nothing sounded before: nothing to hold


def test_python_m_musicrnn_compose_runs(tmp_path):
    path = _checkpoint(tmp_path / "m.pt", CODECS["grid"])
    proc = subprocess.run([sys.executable, "-m", "musicrnn", "compose", "--model", str(path), "-n", "2", "--bars", "2",
                           "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "o").glob("*.mid"))) == 2


def test_note_length_limits_are_honoured(ckpt, tmp_path):
    path, codec = ckpt
    r = run("compose", "--model", path, "-n", 4, "-o", tmp_path, "--seed", 2, "--bars", 8, "--tempo", 120,
            "--min-note", 0.5, "--max-note", 2)
    assert r.exit_code == 0, r.output
    step = 1.0 / codec.steps_per_unit  # beats per step (all test codecs count in beats)
    for m in tmp_path.glob("*.mid"):
        notes = load_midi(m, require_notes=False).notes
        lengths = notes["end"] - notes["start"]
        assert (lengths <= 2 + 1e-6).all(), lengths.max()
        # the last notes may be cut by the end of the piece; all others are at least half a beat
        inner = notes["end"] < notes["end"].max() - 1e-6
        assert (lengths[inner] >= 0.5 - step / 2 - 1e-6).all(), lengths[inner].min()


def test_neighbouring_seeds_write_unrelated_pieces():
    """Piece i of --seed s must not be piece i+1 of --seed s-1 (a producer running seed 1, then
    seed 2, wants new music)."""
    model = MusicRNN(ModelConfig(CODECS["grid"].vocab_size, hidden=16, embedding=8, layers=1))
    a = generate(stepper_for(model), CODECS["grid"], 3, 8, SamplingConfig(), seed=1)
    b = generate(stepper_for(model), CODECS["grid"], 3, 8, SamplingConfig(), seed=2)
    first = [t.tolist() for t in a.tokens]
    assert not any(t.tolist() in first for t in b.tokens)
