"""Reading sources into encoded pieces, in worker processes: what ``prepare`` fans out.

Holds :func:`encode_chunk` (a worker's job: a chunk of MIDI files, or one music21 song book ->
their pieces, encoded with one set of numpy calls and sent back as one :class:`Encoded`
message), :func:`encode_pieces` (notes of many pieces -> their tokens: the tracks chosen, each
piece moved to its first bar, optionally into its home key), what each piece records for the
index (tempi, metres, key), and ``.mat`` piano rolls read in the parent (:func:`mat_results`).
:mod:`musicrnn.corpus` writes what these return, in a fixed order.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from musicrnn.codecs import Codec, codec_from_dict
from musicrnn.errors import DataError, MusicRNNError
from musicrnn.midi import load_midi_batch
from musicrnn.notes import NOTE_DTYPE, Maps, NoteBatch, piece_index
from musicrnn.roles import RoleChoice, reject_missing_roles
from musicrnn.sources import (
    KEY_ANNOTATION,
    MAT_LOWEST_PITCH,
    Item,
    TrackChoice,
    chosen_notes,
    load_item,
    mat_frame_beats,
    mat_rolls,
    piece_tracks,
    read_key_annotation,
    roll_to_notes,
)
from musicrnn.tonality import Key, estimate_keys, home_shift, pitch_class_profiles

_WORKER_CODEC: tuple[str, Codec] | None = None
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def init_worker() -> None:
    """Let a worker keep the memory it frees (up to 32 MB at a time): glibc otherwise hands
    each large numpy temporary back to the system and takes the page faults of getting it
    again, a third of a worker's time. Its heap stays at its peak, which a chunk bounds. On a
    system without glibc's mallopt there is nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_TRIM_THRESHOLD, 32 << 20)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    except (OSError, AttributeError):
        pass


def _worker_codec(codec_json: str) -> Codec:
    global _WORKER_CODEC
    if _WORKER_CODEC is None or _WORKER_CODEC[0] != codec_json:
        _WORKER_CODEC = (codec_json, codec_from_dict(json.loads(codec_json)))
    return _WORKER_CODEC[1]


# (piece name, tokens, notes kept, rejection reason, info: the piece's index.tsv columns)
Result = tuple[str, "np.ndarray | None", int, "str | None", dict]


@dataclass(frozen=True)
class IngestOptions:
    """What ``prepare`` takes from each file besides the codec (sent to every worker)."""

    tracks: TrackChoice = field(default_factory=TrackChoice)
    key_normalise: bool = False  # transpose each piece by the home_shift of its key
    roles: RoleChoice | None = None  # the tracks of each role, for a codec with roles


DEFAULT_INGEST = IngestOptions()  # every pitched track, no drums, keys as they are


class EncodedPieces(NamedTuple):
    """:func:`encode_pieces`' answer for a batch of pieces."""

    tokens: np.ndarray  # all the pieces' tokens
    bounds: np.ndarray  # piece i is tokens[bounds[i]:bounds[i + 1]]
    notes: list[int]  # notes each piece kept
    reasons: list[str | None]  # why each piece is rejected, or None
    infos: list[dict]  # each piece's index.tsv columns
    tracks: Counter  # (track name, is drum, kept) over the tracks of the accepted pieces


