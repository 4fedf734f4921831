"""Batch composition: N pieces at once through the model, optionally continuing a primer.

Holds :func:`generate` (tokens for a batch; each row stops on its own when it reaches its
length) and :func:`compose` (primer handling, MIDI/PNG/WAV files, a summary per piece). Row i
draws its random numbers from ``(seed, i)`` only, so a command run twice writes the same bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from musicrnn.codec import BOS, Codec
from musicrnn.errors import MidiError, MusicRNNError
from musicrnn.fast_step import FastStepper
from musicrnn.midi import Piece, load_midi, write_midi
from musicrnn.model import MusicRNN, at_precision, inference_mode_for
from musicrnn.sample import Constraints, RowRandom, SamplingConfig, sample_next

SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
                   "/usr/share/sounds/sf2/default-GM.sf2")


@dataclass
class Generated:
    tokens: list[np.ndarray]  # generated tokens per row (primer not included)
    steps: list[int]  # codec steps generated per row
    seconds_compute: float
    events: int  # tokens generated in total


def generate(model: MusicRNN, codec: Codec, batch: int, target_steps: int, cfg: SamplingConfig, seed: int,
             primer: np.ndarray | None = None, device: str | torch.device = "cpu",
             max_tokens: int | None = None) -> Generated:
    """Sample ``batch`` continuations of ``primer`` (or of nothing), each ``target_steps``
    codec steps long (grid frames or time-shift steps)."""
    with inference_mode_for(device, batch, _weights_dtype(model)):
        return _generate(model, codec, batch, target_steps, cfg, seed, primer, torch.device(device), max_tokens)


def _weights_dtype(model) -> torch.dtype:
    """The model's weight type; float32 for steppers without weights (the n-gram baseline)."""
    first = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return first.dtype if first is not None else torch.float32


