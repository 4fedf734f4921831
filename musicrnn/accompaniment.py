"""Offline accompaniment (`musicrnn compose --accompany`): a model of a codec with roles plays
the accompaniment under the melodies of MIDI files, all of them at once as the rows of one batch.

Each row reads its melody frame by frame, as the model learnt it: the frame's melody part
(fed: :meth:`~musicrnn.codecs.accompany.AccompanyCodec.melody_frames`), then the model's own
part sampled under the codec's grammar until STEP. Before the melody's first onset and after its
last note the accompaniment is silent (those frames are fed whole), so every accompaniment note
lies within the melody's span (cut to it where the grid rounds the first onset earlier); the
decoder closes every note at the melody's end.

The frames lie on the melody's own beat grid, not the file's: a MIDI file made from a recording
(POP909's) has its notes off its tick grid by a fraction of a frame, and its beats a few frames
off the file's beats. :func:`musicrnn.metre.melody_grid` finds where the melody's beats fall; the
model hears the melody moved onto the frames from there, and its accompaniment is moved back, so
it sounds on the melody's beats (the melody itself is written as it was).

The harmony follower (``follow_chords``, on by default) leans the accompaniment's new notes
towards the chord of each beat that the whole melody implies (:mod:`musicrnn.harmony`).

Per input, one MIDI file named after it: the melody tracks (and any drum tracks) as the file has
them, the tempo map and time signatures kept, and a track ``musicrnn`` with the accompaniment.
A key-normalised model hears each melody moved into C by its key (estimated, or ``--key``'s
tonic) and its accompaniment is moved back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from musicrnn.codecs import BOS, KIND_NOTE_ON, KIND_STEP, Codec
from musicrnn.codecs.accompany import ACCOMPANIMENT
from musicrnn.compose import NEW_TRACK_NAME, _next_channel, _with_own_channels
from musicrnn.errors import MidiError, MusicRNNError
from musicrnn.harmony import chord_prior, estimate_chords, lean
from musicrnn.inference import Stepper, stepper_for
from musicrnn.ingest import bar_shift
from musicrnn.metre import Metre, melody_grid
from musicrnn.midi import load_midi, read_track_names, write_midi
from musicrnn.model import MusicRNN
from musicrnn.notes import Piece
from musicrnn.sample import RowRandom, SamplingConfig, sample_next
from musicrnn.tonality import Key, estimate_key, home_shift

MELODY_ROLE, ACCOMPANIMENT_ROLE = "melody", "accompaniment"


@dataclass
class AccompanyOptions:
    inputs: list[Path]
    out: Path = Path("out")
    melody_tracks: list[str] | None = None  # the model's melody track names (lower case); None: every pitched track
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # key and range in output pitches
    max_note_beats: float = 0.0  # longest accompaniment note (0 = no limit)
    key_tonic: int | None = None  # --key's tonic: the melodies' key for a key-normalised model
    key_tonics: list[int | None] | None = None  # or one per input (None: estimated), e.g. annotated keys
    home_key_model: bool = False  # the model knows one home key: melodies are moved into it
    program: int = 0
    seed: int = 0
    png: bool = False
    device: str = "cpu"
    precision: str = "fp32"
    overwrite: bool = False
    follow_chords: float = 1.0  # the harmony follower's strength (0 = off; see musicrnn.harmony)


@dataclass
class Melody:
    """One input as the output keeps it, and its melody as the model hears it."""

    path: Path
    piece: Piece  # the kept notes (melody tracks and drums), beats
    track_names: dict[int, str]
    melody: np.ndarray  # the melody's notes, beats
    chosen: str  # which tracks are the melody, in words
    shift: int  # model pitch = output pitch + shift
    offset: float  # beats the model's frame 0 lies after the file's beat 0: a beat of the melody's own grid
    key: Key  # the melody's key (output pitches), for its chords
    beat_phase: float  # where the melody's beats fall on the file's beats (0-1)
    bar_beats: float  # beats in its first bar


@dataclass
class AccompaniedPiece:
    path: Path
    melody: str  # which tracks were the melody
    melody_notes: int
    notes: int  # accompaniment notes
    seconds: float
    bars: float
    shift: int
    png: Path | None = None


def check_roles(codec: Codec, model_name: str) -> None:
    """``--accompany`` needs a model whose codec has a melody and an accompaniment role."""
    if MELODY_ROLE not in codec.roles or ACCOMPANIMENT_ROLE not in codec.roles:
        raise MusicRNNError(
            f"--model {model_name}: its {codec.name} codec has no melody and accompaniment roles, so it cannot "
            "accompany; give --model a checkpoint trained on data prepared with --codec accompany --roles "
            "melody=MELODY --roles accompaniment=PIANO")


def read_melody(path: Path, opts: AccompanyOptions, steps_per_beat: int = 4, tonic: int | None = None) -> Melody:
    """An input file: its melody (the tracks named as the model's melody tracks, else every
    pitched track), its key (on ``tonic``, else ``opts.key_tonic``, if given), moved for a
    key-normalised model, and the grid of its beats (``steps_per_beat`` frames a beat); the
    other pitched tracks are left out."""
    piece = load_midi(path)
    names = read_track_names(path)
    pitched = ~piece.notes["is_drum"]
    wanted = set(opts.melody_tracks or ())
    named = np.array([names.get(int(t), "").strip().lower() in wanted for t in piece.notes["track"]], bool)
    if (named & pitched).any():
        is_melody = named & pitched
        used = sorted({names[int(t)] for t in piece.notes["track"][is_melody]})
        chosen = f"track{'s' if len(used) > 1 else ''} {', '.join(used)}"
    else:
        is_melody = pitched
        why = f"no track named {', '.join(sorted(wanted))}" if wanted else "the model names no melody tracks"
        chosen = f"all pitched tracks ({why})"
    if not is_melody.any():
        raise MidiError(f"{path}: no pitched notes to accompany; give a MIDI file with a melody")
    melody = piece.notes[is_melody].copy()
    lengths = melody["end"] - melody["start"]
    tonic = opts.key_tonic if tonic is None else tonic
    if tonic is not None:
        key = estimate_key(melody["pitch"], lengths, candidates=[Key(tonic, m) for m in ("major", "minor")])
    else:
        key = estimate_key(melody["pitch"], lengths)
    shift = home_shift(key.tonic) if opts.home_key_model else 0
    first = float(melody["start"].min())
    bar, _ = bar_shift(first, (piece.tempos, piece.time_signatures))
    phase = melody_grid(melody["start"], lengths, steps_per_beat)
    # frame 0: the melody's beat at its first bar line, or the beat before it where that comes after the first onset
    offset = bar + phase - np.ceil(max(bar + phase - first - 0.5 / steps_per_beat, 0.0))
    kept = Piece(piece.notes[is_melody | piece.notes["is_drum"]], piece.tempos, piece.time_signatures, piece.source)
    return Melody(path, kept, names, melody, chosen, shift, float(offset), key, phase,
                  Metre().bar_beats(piece.time_signatures, first))


def accompany(model: MusicRNN | Stepper, codec: Codec, opts: AccompanyOptions) -> list[AccompaniedPiece]:
    """Write the accompanied file of every input (all or nothing; an existing output is
    refused unless ``opts.overwrite``) and return their summaries. ``model``: a network, run
    as ``opts`` says, or a ready :class:`Stepper` of that codec (the n-gram baseline's, which
    ``benchmarks/accompany.py`` measures against the network)."""
    out = Path(opts.out)
    targets = [out / f"{Path(p).stem}.mid" for p in opts.inputs]
    _check_targets(opts.inputs, targets, opts.overwrite)
    tonics = opts.key_tonics or [None] * len(opts.inputs)
    melodies = [read_melody(Path(p), opts, int(codec.steps_per_unit), t) for p, t in zip(opts.inputs, tonics)]
    sampling = opts.sampling
    sampling.max_note_steps = int(round(codec.beats_to_steps(opts.max_note_beats))) if opts.max_note_beats else 0
    sampling.validate(codec)
    frames = [_model_frames(codec, m) for m in melodies]
    nats = [chord_nats(codec, m, len(f[0]), opts.follow_chords) for m, f in zip(melodies, frames)]
    stepper = model if isinstance(model, Stepper) else stepper_for(model, opts.device, opts.precision)
    tokens = play_along(stepper, codec, frames, sampling, [m.shift for m in melodies], opts.seed,
                        nats if opts.follow_chords > 0 else None)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".accompany-", suffix=".tmp", dir=out))
    try:  # all or nothing: every file is made aside, then moved into place
        done = [_write(codec, m, toks, staging / t.name, out, opts) for m, toks, t in zip(melodies, tokens, targets)]
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return done


def _check_targets(inputs: list[Path], targets: list[Path], overwrite: bool) -> None:
    seen: dict[str, Path] = {}
    for src, target in zip(inputs, targets):
        if target.name in seen:
            raise MusicRNNError(f"{seen[target.name]} and {src} would both be written to {target}; give inputs with "
                                "different file names")
        seen[target.name] = Path(src)
        if target.exists() and not overwrite:
            raise MusicRNNError(f"{target} already exists; give --overwrite to replace it, or another -o")


def _model_frames(codec: Codec, m: Melody) -> tuple[list[np.ndarray], int, int]:
    """The melody part of each frame as the model hears it (moved by ``shift``, from the bar of
    its first note), and the frames where the accompaniment may play: first onset to last end."""
    notes = m.melody.copy()
    notes["pitch"] = notes["pitch"] + m.shift
    notes["start"] = np.maximum(notes["start"] - m.offset, 0.0)  # a first onset before its grid's beat: on it
    notes["end"] -= m.offset
    parts = codec.melody_frames(notes)
    first = int(np.rint(notes["start"].min() * codec.steps_per_unit))
    return parts, min(first, len(parts)), len(parts)


def chord_nats(codec: Codec, m: Melody, frames: int, strength: float) -> np.ndarray:
    """[frames, 12]: the harmony follower's nats per pitch class (as the model hears them) for
    the new accompaniment notes of each frame: the chords the whole melody implies, beat by beat
    on its own grid (:func:`musicrnn.harmony.estimate_chords`)."""
    if strength <= 0:
        return np.zeros((frames, 12), np.float32)
    chords = estimate_chords(m.melody, m.key, m.beat_phase, m.bar_beats)
    times = m.offset + (np.arange(frames) + 0.5) / codec.steps_per_unit  # each frame's middle, in the file's beats
    return chord_prior(chords.at(times), strength, m.shift)


def allowed_rows(codec: Codec, cfg: SamplingConfig, shifts: list[int]) -> np.ndarray:
    """Per row, the model pitches a new accompaniment note may use: those whose output pitch
    (model pitch - shift) is in ``cfg``'s key and range."""
    pitches = np.arange(codec.min_pitch, codec.max_pitch + 1)
    out = np.ones((len(shifts), len(pitches)), bool)
    for i, s in enumerate(shifts):
        heard = pitches - s
        if cfg.pitch_range:
            out[i] &= (heard >= cfg.pitch_range[0]) & (heard <= cfg.pitch_range[1])
        if cfg.key is not None:
            out[i] &= np.isin(heard % 12, list(cfg.key))
    return out