@dataclass
class Encoded:
    """The pieces of a chunk of items, encoded in a worker and sent back as one message (one
    token array, not one per piece): piece ``i`` is ``tokens[bounds[i]:bounds[i + 1]]`` unless
    ``reasons[i]`` says why it was rejected; item ``j`` gave ``per_item[j]`` pieces."""

    names: list[str]
    tokens: np.ndarray
    bounds: np.ndarray
    notes: list[int]
    reasons: list[str | None]
    per_item: list[int]
    infos: list[dict] = field(default_factory=list)
    tracks: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.infos:
            self.infos = [{} for _ in self.names]

    @classmethod
    def join(cls, parts: list[Encoded]) -> Encoded:
        """One message for several."""
        sizes = np.cumsum([0] + [len(part.tokens) for part in parts[:-1]])
        return cls(
            [name for part in parts for name in part.names],
            np.concatenate([part.tokens for part in parts]),
            np.concatenate([[0]] + [part.bounds[1:] + size for part, size in zip(parts, sizes)]),
            [n for part in parts for n in part.notes],
            [r for part in parts for r in part.reasons],
            [k for part in parts for k in part.per_item],
            [info for part in parts for info in part.infos],
            sum((part.tracks for part in parts), Counter()),
        )

    @classmethod
    def rejected(cls, name: str, reason: str) -> Encoded:
        return cls([name], np.zeros(0, np.uint16), np.zeros(2, np.int64), [0], [reason], [1])

    def items(self) -> Iterator[list[Result]]:
        """Per item, its pieces as (name, tokens or None, notes, reason, info)."""
        i = 0
        for count in self.per_item:
            yield [
                (self.names[k], None if self.reasons[k] else self.tokens[self.bounds[k] : self.bounds[k + 1]],
                 self.notes[k], self.reasons[k], self.infos[k])
                for k in range(i, i + count)
            ]
            i += count


def encode_pieces(codec: Codec, batch: NoteBatch, options: IngestOptions = DEFAULT_INGEST,
                  annotated: list[Key | None] | None = None) -> EncodedPieces:
    """The pieces of ``batch`` (note columns as :func:`~musicrnn.midi.load_midi_batch` gives
    them, times in beats) -> their tokens, with what each kept and why a piece is rejected.
    Only the notes of the tracks ``options.tracks`` chooses are kept (by default: every pitched
    track, no drums). Each piece is first moved earlier by whole bars so its first kept note is
    in its first bar (keeps the metre). With ``options.key_normalise`` each piece is transposed
    into its home key (:func:`_key_shifts`; ``annotated`` keys win over estimated ones)."""
    cols, bounds = batch.cols, batch.bounds
    chosen = chosen_notes(batch, options.tracks)
    role = None
    if options.roles is not None:  # a codec with roles: only the tracks of a role, each note with its role
        role = options.roles.of_rows(batch)
        chosen &= role >= 0
        role = role[chosen]
    piece = piece_index(bounds)[chosen]
    pitch, start, end = cols["pitch"][chosen], cols["start"][chosen], cols["end"][chosen]
    infos: list[dict] = [{} for _ in range(len(batch))]
    if options.key_normalise:
        drum = cols["is_drum"][chosen]
        shifts_by_piece, infos = _key_shifts(pitch, end - start, piece, drum, annotated or [None] * len(batch))
        pitch = pitch + (shifts_by_piece[piece] * ~drum).astype(pitch.dtype)  # drum keys are instruments: never moved
    chosen_bounds = np.searchsorted(piece, np.arange(len(bounds)))
    counts = np.diff(chosen_bounds)
    firsts = np.zeros(len(batch))
    if counts.any():
        firsts[counts > 0] = np.minimum.reduceat(start, chosen_bounds[:-1][counts > 0])
    shifts, tempo_maps = zip(*(bar_shift(float(f), maps) if n else (0.0, maps[0])
                               for f, n, maps in zip(firsts.tolist(), counts.tolist(), batch.maps)))
    if any(shifts):
        shift = np.array(shifts)[piece]
        start, end = start - shift, end - shift
    tokens, token_bounds = codec.encode_batch(pitch, cols["velocity"][chosen], start, end, chosen_bounds, list(tempo_maps),
                                              **({} if role is None else {"roles": role}))
    in_range = (pitch >= codec.min_pitch) & (pitch <= codec.max_pitch)
    kept = np.bincount(piece[in_range], minlength=len(batch)).tolist()
    for info, music in zip(infos, _music(piece[in_range], end[in_range], list(tempo_maps), batch.maps, shifts)):
        info.update(music)
    tracks = piece_tracks(batch, chosen)
    reasons = [_empty_reason(codec, options.tracks, t, c) if not (k and n) else None
               for k, n, t, c in zip(kept, np.diff(token_bounds).tolist(), tracks, np.diff(chosen_bounds).tolist())]
    if role is not None:
        reject_missing_roles(reasons, options.roles, role[in_range], piece[in_range], tracks)
    report = Counter(t for ts, r in zip(tracks, reasons) if r is None for t in ts)
    return EncodedPieces(tokens, token_bounds, kept, reasons, infos, report)


def _key_shifts(pitch: np.ndarray, duration: np.ndarray, piece: np.ndarray, drum: np.ndarray,
                annotated: list[Key | None]) -> tuple[np.ndarray, list[dict]]:
    """Per piece, the shift into its home key (:func:`~musicrnn.tonality.home_shift`) and its
    index.tsv columns: its key (annotated, else estimated by Krumhansl–Schmuckler from the
    duration-weighted pitch classes of its pitched notes; one matrix product for the batch)."""
    pitched = ~drum
    estimated = estimate_keys(pitch_class_profiles(pitch[pitched], duration[pitched], piece[pitched], len(annotated)))
    shifts, infos = [], []
    for given, guess in zip(annotated, estimated):
        key = given or guess
        shifts.append(home_shift(key))
        infos.append({"key": str(key), "key_source": KEY_ANNOTATION if given else f"estimated ({guess.score:.2f})",
                      "shift": shifts[-1]})
    return np.array(shifts, np.int16), infos


def _music(piece: np.ndarray, end: np.ndarray, tempo_maps: list[list[tuple[float, float]]], maps: list[Maps],
           shifts: tuple[float, ...]) -> list[dict]:
    """Per piece (rows of ``piece``, sorted; ``end`` in beats after its bar shift), the
    index.tsv columns ``data stats`` sums up: its length in beats (from the start of its first
    bar to its last note's end) and seconds (through its tempo map), its tempo (median over its
    beats, lowest, highest) and the time signatures in force. One pass over each piece's maps
    (a few entries), with one numpy call for the batch's lengths."""
    n = len(tempo_maps)
    bounds = np.searchsorted(piece, np.arange(n + 1))
    beats = np.zeros(n)
    has = np.diff(bounds) > 0
    if has.any():
        beats[has] = np.maximum.reduceat(end, bounds[:-1][has])
    out = []
    for length, tempos, (_, sigs), shift in zip(beats.tolist(), tempo_maps, maps, shifts):
        median, low, high = _tempo_spread(tempos, length)
        out.append({"beats": length, "seconds": _seconds_at(tempos, length), "bpm": median, "bpm_min": low,
                    "bpm_max": high, "time_signatures": " ".join(_metres(sigs, shift, shift + length))})
    return out


def _seconds_at(tempos: list[tuple[float, float]], beat: float) -> float:
    """:func:`~musicrnn.notes.beats_to_seconds` of one beat (``beat`` >= 0; ``tempos`` sorted,
    the first at beat 0), in plain Python with the same float operations in the same order,
    so the same bits: a numpy call per piece would cost more than the arithmetic."""
    secs, k = 0.0, 0
    for j in range(1, len(tempos)):
        if float(tempos[j][0]) > beat:
            break
        secs += (float(tempos[j][0]) - float(tempos[j - 1][0])) * (60.0 / float(tempos[j - 1][1]))
        k = j
    return secs + (beat - float(tempos[k][0])) * (60.0 / float(tempos[k][1]))


def _tempo_spread(tempos: list[tuple[float, float]], length: float) -> tuple[float, float, float]:
    """The median tempo over beats 0..``length`` (each tempo weighted by the beats it lasts),
    and the lowest and highest tempo in force there."""
    if len(tempos) == 1:  # most files: one tempo, whatever the length
        return tempos[0][1], tempos[0][1], tempos[0][1]
    spans = [(bpm, min(length, nxt) - max(0.0, beat))
             for (beat, bpm), nxt in zip(tempos, [t[0] for t in tempos[1:]] + [math.inf])]
    spans = [(bpm, w) for bpm, w in spans if w > 0] or [(tempos[0][1], 1.0)]
    spans.sort()
    half, acc = sum(w for _, w in spans) / 2, 0.0
    median = spans[-1][0]
    for bpm, w in spans:
        acc += w
        if acc >= half:
            median = bpm
            break
    return median, spans[0][0], spans[-1][0]


def _metres(sigs: list[tuple[float, int, int]], start: float, stop: float) -> list[str]:
    """The time signatures in force at some beat in [``start``, ``stop``), in order, once each."""
    seen: list[str] = []
    for (beat, num, den), nxt in zip(sigs, [s[0] for s in sigs[1:]] + [math.inf]):
        if beat < stop and nxt > start or beat <= start < nxt:
            name = f"{num}/{den}"
            if name not in seen:
                seen.append(name)
    return seen


def _empty_reason(codec: Codec, choice: TrackChoice, tracks: list[tuple[str, bool, bool]], chosen: int) -> str:
    """Why a piece without tokens is rejected: none of its tracks chosen, or no note in range."""
    if chosen == 0 and tracks:
        if choice.is_default and all(drum for _, drum, _ in tracks):
            return "no pitched notes (only drum tracks, which are dropped; --drums keep keeps them)"
        names = [f"{name} (drums)" if drum else name for name, drum, _ in tracks]
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        return f"none of its tracks is chosen by {choice.describe()}; its tracks: {shown}"
    return f"no pitched notes within the codec's range {codec.min_pitch}-{codec.max_pitch}"


def bar_shift(first: float, maps: Maps) -> tuple[float, list[tuple[float, float]]]:
    """How far a piece whose first note starts at beat ``first`` moves earlier (whole bars of its
    first time signature), and its tempo map moved with it."""
    tempos, sigs = maps
    _, num, den = sigs[0]
    bar = num * 4.0 / den
    shift = math.floor(first / bar) * bar
    if shift <= 0:
        return 0.0, tempos
    in_force = [t for t in tempos if t[0] <= shift][-1][1]
    return shift, [(0.0, in_force)] + [(b - shift, bpm) for b, bpm in tempos if b > shift]


def _encoded(codec: Codec, names: list[str], batch: NoteBatch, per_item: list[int], options: IngestOptions,
             annotated: list[Key | None] | None = None) -> Encoded:
    """:func:`encode_pieces` as one message for the parent."""
    enc = encode_pieces(codec, batch, options, annotated)
    return Encoded(names, enc.tokens, enc.bounds, [0 if r else k for k, r in zip(enc.notes, enc.reasons)],
                   enc.reasons, per_item, enc.infos, enc.tracks)


def _reason(item: Item, exc: Exception) -> str:
    """The one-line reason an item is rejected for."""
    if isinstance(exc, MusicRNNError):
        reason, prefix = str(exc), f"{item.path}: "
        return reason[len(prefix) :] if reason.startswith(prefix) else reason
    return f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"  # a parser bug must not stop a 100k-file run


def encode_chunk(job: tuple) -> Encoded:
    """Worker: ``(items, codec JSON[, IngestOptions])``, a chunk of items (MIDI files, or one
    other item: see :func:`chunk_items`) -> their pieces, encoded together. A file that fails is
    rejected alone; should the chunk as a whole fail, each item is tried on its own."""
    items, codec_json, *rest = job
    options = rest[0] if rest else DEFAULT_INGEST
    codec = _worker_codec(codec_json)
    try:
        if items[0].kind == "midi":
            return _encode_midi(codec, items, options)
        return _encode_other(codec, items[0], options)
    except Exception as exc:
        if len(items) == 1:
            return Encoded.rejected(items[0].name, _reason(items[0], exc))
        return Encoded.join([encode_chunk(([it], codec_json, options)) for it in items])


def _encode_midi(codec: Codec, items: list[Item], options: IngestOptions) -> Encoded:
    batch, errors = load_midi_batch([it.path for it in items])
    annotated: list[Key | None] = []
    if options.key_normalise:
        for i, item in enumerate(items):
            try:
                annotated.append(read_key_annotation(item.path))
            except DataError as exc:
                annotated.append(None)
                errors[i] = errors[i] or exc
    enc = _encoded(codec, [it.name for it in items], batch, [1] * len(items), options, annotated)
    for i, (item, exc) in enumerate(zip(items, errors)):
        if exc is not None:
            enc.reasons[i] = _reason(item, exc)
    return enc


def _encode_other(codec: Codec, item: Item, options: IngestOptions) -> Encoded:
    """A music21 song book: its pieces, encoded together."""
    pieces = load_item(item)
    if not pieces:
        return Encoded([], np.zeros(0, np.uint16), np.zeros(1, np.int64), [], [], [0])
    batch = NoteBatch.join([({k: piece.notes[k] for k in NOTE_DTYPE.names}, (piece.tempos, piece.time_signatures))
                            for _, piece in pieces])
    return _encoded(codec, [name for name, _ in pieces], batch, [len(pieces)], options)


def chunk_items(items: list[Item], size: int) -> list[list[Item]]:
    """Consecutive MIDI files in chunks of up to ``size`` (one message and one set of numpy
    calls per chunk); any other item (a music21 song book) is a chunk of its own."""
    chunks: list[list[Item]] = []
    for item in items:
        if item.kind == "midi" and chunks and chunks[-1][0].kind == "midi" and len(chunks[-1]) < size:
            chunks[-1].append(item)
        else:
            chunks.append([item])
    return chunks


def mat_results(items: list[Item], codec: Codec, key_normalise: bool = False) -> Iterator[list[Result]]:
    """Encode .mat pieces in this process (each file is read once), each moved into its home
    key (estimated) with ``key_normalise``."""
    cache: dict[tuple[str, str], list[np.ndarray]] = {}
    for item in items:
        key = (item.path, item.split or "train")
        if key not in cache:
            cache[key] = mat_rolls(item.path, key[1])
        roll = cache[key][item.index]
        info: dict = {"beats": roll.shape[0] * mat_frame_beats(item.path)}  # rolls have no tempo or metre
        if key_normalise:
            on = np.nonzero(roll)
            shifts, [key_info] = _key_shifts(on[1] + MAT_LOWEST_PITCH, np.ones(len(on[0])), np.zeros(len(on[0]), np.int64),
                                         np.zeros(len(on[0]), np.bool_), [None])
            roll = _shift_roll(roll, int(shifts[0]))
            info.update(key_info)
        frame_beats = mat_frame_beats(item.path)
        notes = roll_to_notes(roll, frame_beats)
        # frame for frame when the codec's grid is the roll's grid, so NLL per frame matches
        # the published protocol (empty frames included)
        tokens = codec.encode_frames(roll, frame_beats, MAT_LOWEST_PITCH)
        if tokens is None:
            tokens = codec.encode(notes)
        if len(tokens) == 0:
            yield [(item.name, None, 0, "empty piano roll", info)]
        else:
            yield [(item.name, tokens, len(notes), None, info)]


def _shift_roll(roll: np.ndarray, semitones: int) -> np.ndarray:
    """A piano roll moved up by ``semitones``; pitches pushed off its keyboard are dropped."""
    out = np.zeros_like(roll)
    width = roll.shape[1]
    if semitones >= 0:
        out[:, semitones:] = roll[:, : width - semitones]
    else:
        out[:, :semitones] = roll[:, -semitones:]
    return out