def _generate(model, codec, batch, target_steps, cfg, seed, primer, device, max_tokens) -> Generated:
    cfg.validate(codec)
    model.eval()
    t0 = time.perf_counter()
    prefix = np.concatenate([[BOS], primer if primer is not None else []]).astype(np.int64)
    fast = FastStepper.for_model(model) if device.type == "cpu" else None
    step = _numpy_rows(fast, model, prefix, batch) if fast else _torch_rows(model, prefix, batch, device)
    cur = torch.full((batch,), int(prefix[-1]), dtype=torch.long)
    cons = Constraints.for_codec(codec, batch, cfg)
    if primer is not None and len(primer):  # the constraints see the primer's last notes
        _replay_primer(cons, primer)
    base_steps = cons.steps.clone()
    rand = RowRandom([(seed, i) for i in range(batch)])
    out = torch.zeros(batch, 0, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    lengths = torch.zeros(batch, dtype=torch.long)
    limit = max_tokens or target_steps * 64 + 64
    events = 0
    chunks = []
    # numpy's BLAS (the CPU path) gets as many threads as torch: one knob (--threads)
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        for _ in range(limit):
            logits = step(cur)
            mask = cons.mask()
            nxt = sample_next(logits, cfg, rand.next(), mask)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            cons.update(nxt)  # BOS (given to finished rows) changes no constraint state
            chunks.append(nxt)
            events += int((~done).sum())
            lengths += (~done).long()
            done |= (cons.steps - base_steps) >= target_steps
            if done.all():
                break
            cur = nxt
    out = torch.stack(chunks, 1) if chunks else out
    toks = [out[i, : int(lengths[i])].numpy().astype(np.int64) for i in range(batch)]
    steps = (cons.steps - base_steps).tolist()
    return Generated(toks, steps, time.perf_counter() - t0, events)


Stepper = Callable[[torch.Tensor], torch.Tensor]  # tokens [B] -> next-token logits [B, vocab], float32, CPU


def _numpy_rows(fast: FastStepper, model: MusicRNN, prefix: np.ndarray, batch: int) -> Stepper:
    """The CPU path for float32 models: a batch steps as a few matrix products in numpy
    (torch's LSTM at batch 64 took ~2.7 ms a step here, this ~1 ms; at batch 1 ~0.3 vs 0.07)."""
    state = fast.initial_state(batch)
    if len(prefix) > 1:  # prime on everything but the last primer token, once for all rows
        _, primed = model(torch.from_numpy(prefix[:-1])[None], None)
        state[:] = fast.from_model_state(primed)[:, None, :]

    def step(tokens: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(fast.step_batch(tokens.numpy(), state)[0])

    return step


def _torch_rows(model: MusicRNN, prefix: np.ndarray, batch: int, device: torch.device) -> Stepper:
    """GPUs, bfloat16 weights and models with attention: the model's own step."""
    state = None
    if len(prefix) > 1:  # prime the state on everything but the last primer token
        _, state = model(torch.from_numpy(prefix[:-1]).to(device)[None].expand(batch, -1), None)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal state
        logits, state = model.step(tokens.to(device), state)
        return logits.float().cpu()  # float: a bf16 model's logits too

    return step


def _replay_primer(cons: Constraints, primer: np.ndarray) -> None:
    for t in primer:
        cons.update(torch.full((cons.batch,), int(t), dtype=torch.long))


@dataclass
class ComposeOptions:
    n: int = 4
    out: Path = Path("out")
    name: str = "musicrnn"
    primer: Path | None = None
    bars: float | None = None
    seconds: float | None = None
    tempo: float | None = None
    program: int = 0
    seed: int = 0
    png: bool = False
    wav: bool = False
    device: str = "cpu"
    precision: str = "fp32"  # bf16: bfloat16 weights (see musicrnn.model.at_precision)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class PieceSummary:
    path: Path
    seconds: float
    bars: float
    notes: int
    pitch_range: tuple[int, int] | None
    png: Path | None = None
    wav: Path | None = None


def _steps_for(codec: Codec, bars: float | None, seconds: float | None, bpm: float, beats_per_bar: float) -> int:
    if bars is not None and seconds is not None:
        raise MusicRNNError("give either --bars or --seconds, not both")
    if bars is None and seconds is None:
        bars = 8
    beats = bars * beats_per_bar if bars is not None else seconds * bpm / 60.0  # type: ignore[operator]
    if beats <= 0:
        raise MusicRNNError("the length must be positive")
    if codec.time_unit == "seconds":
        return int(round(beats * 60.0 / bpm * codec.steps_per_unit))
    return int(round(beats * codec.steps_per_unit))


def load_primer(path: Path, codec: Codec) -> tuple[Piece, np.ndarray]:
    piece = load_midi(path)
    pitched = piece.pitched()
    if len(pitched) == 0:
        raise MidiError(f"{path}: primer has only drum notes; give a primer with pitched notes")
    lo, hi = int(pitched["pitch"].min()), int(pitched["pitch"].max())
    if lo < codec.min_pitch or hi > codec.max_pitch:
        raise MusicRNNError(
            f"{path}: primer pitches {lo}-{hi} fall outside the model's range {codec.min_pitch}-{codec.max_pitch}; "
            "transpose the primer or use a model with a wider range"
        )
    return piece, codec.encode_piece(piece)


def compose(model: MusicRNN, codec: Codec, opts: ComposeOptions) -> list[PieceSummary]:
    """Write ``opts.n`` MIDI files (plus PNG/WAV when asked); all or nothing on error."""
    if opts.n < 1:
        raise MusicRNNError("-n must be at least 1")
    primer_piece, primer_tokens = (None, None)
    if opts.primer is not None:
        primer_piece, primer_tokens = load_primer(opts.primer, codec)
    bpm = opts.tempo or (primer_piece.tempos[0][1] if primer_piece else 120.0)
    if not 20 <= bpm <= 400:
        raise MusicRNNError(f"tempo {bpm} BPM is outside 20-400")
    sig = primer_piece.time_signatures[0] if primer_piece else (0.0, 4, 4)
    beats_per_bar = sig[1] * 4.0 / sig[2]
    target = _steps_for(codec, opts.bars, opts.seconds, bpm, beats_per_bar)
    opts.sampling.validate(codec)
    wav_tool = _find_fluidsynth() if opts.wav else None

    gen = generate(at_precision(model, opts.precision), codec, opts.n, target, opts.sampling, opts.seed, primer_tokens,
                   opts.device)
    primer_end_units = 0.0
    if primer_tokens is not None:
        dec = codec.stream_decoder()
        for t in primer_tokens:
            dec.feed(int(t))
        primer_end_units = dec.time
    written: list[Path] = []
    summaries = []
    out = Path(opts.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for i, toks in enumerate(gen.tokens):
            full = np.concatenate([primer_tokens, toks]) if primer_tokens is not None else toks
            piece = codec.decode_piece(full, bpm=bpm, program=opts.program)
            unit_to_beats = bpm / 60.0 if codec.time_unit == "seconds" else 1.0
            cut = primer_end_units * unit_to_beats
            new_notes = piece.notes[piece.notes["start"] >= cut - 1e-9]
            if primer_piece is not None:
                prim = primer_piece.pitched().copy()
                prim["track"] = 0
                new_notes = new_notes.copy()
                new_notes["track"] = 1
                new_notes["channel"] = 1  # own channel/track: DAWs show primer and answer apart
                notes = np.concatenate([prim, new_notes])
            else:
                notes = new_notes
            piece = Piece(notes, tempos=[(0.0, bpm)], time_signatures=[(0.0, sig[1], sig[2])])
            path = out / f"{opts.name}-{i + 1:03d}.mid"
            write_midi(piece, path)
            written.append(path)
            png = wav = None
            if opts.png:
                from musicrnn.plot import piano_roll_png

                png = piano_roll_png(piece, out / f"{opts.name}-{i + 1:03d}.png", split_beat=cut if primer_piece else None,
                                     beats_per_bar=beats_per_bar)
                written.append(png)
            if wav_tool:
                wav = _render_wav(wav_tool, path)
                written.append(wav)
            pitches = notes["pitch"]
            summaries.append(PieceSummary(path, piece.duration_seconds, piece.duration_beats / beats_per_bar, len(notes),
                                          (int(pitches.min()), int(pitches.max())) if len(pitches) else None, png, wav))
    except BaseException:
        for p in written:  # all or nothing: no partial output
            if p.exists():
                p.unlink()
        raise
    return summaries


def _find_fluidsynth() -> tuple[str, str]:
    exe = shutil.which("fluidsynth")
    sf2 = next((p for p in SOUNDFONT_PATHS if os.path.exists(p)), None)
    if not exe or not sf2:
        raise MusicRNNError(
            "--wav needs FluidSynth and a General MIDI SoundFont: sudo apt install fluidsynth fluid-soundfont-gm "
            "(macOS: brew install fluid-synth and a .sf2 file)"
        )
    return exe, sf2


def _render_wav(tool: tuple[str, str], midi_path: Path) -> Path:
    exe, sf2 = tool
    wav = midi_path.with_suffix(".wav")
    proc = subprocess.run([exe, "-ni", "-q", "-F", str(wav), "-r", "44100", sf2, str(midi_path)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or not wav.exists():
        raise MusicRNNError(f"fluidsynth could not render {midi_path}: {' '.join(proc.stderr.split())[:200]}")
    return wav