def play_along(stepper: Stepper, codec: Codec, frames: list[tuple[list[np.ndarray], int, int]],
               cfg: SamplingConfig, shifts: list[int], seed: int,
               nats: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """All rows at once: row i reads frame after frame of ``frames[i]`` (melody parts, and the
    first and end frame where it plays), fed its melody part, then sampling its part until
    STEP (outside its frames to play: STEP fed at once), its new notes leaning by
    ``nats[i][frame, pitch class]`` where given (:func:`musicrnn.harmony.lean`: their total chance
    kept). Row i draws from ``(seed, i)`` only.
    Returns each row's whole token sequence (melody and accompaniment, no BOS)."""
    batch = len(frames)
    rows = stepper.fresh(batch)
    cons = codec.constraints(batch, cfg)
    allowed = allowed_rows(codec, cfg, shifts)
    if not allowed.any(axis=1).all():
        raise MusicRNNError("no accompaniment pitch satisfies --key and --pitch-range for a melody in this key; "
                            "widen --pitch-range or change --key")
    cons.allowed = allowed
    rand = RowRandom([(seed, i) for i in range(batch)])
    is_step = codec.token_kind == KIND_STEP
    step_token = int(np.flatnonzero(is_step)[0])
    queues: list[list[int]] = [[] for _ in range(batch)]
    frame = [0] * batch
    played: list[list[int]] = [[] for _ in range(batch)]
    for i in range(batch):
        _queue_frame(queues[i], frames[i], 0, step_token)
    cur = np.full(batch, BOS, np.int64)
    bias = _NatsBias(codec, nats) if nats is not None else None
    with rows.kernels(), threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        rows.prime([])
        while any(queues[i] or frame[i] < len(frames[i][0]) for i in range(batch)):
            logits = rows.step(cur)
            mask = cons.mask()
            if bias is not None:
                logits = bias(logits, frame, mask)
            sampled = sample_next(logits, cfg, rand.next(), mask).numpy()
            nxt = np.full(batch, BOS, np.int64)
            for i in range(batch):
                if queues[i]:
                    nxt[i] = queues[i].pop(0)
                elif frame[i] < len(frames[i][0]):
                    nxt[i] = sampled[i]
                else:
                    continue  # finished: reads BOS, which changes no constraint state
                played[i].append(int(nxt[i]))
                if is_step[nxt[i]]:
                    frame[i] += 1
                    _queue_frame(queues[i], frames[i], frame[i], step_token)
            cons.update(nxt)
            cur = nxt
    return [np.array(p, np.int64) for p in played]


class _NatsBias:
    """Per row and frame, nats per pitch class that new accompaniment notes lean by (see play_along)."""

    def __init__(self, codec: Codec, nats: list[np.ndarray]) -> None:
        self.table = [np.asarray(n, np.float32) for n in nats]
        self.on = (codec.token_kind == KIND_NOTE_ON) & (codec.token_role == ACCOMPANIMENT)  # A_ON
        self.pc = np.where(self.on, codec.token_pitch % 12, 0)

    def __call__(self, logits, frame: list[int], allowed: np.ndarray) -> np.ndarray:
        rows = np.stack([t[min(f, len(t) - 1)] if len(t) else np.zeros(12, np.float32)
                         for t, f in zip(self.table, frame)])  # [batch, 12]
        x = logits.numpy(force=True) if isinstance(logits, torch.Tensor) else np.asarray(logits)
        return lean(x, rows[:, self.pc], self.on, allowed)


def _queue_frame(queue: list[int], frames: tuple[list[np.ndarray], int, int], k: int, step_token: int) -> None:
    """Queue frame ``k``'s fed tokens: its melody part, and STEP too where the model stays silent."""
    parts, first, end = frames
    if k >= len(parts):
        return
    queue.extend(parts[k].tolist())
    if not first <= k < end:
        queue.append(step_token)


def _write(codec: Codec, m: Melody, tokens: np.ndarray, path: Path, out: Path, opts: AccompanyOptions) -> AccompaniedPiece:
    """One output file: the kept tracks as they were, the accompaniment on a track of its own."""
    acc = codec.decode_roles(tokens)[ACCOMPANIMENT_ROLE].copy()
    acc["pitch"] = acc["pitch"] - m.shift
    # in the file's beats, within the melody's span to the tick (the grid may round its first onset earlier)
    acc["start"] = np.maximum(acc["start"] + m.offset, m.melody["start"].min())
    acc["end"] = np.minimum(acc["end"] + m.offset, m.melody["end"].max())
    acc = acc[acc["end"] > acc["start"] + 1e-9]
    kept = _with_own_channels(m.piece.notes)
    acc_track = int(kept["track"].max()) + 1 if len(kept) else 0
    acc["track"] = acc_track
    acc["channel"] = _next_channel(kept)
    acc["program"] = opts.program
    acc["is_drum"] = False
    names = {**m.track_names, acc_track: NEW_TRACK_NAME}
    piece = Piece(np.concatenate([kept, acc]), m.piece.tempos, m.piece.time_signatures)
    write_midi(piece, path, track_names=names)
    bar = Metre().bar_beats(m.piece.time_signatures)
    png = None
    if opts.png:
        from musicrnn.plot import piano_roll_png

        pitched = piece.notes[~piece.notes["is_drum"]]
        shown = Piece(pitched, piece.tempos, piece.time_signatures)
        png = out / piano_roll_png(shown, path.with_suffix(".png"), beats_per_bar=bar,
                                   parts=pitched["track"] == acc_track).name
    return AccompaniedPiece(out / path.name, m.chosen, len(m.melody), len(acc), piece.duration_seconds,
                            piece.duration_beats / bar, m.shift, png)
