"""Batch composition: N pieces at once through the model, optionally continuing a primer.

Holds :func:`generate` (tokens for a batch; each row stops on its own when it reaches its
length) and :func:`compose` (primer handling, MIDI/PNG/WAV files, a summary per piece). Row i
draws its random numbers from ``(seed, i)`` only, so a command run twice writes the same bytes.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from musicrnn.codecs import BOS, KIND_NOTE_ON, Codec
from musicrnn.continuation import (
    RowBias,
    TimeLogits,
    followed,
    grid_logits,
    listen,
    model_pitches,
    moved,
    piece_keys,
    playable,
    register_bias,
)
from musicrnn.errors import MidiError, MusicRNNError
from musicrnn.inference import Stepper, stepper_for
from musicrnn.limits import MAX_NOTE_BEATS, check_tempo
from musicrnn.listening import Follow, Listener
from musicrnn.logit_bias import NoteBias
from musicrnn.metre import Metre, in_force
from musicrnn.midi import load_midi, read_track_names, write_midi
from musicrnn.model import MusicRNN
from musicrnn.notes import DEFAULT_BPM, Piece
from musicrnn.sample import Constraints, RowRandom, SamplingConfig, sample_next
from musicrnn.tonality import estimate_key, home_shift

SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
                   "/usr/share/sounds/sf2/default-GM.sf2")


@dataclass
class Generated:
    tokens: list[np.ndarray]  # generated tokens per row (primer not included)
    steps: list[int]  # codec steps generated per row
    seconds_compute: float
    events: int  # tokens generated in total


def generate(stepper: Stepper, codec: Codec, batch: int, target_steps: int, cfg: SamplingConfig, seed: int,
             primer: np.ndarray | None = None, max_tokens: int | None = None, bias: np.ndarray | None = None,
             row_bias: RowBias | None = None, time_logits: TimeLogits | None = None) -> Generated:
    """Sample ``batch`` continuations of ``primer`` (or of nothing) on fresh rows of ``stepper``
    (see :func:`musicrnn.inference.stepper_for`), each ``target_steps`` codec steps long (grid
    frames or time-shift steps); ``bias`` [vocab]: nats added to the logits before sampling (the
    listening followers' priors); ``row_bias(pitch_sums, counts)``: nats [batch, vocab] from what
    each row has played so far (its note-ons' pitches); ``time_logits(steps, logits)``: the logits
    to sample from, given the codec steps each row has reached (where in the beat it decides)."""
    cfg.validate(codec)
    t0 = time.perf_counter()
    prefix = np.concatenate([[BOS], primer if primer is not None else []]).astype(np.int64)
    rows = stepper.fresh(batch)
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
    bias32 = np.asarray(bias, np.float32) if bias is not None else None
    pitch_sums, counts = np.zeros(batch), np.zeros(batch)
    onset = codec.token_kind == KIND_NOTE_ON
    # numpy's BLAS (the CPU path) gets as many threads as torch: one knob (--threads)
    with rows.kernels(), threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        rows.prime(prefix[:-1])  # everything but the last primer token, which the first step reads
        for _ in range(limit):
            logits = rows.step(cur.numpy())
            if bias32 is not None:
                logits = logits + bias32
            if row_bias is not None:
                extra = row_bias(pitch_sums, counts)
                if extra is not None:
                    logits = logits + extra
            if time_logits is not None:
                logits = time_logits(cons.step_counts(), logits)
            mask = cons.mask()
            nxt = sample_next(logits, cfg, rand.next(), mask)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            cons.update(nxt)  # BOS (given to finished rows) changes no constraint state
            if row_bias is not None:
                struck = onset[nxt.numpy()] & ~done.numpy()
                pitch_sums += np.where(struck, codec.token_pitch[nxt.numpy()], 0)
                counts += struck
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


def _replay_primer(cons: Constraints, primer: np.ndarray) -> None:
    for t in primer:
        cons.update(torch.full((cons.batch,), int(t), dtype=torch.long))


LONG_PRIMER_BARS = 32  # a longer primer (all of it context and output) gets a note suggesting --primer-bars
NEW_TRACK_NAME = "musicrnn"  # the track the new music goes on, after a primer's own tracks


@dataclass
class ComposeOptions:
    n: int = 4
    out: Path = Path("out")
    name: str = "musicrnn"
    primer: Path | None = None
    primer_bars: int | None = None  # keep only the primer's last N bars (context and output)
    primer_seconds: float | None = None  # ... or its last S seconds
    bars: float | None = None
    seconds: float | None = None
    tempo: float | None = None
    metre: Metre = field(default_factory=Metre)  # --beats-per-bar / --time-signature, else the primer's
    min_note_beats: float = 0.0  # shortest new note (0 = no limit)
    max_note_beats: float = MAX_NOTE_BEATS  # longest new note (0 = no limit)
    program: int = 0
    seed: int = 0
    png: bool = False
    wav: bool = False
    device: str = "cpu"
    precision: str = "fp32"  # bf16: bfloat16 weights (see musicrnn.inference.at_precision)
    overwrite: bool = False  # replace an earlier run's NAME-NNN files (and remove the ones not rewritten)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # key and range in the output's pitches
    follow: Follow = field(default_factory=Follow)  # what a continuation follows of its primer (key, register, velocity)
    key_tonic: int | None = None  # --key's tonic: the model plays in its home key, moved there
    home_key_model: bool = False  # the model knows one home key (key-normalised data): each piece gets a key of its own


@dataclass
class PieceSummary:
    path: Path
    seconds: float
    bars: float
    notes: int
    pitch_range: tuple[int, int] | None
    png: Path | None = None
    wav: Path | None = None
    key: str = "-"  # the written piece's key as heard (Krumhansl-Schmuckler), e.g. "F#:minor"


@dataclass
class Primer:
    """A primer as the output keeps it: its notes (drums too) in beats, its tempo map, metre and
    track names as the file has them, and the tokens the model is primed on (its pitched notes
    moved by ``-transpose`` into the model's home key and register, see :func:`listen`)."""

    piece: Piece
    track_names: dict[int, str]
    tokens: np.ndarray
    bars: int  # bars it spans (after --primer-bars/--primer-seconds)
    listener: Listener  # what the new music follows of it
    transpose: int = 0  # output pitch = model pitch + transpose


def _steps_for(codec: Codec, bars: float | None, seconds: float | None, bpm: float, beats_per_bar: float) -> int:
    if bars is not None and seconds is not None:
        raise MusicRNNError("give either --bars or --seconds, not both")
    if bars is None and seconds is None:
        bars = 8
    beats = bars * beats_per_bar if bars is not None else seconds * bpm / 60.0  # type: ignore[operator]
    if beats <= 0:
        raise MusicRNNError("the length must be positive")
    return int(round(codec.beats_to_steps(beats, bpm)))


def load_primer(path: Path, codec: Codec, bars: int | None = None, seconds: float | None = None,
                metre: Metre | None = None, follow: Follow | None = None, key_tonic: int | None = None) -> Primer:
    """Read a primer; with ``bars`` (or ``seconds``) keep only its last bars (seconds), counted
    by ``metre`` (default: the primer's own). The model hears it moved into its home key and
    register as far as ``follow`` (default: every follower) and ``key_tonic`` (--key) say."""
    metre = metre or Metre()
    piece = load_midi(path)
    if bars is not None or seconds is not None:
        piece = piece_tail(piece, _tail_start(piece, bars, seconds, metre))
    pitched = piece.pitched()
    if len(pitched) == 0:
        where = "its kept part has" if bars is not None or seconds is not None else "primer has"
        raise MidiError(f"{path}: {where} only drum notes; give a primer with pitched notes")
    lo, hi = int(pitched["pitch"].min()), int(pitched["pitch"].max())
    if lo < codec.min_pitch or hi > codec.max_pitch:
        raise MusicRNNError(
            f"{path}: primer pitches {lo}-{hi} fall outside the model's range {codec.min_pitch}-{codec.max_pitch}; "
            "transpose the primer or use a model with a wider range"
        )
    n_bars = len(metre.bar_lines(piece.time_signatures, piece.duration_beats))
    listener = listen(piece, follow or Follow(), key_tonic)
    transpose = playable(listener.transpose(), lo, hi, codec)
    tokens = codec.encode_piece(moved(piece, -transpose))
    return Primer(piece, read_track_names(path), tokens, n_bars, listener, transpose)


def _tail_start(piece: Piece, bars: int | None, seconds: float | None, metre: Metre) -> float:
    """The beat where a primer's last ``bars`` bars (or last ``seconds``) begin; 0 if it is shorter."""
    if bars is not None and seconds is not None:
        raise MusicRNNError("give either --primer-bars or --primer-seconds, not both")
    end = piece.duration_beats
    if bars is not None:
        if bars < 1:
            raise MusicRNNError(f"--primer-bars must be at least 1, not {bars}")
        lines = metre.bar_lines(piece.time_signatures, end)
        return float(lines[-bars]) if bars <= len(lines) else 0.0
    if not seconds > 0:  # type: ignore[operator]
        raise MusicRNNError(f"--primer-seconds must be positive, not {seconds}")
    return float(max(0.0, piece.beats(piece.duration_seconds - seconds)))  # type: ignore[operator]


def piece_tail(piece: Piece, start: float) -> Piece:
    """The piece from beat ``start`` on, shifted to begin at 0: notes sounding across ``start``
    are cut there; the tempo and time signature in force at ``start`` are kept."""
    if start <= 0:
        return piece
    notes = piece.notes[piece.notes["end"] > start + 1e-9].copy()
    notes["start"] = np.maximum(notes["start"], start) - start
    notes["end"] -= start

    def shifted(events: list) -> list:
        return [(0.0, *in_force(events, start)[1:])] + [(b - start, *rest) for b, *rest in events if b > start + 1e-9]

    return Piece(notes, shifted(piece.tempos), shifted(piece.time_signatures), source=piece.source)


def compose(model: MusicRNN, codec: Codec, opts: ComposeOptions,
            notify: Callable[[str], None] | None = None) -> list[PieceSummary]:
    """Write ``opts.n`` MIDI files (plus PNG/WAV when asked); all or nothing on error. Files of
    an earlier run with the same name are refused unless ``opts.overwrite``. ``notify`` gets
    advice that is no error (e.g. a long primer)."""
    if opts.n < 1:
        raise MusicRNNError("-n must be at least 1")
    if opts.primer is None and (opts.primer_bars is not None or opts.primer_seconds is not None):
        raise MusicRNNError("--primer-bars and --primer-seconds shorten a primer; give --primer too")
    primer = load_primer(opts.primer, codec, opts.primer_bars, opts.primer_seconds, opts.metre, opts.follow,
                         opts.key_tonic) if opts.primer else None
    listener = primer.listener if primer else listen(None, opts.follow, opts.key_tonic)
    transpose = primer.transpose if primer else listener.transpose()
    if primer and notify and primer.bars > LONG_PRIMER_BARS and opts.primer_bars is None and opts.primer_seconds is None:
        notify(f"note: the primer is {primer.bars} bars ({primer.piece.duration_seconds:.0f} s) long and all of it "
               f"is context and output; --primer-bars 8 keeps only its last 8 bars")
    cut_units, cut = _primer_end(codec, primer)  # where the new music starts: codec units, beats
    end = max(cut, primer.piece.duration_beats) if primer else 0.0
    if opts.tempo is not None:
        bpm = check_tempo(opts.tempo, "--tempo")
    else:
        bpm = check_tempo(in_force(primer.piece.tempos, end)[1], "the primer's tempo", "give --tempo in that range") \
            if primer else DEFAULT_BPM
    beats_per_bar = opts.metre.bar_beats(primer.piece.time_signatures if primer else None, at=end)
    target = _steps_for(codec, opts.bars, opts.seconds, bpm, beats_per_bar)
    _set_note_lengths(opts.sampling, codec, opts.min_note_beats, opts.max_note_beats, bpm)
    opts.sampling.validate(codec)
    sampling = model_pitches(opts.sampling, transpose, codec)
    keys = piece_keys(opts.seed, opts.n) if not primer and opts.key_tonic is None and opts.home_key_model else None
    if primer:
        listener.start_answer(cut)
    note_bias = NoteBias(codec)
    wav_tool = _find_fluidsynth() if opts.wav else None

    out = Path(opts.out)
    earlier = earlier_outputs(out, opts.name)
    if earlier and not opts.overwrite:
        raise MusicRNNError(
            f"{out} already holds {len(earlier)} file(s) named {opts.name}-NNN (e.g. {earlier[0].name}) from an earlier "
            f"run; give --overwrite to replace them (those this run does not rewrite are removed), or another "
            f"-o/--name")

    gen = generate(stepper_for(model, opts.device, opts.precision), codec, opts.n, target, sampling, opts.seed,
                   primer.tokens if primer else None, bias=note_bias(prior=listener.key_prior(transpose)),
                   row_bias=register_bias(listener, note_bias, transpose) if primer else None,
                   time_logits=grid_logits(listener, codec, cut_units, cut, bpm) if primer else None)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{opts.name}-", suffix=".tmp", dir=out))
    try:  # all or nothing: every file is made aside, then moved into place
        summaries = []
        for i, toks in enumerate(gen.tokens):
            piece_transpose = transpose if not keys else -home_shift(keys[i])
            piece, names = _output_piece(codec, primer, toks, cut_units, cut, end, bpm, opts,
                                         piece_transpose, copy.deepcopy(listener))
            summaries.append(_write_piece(piece, names, staging / f"{opts.name}-{i + 1:03d}.mid", opts,
                                          cut if primer else None, beats_per_bar, wav_tool))
        made = sorted(staging.iterdir())
        for f in made:
            os.replace(f, out / f.name)
        for f in set(earlier) - {out / f.name for f in made}:  # stale: from an earlier run with more pieces
            f.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summaries


OUTPUT_SUFFIXES = (".mid", ".png", ".wav")


def earlier_outputs(out: Path, name: str) -> list[Path]:
    """Files in ``out`` that a compose run with stem ``name`` writes (NAME-NNN.mid/.png/.wav)."""
    if not out.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"-\d{3,}")
    return sorted(f for f in out.iterdir() if f.suffix in OUTPUT_SUFFIXES and pattern.fullmatch(f.stem) and f.is_file())


def _write_piece(piece: Piece, names: dict[int, str], path: Path, opts: ComposeOptions, split_beat: float | None,
                 beats_per_bar: float, wav_tool: tuple[str, str] | None) -> PieceSummary:
    """Write one piece's MIDI file at ``path`` (and PNG/WAV beside it when asked); the summary
    names the files where they will be, in ``opts.out``."""
    out = Path(opts.out)
    write_midi(piece, path, track_names=names)
    png = wav = None
    pitched = Piece(piece.pitched(), piece.tempos, piece.time_signatures)
    if opts.png:
        from musicrnn.plot import piano_roll_png

        png = out / piano_roll_png(pitched, path.with_suffix(".png"), split_beat=split_beat,
                                   beats_per_bar=beats_per_bar).name
    if wav_tool:
        wav = out / _render_wav(wav_tool, path).name
    pitches = pitched.notes["pitch"]
    key = str(estimate_key(pitches, pitched.notes["end"] - pitched.notes["start"])) if len(pitches) else "-"
    return PieceSummary(out / path.name, piece.duration_seconds, piece.duration_beats / beats_per_bar, len(piece.notes),
                        (int(pitches.min()), int(pitches.max())) if len(pitches) else None, png, wav, key)


def _set_note_lengths(sampling: SamplingConfig, codec: Codec, min_beats: float, max_beats: float, bpm: float) -> None:
    """Note lengths are asked in beats; the codec counts steps (per beat, or per second at ``bpm``)."""
    if min_beats < 0 or max_beats < 0:
        raise MusicRNNError("--min-note and --max-note must be >= 0 (0 = no limit)")
    if min_beats and max_beats and min_beats > max_beats:
        raise MusicRNNError(f"--min-note {min_beats:g} is longer than --max-note {max_beats:g} (default "
                            f"{MAX_NOTE_BEATS:g} beats); raise --max-note, or give --max-note 0 for no limit")
    sampling.min_note_steps = int(round(codec.beats_to_steps(min_beats, bpm)))
    sampling.max_note_steps = int(round(codec.beats_to_steps(max_beats, bpm)))
    if max_beats and sampling.max_note_steps < 1:
        raise MusicRNNError(f"--max-note {max_beats:g} is shorter than one step of this model's grid")


def _primer_end(codec: Codec, primer: Primer | None) -> tuple[float, float]:
    """Where the primer's tokens end, in codec units and in the primer's beats (0, 0 without one)."""
    if primer is None:
        return 0.0, 0.0
    dec = codec.stream_decoder()
    for t in primer.tokens:
        dec.feed(int(t))
    units = float(dec.time)
    return units, codec.piece_beats(primer.piece, units)


def _output_piece(codec: Codec, primer: Primer | None, toks: np.ndarray, cut_units: float, cut: float, end: float,
                  bpm: float, opts: ComposeOptions, transpose: int = 0,
                  listener: Listener | None = None) -> tuple[Piece, dict[int, str]]:
    """One output: the primer as its file has it (tempo map, metre, tracks), then the new notes
    on a track of their own, in beats at ``bpm`` from beat ``cut``, moved out of the model's home
    key by ``transpose`` with the velocities ``listener`` gives them; and the tracks' names."""
    full = np.concatenate([primer.tokens, toks]) if primer is not None else toks
    decoded = codec.decode_piece(full, bpm=bpm, program=opts.program).notes
    unit_to_beats = codec.beats_per_unit(bpm)
    new = followed(decoded[decoded["start"] >= cut_units * unit_to_beats - 1e-9], transpose, listener,
                    cut - cut_units * unit_to_beats, (codec.min_pitch, codec.max_pitch), swing=codec.has_frames)
    sig = opts.metre.written()
    if primer is None:
        return Piece(new, tempos=[(0.0, bpm)], time_signatures=[(0.0, *(sig or (4, 4)))]), {}
    new = new.copy()
    shift = cut - cut_units * unit_to_beats  # decoded beats -> the primer's beats (0 for beat codecs)
    new["start"] += shift
    new["end"] += shift
    prim = _with_own_channels(primer.piece.notes)
    new["track"] = int(prim["track"].max()) + 1 if len(prim) else 0
    new["channel"] = _next_channel(prim)  # own track and channel: DAWs show primer and answer apart
    tempos = [t for t in primer.piece.tempos if t[0] <= end + 1e-9]
    if opts.tempo is not None and opts.tempo != in_force(tempos, end)[1]:
        tempos.append((cut, float(opts.tempo)))  # the new music at the tempo asked for
    sigs = [s for s in primer.piece.time_signatures if s[0] <= end + 1e-9]
    if sig and sig != in_force(sigs, end)[1:]:
        sigs.append((cut, *sig))  # the metre the user gave, from where the new music starts
    names = {**primer.track_names, int(new["track"][0]) if len(new) else -1: NEW_TRACK_NAME}
    return Piece(np.concatenate([prim, new]), tempos, sigs), names


PITCHED_CHANNELS = [c for c in range(16) if c != 9]  # 9 is General MIDI's drum channel


def _with_own_channels(notes: np.ndarray) -> np.ndarray:
    """The primer's notes with a channel per pitched (track, program) (drums on 9), so that each
    track's program sounds as in the file (the reader keeps no channels)."""
    notes = notes.copy()
    pitched = ~notes["is_drum"]
    parts = sorted(set(zip(notes["track"][pitched].tolist(), notes["program"][pitched].tolist())))
    for k, (track, program) in enumerate(parts):
        part = pitched & (notes["track"] == track) & (notes["program"] == program)
        notes["channel"][part] = PITCHED_CHANNELS[k % len(PITCHED_CHANNELS)]
    notes["channel"][notes["is_drum"]] = 9
    return notes


def _next_channel(notes: np.ndarray) -> int:
    """The first pitched channel the primer does not use (the last one if it uses them all)."""
    used = set(notes["channel"].tolist())
    return next((c for c in PITCHED_CHANNELS if c not in used), PITCHED_CHANNELS[-1])


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
