"""Codecs as plug-ins (issue 14): a codec is one file plus one line in the registry.

The tiny one-voice codec below lives only in this test. Registered with one line, it goes
through the real functions: data prepare, train (2 steps), eval, compose. And nothing outside
musicrnn/codecs/ asks which codec it holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

import musicrnn
from musicrnn import codecs
from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.codecs.base import (
    CODEC_FORMAT_VERSION,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_SHIFT,
    Codec,
    Constraints,
    NoteEvent,
    StreamDecoder,
    StreamEncoder,
    pitch_name,
    token_ids,
)
from musicrnn.codecs.options import PITCH_RANGE_OPTION, check_steps, parse_pitch_range, steps_option
from musicrnn.corpus import prepare, read_manifest
from musicrnn.errors import MusicRNNError
from musicrnn.sample import Constraints as SampleConstraints
from musicrnn.sample import SamplingConfig

from helpers.midi import write_piano_pieces

# ============================================================================================
# the new codec: what a file musicrnn/codecs/melody.py would hold
# ============================================================================================


class MelodyCodec(Codec):
    """One voice: NOTE(p) starts a note (ending the one sounding), REST ends it, TICK is one
    step. Of notes struck together the highest is kept; a new onset cuts the note before."""

    name = "melody"
    summary = "one voice: note, rest and tick tokens"
    time_unit = "beats"
    cli_options = (steps_option("steps_per_beat", "4/beat"), PITCH_RANGE_OPTION)

    def __init__(self, steps_per_beat: int = 4, min_pitch: int = 36, max_pitch: int = 96) -> None:
        self.steps_per_beat, self.min_pitch, self.max_pitch = int(steps_per_beat), int(min_pitch), int(max_pitch)
        self.rest = 1 + self.num_pitches
        self.tick = self.rest + 1
        super().__init__()

    @property
    def vocab_size(self) -> int:
        return self.tick + 1

    @property
    def steps_per_unit(self) -> float:
        return float(self.steps_per_beat)

    def _fill_tables(self) -> None:
        self.token_kind[1 : self.rest] = KIND_NOTE_ON
        self.token_pitch[1 : self.rest] = np.arange(self.min_pitch, self.max_pitch + 1)
        self.token_kind[self.rest] = KIND_NOTE_OFF
        self.token_kind[self.tick] = KIND_SHIFT

    def token_name(self, token: int) -> str:
        if 0 < token < self.rest:
            return f"NOTE({pitch_name(int(self.token_pitch[token]))})"
        return {0: "BOS", self.rest: "REST", self.tick: "TICK"}[token]

    def _encode_batch(self, pitch, velocity, start, end, bounds) -> tuple[np.ndarray, np.ndarray]:
        pitch, on, off, _, piece, _ = self._normalise(pitch, velocity, start, end, bounds)
        order = np.lexsort((-pitch, on, piece))  # by piece, onset, highest first
        parts, ends = [], [0]
        for i in range(len(bounds) - 1):
            toks: list[int] = []
            t, sounding_until, last_on = 0, None, -1
            for j in order[piece[order] == i]:
                o = int(on[j])
                if o == last_on:
                    continue  # a lower note of the same onset
                if sounding_until is not None and sounding_until <= o:
                    toks += [self.tick] * (sounding_until - t) + [self.rest]
                    t = sounding_until
                toks += [self.tick] * (o - t) + [1 + int(pitch[j]) - self.min_pitch]
                t, sounding_until, last_on = o, int(off[j]), o
            if sounding_until is not None:
                toks += [self.tick] * (sounding_until - t) + [self.rest]
            parts.append(np.array(toks, np.uint16))
            ends.append(ends[-1] + len(toks))
        return np.concatenate(parts), np.array(ends)

    def stream_encoder(self) -> MelodyEncoder:
        return MelodyEncoder(self)

    def stream_decoder(self) -> MelodyDecoder:
        return MelodyDecoder(self)

    def constraints(self, batch: int, cfg: SamplingConfig) -> MelodyConstraints:
        return MelodyConstraints(self, batch, cfg)

    @classmethod
    def from_cli(cls, values: dict[str, Any], source_steps_per_beat: int | None = None) -> MelodyCodec:
        lo, hi = parse_pitch_range(values["pitch_range"])
        check_steps(values["steps"], "beat")
        return cls(int(values["steps"] or 4), lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, "version": CODEC_FORMAT_VERSION, "steps_per_beat": self.steps_per_beat,
                "min_pitch": self.min_pitch, "max_pitch": self.max_pitch}


class MelodyEncoder(StreamEncoder):
    def __init__(self, codec: MelodyCodec) -> None:
        self.c, self.step, self.note = codec, 0, None

    def advance(self, time: float) -> list[int]:
        target = max(self.step, int(round(time * self.c.steps_per_beat)))
        out, self.step = [self.c.tick] * (target - self.step), target
        return out

    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]:
        if velocity <= 0:
            return self.note_off(time, pitch)
        if not self.c.min_pitch <= pitch <= self.c.max_pitch:
            return []
        self.note = pitch
        return self.advance(time) + [1 + pitch - self.c.min_pitch]

    def note_off(self, time: float, pitch: int) -> list[int]:
        if pitch != self.note:
            return []
        self.note = None
        return self.advance(time) + [self.c.rest]


class MelodyDecoder(StreamDecoder):
    def __init__(self, codec: MelodyCodec) -> None:
        self.c, self.step, self.note = codec, 0, None

    @property
    def time(self) -> float:
        return self.step / self.c.steps_per_beat

    @property
    def sounding(self) -> set[int]:
        return set() if self.note is None else {self.note}

    def feed(self, token: int) -> list[NoteEvent]:
        kind = self.kind(token)
        if kind == KIND_SHIFT:
            self.step += 1
        if kind not in (KIND_NOTE_ON, KIND_NOTE_OFF):
            return []
        out = self.close()
        if kind == KIND_NOTE_ON:
            self.note = int(self.c.token_pitch[token])
            out.append(NoteEvent(self.time, self.note, 80))
        return out

    def close(self) -> list[NoteEvent]:
        out = [] if self.note is None else [NoteEvent(self.time, self.note, 0)]
        self.note = None
        return out


class MelodyConstraints(Constraints):
    """REST only while a note sounds; new notes in the allowed pitches; TICK always."""

    _state = ("sounding", "ticks")

    def __init__(self, codec: MelodyCodec, batch: int, cfg: SamplingConfig) -> None:
        super().__init__(codec, batch, cfg)
        self.sounding = np.zeros(batch, bool)
        self.ticks = np.zeros(batch, np.int64)

    def step_counts(self) -> np.ndarray:
        return self.ticks

    def mask(self) -> np.ndarray:
        c = self.codec
        m = np.zeros((self.batch, c.vocab_size), bool)
        m[:, 1 : c.rest] = self.allowed[None, :]
        m[:, c.rest] = self.sounding
        m[:, c.tick] = True
        return m

    def update(self, tokens) -> None:
        kind = self.kind[token_ids(tokens)]
        self.sounding = np.where(kind == KIND_NOTE_ON, True, np.where(kind == KIND_NOTE_OFF, False, self.sounding))
        self.ticks += kind == KIND_SHIFT


# ============================================================================================


@pytest.fixture
def melody(monkeypatch) -> type[MelodyCodec]:
    monkeypatch.setitem(codecs.CODECS, "melody", MelodyCodec)  # the one registry line
    return MelodyCodec


def test_a_codec_defined_in_a_test_prepares_trains_evaluates_and_composes(melody, tmp_path: Path) -> None:
    codec = MelodyCodec()
    data = tmp_path / "data"
    manifest = prepare([str(write_piano_pieces(tmp_path / "midi", 8, tune=(60, 80), length=0.4, held=(40,)))], data, codec, (0.5, 0.5, 0.0), workers=1)
    assert manifest["codec"]["type"] == "melody" and manifest["splits"]["train"]["pieces"] > 0
    assert codecs.codec_from_dict(read_manifest(data)["codec"]) == codec

    run = tmp_path / "run"
    tiny = ["--hidden", "16", "--embedding", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "16",
            "--device", "cpu", "--threads", "1", "--warmup-steps", "1", "--max-steps", "2"]
    trained = CliRunner().invoke(cli, ["train", str(data), "-o", str(run), *tiny])
    assert trained.exit_code == 0, trained.output
    ckpt = load_checkpoint(run / "best.pt")
    assert isinstance(ckpt.codec, MelodyCodec) and ckpt.codec == codec  # stored as its dict, rebuilt by the registry

    scored = CliRunner().invoke(cli, ["eval", str(run / "best.pt"), str(data), "--split", "valid", "--device", "cpu"])
    assert scored.exit_code == 0, scored.output
    assert "NLL" in scored.output and "frame" not in scored.output.lower()  # no frames in this codec

    out = tmp_path / "out"
    composed = CliRunner().invoke(cli, ["compose", "--model", str(run / "best.pt"), "-n", "2", "-o", str(out),
                                        "--seed", "1", "--bars", "2", "--key", "C:major"])
    assert composed.exit_code == 0, composed.output
    files = sorted(out.glob("*.mid"))
    assert [f.name for f in files] == ["musicrnn-001.mid", "musicrnn-002.mid"]
    for f in files:
        notes = sorted((n.start, n.end, n.pitch) for inst in pretty_midi.PrettyMIDI(str(f)).instruments
                       for n in inst.notes)
        assert notes, f"{f.name} has no notes"
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(notes, notes[1:]))  # one voice: no overlaps
        assert all(p % 12 in (0, 2, 4, 5, 7, 9, 11) for _, _, p in notes)  # its constraints kept the key
        assert notes[-1][1] <= 4.0 + 1e-6  # 2 bars at 120 BPM: its beats -> steps conversion


def test_a_registered_codec_joins_the_cli_options_and_is_built_from_them(melody) -> None:
    by_flag = {o.flag: o for o in codecs.cli_options()}
    assert by_flag["--codec"].type == ("performance", "grid", "accompany", "melody")
    assert "melody: one voice" in by_flag["--codec"].help
    assert by_flag["--steps"].help.endswith("(performance: 100/s or 12/beat; grid: 4/beat; accompany: 4/beat; "
                                            "melody: 4/beat).")
    values = {o.param: o.default for o in codecs.cli_options()} | {"steps": 2.0, "pitch_range": "48-72"}
    built = codecs.codec_from_cli("melody", values)
    assert built == MelodyCodec(2, 48, 72)
    assert codecs.prepare_options(built) == "--codec melody --steps 2 --pitch-range 48-72"
    assert isinstance(SampleConstraints.for_codec(built, 3, SamplingConfig()), MelodyConstraints)


def test_live_play_refuses_a_codec_without_a_live_unit_in_one_line(melody) -> None:
    from musicrnn.config import ModelConfig
    from musicrnn.live.engine import Engine
    from musicrnn.model import MusicRNN

    codec = MelodyCodec()
    with pytest.raises(MusicRNNError, match="live play does not know the 'melody' codec"):
        Engine(MusicRNN(ModelConfig(codec.vocab_size, hidden=8, embedding=4, layers=1)), codec)


def test_the_built_in_codecs_answer_what_callers_used_to_test_their_class_for() -> None:
    grid, perf = codecs.GridCodec(steps_per_beat=2), codecs.PerformanceCodec(time_unit="seconds")
    assert (grid.live_unit, perf.live_unit) == ("frame", "event")
    assert (grid.has_frames, perf.has_frames, grid.can_stretch, perf.can_stretch) == (True, False, False, True)
    # one beats -> steps conversion: beat codecs ignore the tempo, seconds codecs follow it
    assert grid.beats_to_steps(3.0, bpm=90) == 6.0
    assert perf.beats_to_steps(3.0, bpm=90) == pytest.approx(200.0)  # 2 s at 100 steps per second
    assert (grid.follows_tempo, perf.follows_tempo) == (True, False)
    assert grid.live_max_note_steps(8.0) == 16 and perf.live_max_note_steps(8.0) == 0


def test_no_module_outside_the_codecs_package_asks_which_codec_it_holds() -> None:
    package = Path(musicrnn.__file__).parent
    pattern = re.compile(r"GridCodec|PerformanceCodec|is_grid|time_unit ==")
    offenders = [f"{path.relative_to(package)}:{n}" for path in sorted(package.rglob("*.py"))
                 if path.parent.name != "codecs" for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []
