"""What every codec is: the base class the codecs in this package fill in.

Holds:
- :class:`Codec`: the musical vocabulary (notes <-> token ids, in batch and one event at a
  time) and everything the rest of musicrnn asks a codec instead of testing which one it is:
  its time unit and the one beats -> steps conversion (:meth:`Codec.beats_to_steps`), its
  grammar (:meth:`Codec.constraints`), its live decision unit (:attr:`Codec.live_unit` and the
  ``live_*`` methods), its frames, augmentations and `musicrnn data prepare` options.
- token kinds (``KIND_*``), shared by all codecs so samplers build masks without knowing one.
- :class:`NoteEvent`: what the streaming decoder emits (velocity 0 means note-off).
- :class:`StreamEncoder` / :class:`StreamDecoder`: live events in, tokens out, and back.
  :class:`FrameStreamEncoder`: the encoder of codecs written in grid frames, less how a frame is
  written.
- :class:`Constraints`: the grammar's base: per-sequence state that masks the logits while
  sampling (each codec subclasses it).

Token 0 is BOS (start of piece) in every codec. Notes given to ``encode`` and returned by
``decode`` have times in the codec's unit (``codec.time_unit``: "seconds" or "beats");
``encode_piece``/``decode_piece`` convert from and to :class:`~musicrnn.notes.Piece`.

No torch at import: data preparation's worker processes load codecs and nothing else.

Kept as one file: it is the whole contract a codec's author reads and imports from (the
vocabulary, the stream coders' and the grammar's bases, the helpers they share), and a codec is
written against all of it at once.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from musicrnn.errors import CodecError, MusicRNNError
from musicrnn.notes import DEFAULT_BPM, NOTE_DTYPE, Piece, beats_to_seconds_batch, piece_index

if TYPE_CHECKING:  # only for type hints (musicrnn.sample imports this module)
    from musicrnn.codecs.options import CliOption
    from musicrnn.sample import SamplingConfig

BOS = 0
CODEC_FORMAT_VERSION = 1
MAX_VOCAB = 65536  # prepared data stores tokens as uint16
# note times (in grid steps) below this let the batch encoders sort several keys packed into
# one int64: 37 hours on a 1 ms grid; longer ones (corrupt or synthetic) use np.lexsort
PACKED_STEPS = 1 << 27
MAX_STEPS_PER_UNIT = 1000  # finest time grid: 1 ms (seconds unit) or 1/1000 beat (beats unit)
PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

# token kinds, shared by all codecs so samplers can build masks without knowing the codec
# (KIND_ROLE: a role separator, in codecs with roles)
KIND_BOS, KIND_NOTE_ON, KIND_NOTE_OFF, KIND_SHIFT, KIND_VELOCITY, KIND_HOLD, KIND_STEP, KIND_ROLE = range(8)


def pitch_name(pitch: int) -> str:
    """60 -> 'C4' (scientific pitch notation, middle C = C4)."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


class NoteEvent(NamedTuple):
    """A note-on (velocity > 0) or note-off (velocity 0) at ``time`` in the codec's unit."""

    time: float
    pitch: int
    velocity: int

    def message(self, channel: int = 0):
        """This event as a mido message."""
        import mido

        kind = "note_on" if self.velocity > 0 else "note_off"
        return mido.Message(kind, note=self.pitch, velocity=self.velocity, channel=channel)


class Codec(ABC):
    """Common interface of the codecs. Subclasses fill ``token_kind`` and ``token_pitch``.

    A new codec is a subclass in a file of its own plus a line in the registry
    (:data:`musicrnn.codecs.CODECS`): its vocabulary and encode/decode (the abstract methods),
    its grammar (:meth:`constraints`), and, to be played live, a :attr:`live_unit`.
    """

    name: str  # the registry's key and the ``type`` in to_dict
    summary: str = ""  # what it is, in a few words (`data prepare --codec` help)
    time_unit: str  # "seconds" or "beats"
    min_pitch: int
    max_pitch: int
    # the `musicrnn data prepare` options that set this codec's config (see from_cli)
    cli_options: tuple[CliOption, ...] = ()
    # what the live engine asks for at a time (see the "live play" methods below): "event" (the
    # next note or wait), "frame" (the next frame), None (live play does not know this codec)
    live_unit: str | None = None
    has_frames = False  # tokens come in frames (count_frames counts them: NLL per frame)
    # the parts a codec with roles keeps apart (e.g. ("melody", "accompaniment")): `data prepare
    # --roles` names each one's tracks, and encode_batch gets each note's role (an index in this)
    roles: tuple[str, ...] = ()
    can_stretch = False  # stretch() time-stretches tokens (training augmentation)

    def __init__(self) -> None:
        if self.vocab_size > MAX_VOCAB:
            raise CodecError(f"vocabulary of {self.vocab_size} tokens is more than the {MAX_VOCAB} that token files hold")
        self.token_kind = np.zeros(self.vocab_size, np.int8)
        self.token_pitch = np.full(self.vocab_size, -1, np.int16)
        self._fill_tables()
        # a token's pitch index, for vectorised transposition; -1 where the token has no pitch
        self._pitch_index = np.where(self.token_pitch >= 0, self.token_pitch - self.min_pitch, -1)

    # --- vocabulary -------------------------------------------------------------------------
    @property
    def num_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def _fill_tables(self) -> None: ...

    @abstractmethod
    def token_name(self, token: int) -> str:
        """A readable name such as ``NOTE_ON(60 C4)`` for debugging."""

    def names(self, tokens) -> list[str]:
        return [self.token_name(int(t)) for t in tokens]

    @property
    @abstractmethod
    def steps_per_unit(self) -> float:
        """Grid steps per second (seconds unit) or per beat (beats unit)."""

    # --- batch ------------------------------------------------------------------------------
    def encode(self, notes: np.ndarray) -> np.ndarray:
        """Notes (times in the codec unit) -> uint16 token ids, without BOS."""
        notes = np.asarray(notes)
        if notes.dtype != NOTE_DTYPE:
            raise CodecError("notes must be a NOTE_DTYPE array (see musicrnn.notes.make_notes)")
        bounds = np.array([0, len(notes)])
        return self._encode_batch(notes["pitch"], notes["velocity"], notes["start"], notes["end"], bounds)[0]

    @abstractmethod
    def _encode_batch(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` on the note columns of several pieces at once (piece ``i`` is rows
        ``bounds[i]:bounds[i + 1]``): all their tokens, and the pieces' bounds in them. Each
        piece's tokens are exactly what it gives alone."""

    def decode(self, tokens) -> np.ndarray:
        """Token ids -> notes (times in the codec unit). Any token sequence decodes to valid
        notes: unmatched offs are ignored and every open note is closed at the end."""
        dec = self.stream_decoder()
        events: list[NoteEvent] = []
        for t in _token_ids(tokens):
            events.extend(dec.feed(t))
        events.extend(dec.close())
        return events_to_notes(events)

    def quantize(self, notes: np.ndarray) -> np.ndarray:
        """What ``decode(encode(notes))`` returns: the notes as this codec represents them."""
        return self.decode(self.encode(notes))

    def encode_piece(self, piece: Piece) -> np.ndarray:
        """A :class:`Piece` -> tokens (no BOS); drum notes are left out."""
        notes = piece.notes
        pitched = ~notes["is_drum"]
        pitch, velocity, start, end = (notes[k][pitched] for k in ("pitch", "velocity", "start", "end"))
        return self.encode_batch(pitch, velocity, start, end, np.array([0, len(pitch)]), [piece.tempos])[0]

    def encode_batch(
        self,
        pitch: np.ndarray,
        velocity: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        bounds: np.ndarray,
        tempo_maps: list[list[tuple[float, float]]],
        roles: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_piece` for several pieces at once, given as note columns (times in
        beats, no drums; no structured array to build or copy): piece ``i`` is rows
        ``bounds[i]:bounds[i + 1]`` with tempo map ``tempo_maps[i]``. Returns all the tokens and
        the pieces' bounds in them. ``prepare`` encodes a chunk of files this way, with one
        numpy call per step instead of one per file. ``roles``: each note's role (an index in
        :attr:`roles`), for codecs with roles only (their ``_encode_batch`` takes it)."""
        if self.time_unit == "seconds":  # one pass through the tempo maps
            start, end = beats_to_seconds_batch(tempo_maps, bounds, np.stack([start, end]))
        if roles is not None:
            return self._encode_batch(pitch, velocity, start, end, bounds, roles=roles)  # type: ignore[call-arg]
        return self._encode_batch(pitch, velocity, start, end, bounds)

    def decode_piece(self, tokens, bpm: float = 120.0, program: int = 0) -> Piece:
        """Tokens -> a :class:`Piece` in beats at ``bpm`` (seconds-unit codecs are converted)."""
        notes = self.decode(tokens)
        if self.time_unit == "seconds":
            notes["start"] *= bpm / 60.0
            notes["end"] *= bpm / 60.0
        notes["program"] = program
        return Piece(notes, tempos=[(0.0, float(bpm))])

    # --- streaming --------------------------------------------------------------------------
    @abstractmethod
    def stream_encoder(self) -> StreamEncoder: ...

    @abstractmethod
    def stream_decoder(self) -> StreamDecoder: ...

    # --- augmentation -----------------------------------------------------------------------
    def transpose(self, tokens: np.ndarray, semitones: int) -> np.ndarray | None:
        """Tokens moved by ``semitones``, or None if a pitch would leave the codec's range."""
        if semitones == 0:
            return tokens
        idx = self._pitch_index[tokens]
        has = idx >= 0
        moved = idx[has] + semitones
        if moved.size and (moved.min() < 0 or moved.max() >= self.num_pitches):
            return None
        out = tokens.copy()
        out[has] = tokens[has].astype(np.int64) + semitones  # uint16 tokens cannot take a negative int
        return out

    def transpose_range(self, tokens: np.ndarray) -> tuple[int, int]:
        """The (down, up) semitone shifts that keep every pitch of ``tokens`` in range."""
        idx = self._pitch_index[tokens]
        idx = idx[idx >= 0]
        if idx.size == 0:
            return 0, 0
        return -int(idx.min()), int(self.num_pitches - 1 - idx.max())

    def stretch(self, tokens: np.ndarray, factor: float) -> np.ndarray:
        """Time-stretch augmentation (codecs with ``can_stretch``): the same tokens played
        ``factor`` times as long."""
        raise CodecError(f"the {self.name} codec cannot time-stretch tokens")

    # --- frames -----------------------------------------------------------------------------
    def count_frames(self, tokens: np.ndarray) -> int:
        """Frames in ``tokens`` (codecs with ``has_frames``; 0 for the others)."""
        return 0

    def encode_frames(self, roll: np.ndarray, frame_beats: float, lowest_pitch: int) -> np.ndarray | None:
        """A piano roll (frames of ``frame_beats`` beats, column 0 = ``lowest_pitch``) as tokens
        frame for frame, where this codec's grid is the roll's grid (so NLL per frame matches
        the published piano-roll protocol, empty frames included); None: encode its notes."""
        return None

    # --- roles (codecs with ``roles``) -------------------------------------------------------
    def decode_roles(self, tokens) -> dict[str, np.ndarray]:
        """Token ids -> notes per role name (codecs with :attr:`roles`)."""
        raise CodecError(f"the {self.name} codec has no roles")

    def melody_frames(self, notes: np.ndarray) -> list[np.ndarray]:
        """Per frame, the tokens of the part a player plays (the first of :attr:`roles`), up to
        where the model's part begins: what accompanying feeds (codecs with roles)."""
        raise CodecError(f"the {self.name} codec has no roles")

    # --- time -------------------------------------------------------------------------------
    @property
    def follows_tempo(self) -> bool:
        """Codec time counts beats (it follows a DAW's tempo); False: it counts seconds."""
        return self.time_unit == "beats"

    def units_per_beat(self, bpm: float = DEFAULT_BPM) -> float:
        """Codec time units in one beat at ``bpm`` (1 in beats; the tempo matters to seconds only)."""
        return 60.0 / bpm if self.time_unit == "seconds" else 1.0

    def beats_per_unit(self, bpm: float = DEFAULT_BPM) -> float:
        """Beats in one codec time unit at ``bpm`` (the inverse of :meth:`units_per_beat`)."""
        return bpm / 60.0 if self.time_unit == "seconds" else 1.0

    def beats_to_steps(self, beats: float, bpm: float = DEFAULT_BPM) -> float:
        """The one beats -> codec steps conversion (compose's lengths and note limits, the
        live engine's note cap, the live lookahead, eval's samples); callers round."""
        return beats * (self.steps_per_unit * self.units_per_beat(bpm))

    def piece_beats(self, piece: Piece, time: float) -> float:
        """Codec time ``time`` as a beat of ``piece`` (seconds go through its tempo map)."""
        return float(piece.beats(time)) if self.time_unit == "seconds" else time

    # --- grammar ----------------------------------------------------------------------------
    def constraints(self, batch: int, cfg: SamplingConfig) -> Constraints:
        """This codec's grammar and the musical limits of ``cfg`` as masks for ``batch`` rows."""
        raise MusicRNNError(f"no sampling constraints for codec {self.name!r}")

    # --- live play --------------------------------------------------------------------------
    # The engine (musicrnn.live.engine) samples on a fork of the stream: with live_unit "event"
    # tokens until one is not a VELOCITY (a note, or a wait: KIND_SHIFT), with "frame" tokens
    # until a STEP (its stream encoder counts ``frame``s; its decoder's ``_sounding`` is the
    # frame before). These methods are what it asks beyond that.
    def live_mask(self, mask: np.ndarray, model_notes: dict[int, float], human_notes: set[int], force_note: bool,
                  after_velocity: bool = False) -> np.ndarray:
        """The grammar's ``mask`` [1, vocab] cut down for live play: ``model_notes`` and
        ``human_notes`` (pitches) are who sounds what; ``force_note``: the next token must be
        a note if any may be; ``after_velocity``: a VELOCITY was just sampled. Returns
        ``mask`` itself when nothing changes, and never a mask that allows nothing."""
        return mask

    def live_max_note_steps(self, max_note_beats: float) -> int:
        """The note-length limit (steps) live play sets when the sampling config has none:
        0 for no limit, where notes end by themselves (the scheduler caps them anyway)."""
        return 0

    @property
    def longest_wait(self) -> float:
        """For "event" codecs: the longest time one token waits (codec units)."""
        raise CodecError(f"the {self.name} codec has no waits")

    def live_strike(self, pitch: int, sounding_before: set[int]) -> int:
        """For "frame" codecs: the velocity a NOTE_ON token of ``pitch`` strikes with at the end of
        its frame, known as soon as it is sampled (given the pitches that sounded in the frame
        before), or 0 where only the frame's end tells (the engine then waits for it)."""
        return 0

    # --- command line -----------------------------------------------------------------------
    @classmethod
    def from_cli(cls, values: dict[str, Any], source_steps_per_beat: int | None = None) -> Codec:
        """The codec `musicrnn data prepare` builds from its option values (``values``: every
        codec's options by parameter name; ``source_steps_per_beat``: the sources' own grid,
        e.g. a piano roll's, or None)."""
        raise CodecError(f"the {cls.name} codec has no command-line options")

    def cli_reference(self) -> Codec:
        """The codec `data prepare --codec NAME` builds with no other options, for the options
        that tell this one apart (see :func:`musicrnn.codecs.prepare_options`)."""
        return type(self)()

    # --- persistence ------------------------------------------------------------------------
    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k not in ("type", "version"))
        return f"{type(self).__name__}({args})"

    # --- shared helpers ---------------------------------------------------------------------
    def _normalise(
        self, pitch: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray, bounds: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Quantise to the grid, keep in-range pitches, make same-pitch notes not overlap.

        Returns (pitch, on_step, off_step, velocity, piece, rank) sorted by (piece, pitch,
        on_step); every note is at least one step long and ends no later than the next note of
        the same pitch in its piece starts. ``rank`` orders the notes by (piece, on_step,
        -off_step) (see :func:`inverse_order`): nearly sorted keys sort fast.
        """
        piece = piece_index(bounds)
        keep = (
            (pitch >= self.min_pitch)
            & (pitch <= self.max_pitch)
            & np.isfinite(start)
            & np.isfinite(end)
            & (start >= 0)
        )
        if not keep.all():
            pitch, velocity, start, end, piece = pitch[keep], velocity[keep], start[keep], end[keep], piece[keep]
        res = self.steps_per_unit
        on = np.rint(start * res).astype(np.int64)  # np.round's result, without its Python wrapper
        off = np.maximum(np.rint(end * res).astype(np.int64), on + 1)
        vel = np.minimum(np.maximum(velocity.astype(np.int64), 1), 127)
        piece = piece.astype(np.int64)
        # np.lexsort's order in two stable passes, several times faster: (piece, on, -off), packed
        # in one key when it fits (notes come roughly in that order, which timsort uses), then
        # (piece, pitch) (pitch is 0..127 here: a radix sort as int16 for up to 256 pieces)
        if len(on) and on.min() >= 0 and off.max() < PACKED_STEPS and len(bounds) <= 513:
            by_time = np.argsort((piece << 54) | (on << 27) | (PACKED_STEPS - 1 - off), kind="stable")
        else:
            by_time = np.lexsort((-off, on, piece))
        major = (piece << 7) | pitch
        rank = np.argsort((major.astype(np.int16) if len(bounds) <= 257 else major)[by_time], kind="stable")
        order = by_time[rank]
        pitch = pitch.astype(np.int64)
        pitch, on, off, vel, piece = pitch[order], on[order], off[order], vel[order], piece[order]
        if len(pitch):
            same = (pitch[1:] == pitch[:-1]) & (piece[1:] == piece[:-1])
            first = np.ones(len(pitch), bool)
            first[1:] = ~same | (on[1:] != on[:-1])
            if not first.all():
                pitch, on, off, vel, piece, rank = pitch[first], on[first], off[first], vel[first], piece[first], rank[first]
                same = (pitch[1:] == pitch[:-1]) & (piece[1:] == piece[:-1])
            off[:-1] = np.where(same, np.minimum(off[:-1], on[1:]), off[:-1])  # a fresh array
        return pitch, on, off, vel, piece, rank


def _token_ids(tokens) -> list[int]:
    """Token ids as Python ints (the stream decoders ignore ids outside the vocabulary)."""
    try:
        return np.asarray(tokens, dtype=np.int64).ravel().tolist()
    except OverflowError:  # Python ints beyond int64: outside every vocabulary, but not an error
        return [int(t) for t in np.asarray(tokens, dtype=object).ravel()]


def inverse_order(rank: np.ndarray) -> np.ndarray:
    """Indices that put items in the order of their ``rank`` (distinct ints, not necessarily
    0..n-1): ``np.argsort(rank)`` without a sort."""
    slot = np.full(int(rank.max()) + 1 if len(rank) else 0, -1, np.int64)
    slot[rank] = np.arange(len(rank))
    return slot[slot >= 0]


def repeat_positions(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of ``counts`` slots starting at ``starts``: (absolute slot, index in group)."""
    total = int(counts.sum())
    group_first = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(total) - group_first
    return np.repeat(starts, counts) + within, within


def events_to_notes(events: list[NoteEvent]) -> np.ndarray:
    """Pair note-ons with note-offs (events in time order) into a note array."""
    open_notes: dict[int, tuple[float, int]] = {}
    rows: list[tuple[int, int, float, float]] = []
    for ev in events:
        if ev.velocity > 0:
            if ev.pitch in open_notes:  # a re-strike ends the sounding note first
                s, v = open_notes.pop(ev.pitch)
                if ev.time > s:
                    rows.append((ev.pitch, v, s, ev.time))
            open_notes[ev.pitch] = (ev.time, ev.velocity)
        elif ev.pitch in open_notes:
            s, v = open_notes.pop(ev.pitch)
            if ev.time > s:
                rows.append((ev.pitch, v, s, ev.time))
    out = np.zeros(len(rows), NOTE_DTYPE)
    if rows:
        arr = np.array(rows, dtype=np.float64)
        out["pitch"], out["velocity"], out["start"], out["end"] = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
    return out[np.lexsort((out["pitch"], out["start"]))]


class StreamEncoder(ABC):
    """Live events in, tokens out, one event at a time. Times are in the codec's unit and must
    not go backwards (a late event is treated as happening now)."""

    @abstractmethod
    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]: ...

    @abstractmethod
    def note_off(self, time: float, pitch: int) -> list[int]: ...

    @abstractmethod
    def advance(self, time: float) -> list[int]:
        """Tokens for time passing up to ``time`` with nothing played."""


class FrameStreamEncoder(StreamEncoder):
    """The live encoder of codecs written in grid frames (``codec.steps_per_beat``): frame k
    closes (its tokens are emitted) once time rounds to step k + 1 (round half to even, the
    rounding the batch encoders use); notes struck and released inside a step still sound in
    it. A codec fills in :meth:`frame_tokens`, one closed frame's tokens."""

    def __init__(self, codec: Any) -> None:
        self.c = codec
        self.frame = 0
        self._sounding: set[int] = set()
        self._touched: set[int] = set()  # sounded in the frame being filled, maybe released since
        self._struck: set[int] = set()

    @abstractmethod
    def frame_tokens(self, sounding: set[int], struck: set[int]) -> list[int]:
        """A whole frame, STEP included: ``sounding`` pitches, of which ``struck`` began in it."""

    def _frame_of(self, time: float) -> int:
        return max(self.frame, int(round(time * self.c.steps_per_beat)))

    def close_frame(self, write: Callable[[set[int], set[int]], list[int]] | None = None) -> list[int]:
        """The frame being filled, written by ``write`` (default :meth:`frame_tokens`); the next begins."""
        out = (write or self.frame_tokens)(self._sounding | self._touched, self._struck)
        self._touched.clear()
        self._struck.clear()
        self.frame += 1
        return out

    def advance(self, time: float) -> list[int]:
        out: list[int] = []
        target = self._frame_of(time)
        while self.frame < target:
            out += self.close_frame()
        return out

    def note_on(self, time: float, pitch: int, velocity: int) -> list[int]:
        if velocity <= 0:
            return self.note_off(time, pitch)
        if not (self.c.min_pitch <= pitch <= self.c.max_pitch):
            return []
        out = self.advance(time)
        self._sounding.add(pitch)
        self._touched.add(pitch)
        self._struck.add(pitch)
        return out

    def note_off(self, time: float, pitch: int) -> list[int]:
        if pitch not in self._sounding:
            return []
        out = self.advance(time)
        self._sounding.discard(pitch)
        return out


class StreamDecoder(ABC):
    """Tokens in, note events out, one token at a time. The base holds what decoders share: the
    codec ``c``, the pitches sounding (``_sounding``) and a token's kind."""

    def __init__(self, codec: Codec) -> None:
        self.c = codec
        self._sounding: set[int] = set()

    @abstractmethod
    def feed(self, token: int) -> list[NoteEvent]: ...

    @abstractmethod
    def close(self) -> list[NoteEvent]:
        """Note-offs for every sounding note at the current time."""

    @property
    @abstractmethod
    def time(self) -> float:
        """Current time in the codec's unit."""

    @property
    def sounding(self) -> set[int]:
        """Pitches currently on."""
        return set(self._sounding)

    def kind(self, token: int) -> int:
        """The token's kind (``KIND_*``); -1 for one outside the vocabulary (a decoder reads any
        token a model samples)."""
        return self.c.token_kind[token] if 0 <= token < self.c.vocab_size else -1

    def _release_all(self) -> list[NoteEvent]:
        """Note-offs now for every sounding pitch, lowest first; then none sounds."""
        out = [NoteEvent(self.time, p, 0) for p in sorted(self._sounding)]
        self._sounding.clear()
        return out


# ============================================================================================
# grammar: the constraints' base
# ============================================================================================


def token_ids(tokens) -> np.ndarray:
    """Sampled tokens (a tensor, an array or a list) as an int64 numpy array."""
    return np.asarray(tokens.numpy(force=True) if hasattr(tokens, "numpy") else tokens, dtype=np.int64)


class Constraints:
    """Masks for a batch of sequences of one codec; ``update`` with each sampled token.

    They enforce the codec's grammar (each codec subclasses this in its own file) and the
    musical limits of a :class:`~musicrnn.sample.SamplingConfig` (key, range, polyphony, note
    lengths) *while* sampling, so timing is never broken by post-hoc filtering. numpy inside (a
    live session asks for one row per token, where torch's per-op overhead would dominate);
    :meth:`mask` gives a numpy bool array [B, vocab], :attr:`steps` a tensor.
    """

    _state: tuple[str, ...] = ()  # the arrays that change as tokens come in (copied by fork)

    def __init__(self, codec: Codec, batch: int, cfg: SamplingConfig) -> None:
        self.codec, self.batch, self.cfg = codec, batch, cfg
        self.kind = codec.token_kind.astype(np.int64)
        pitch = codec.token_pitch.astype(np.int64)
        self.pidx = np.where(pitch >= 0, pitch - codec.min_pitch, 0)
        self.allowed = cfg.allowed_pitches(codec)  # replace (never edit) to change the pitches
        self.rows = np.arange(batch)

    def mask(self) -> np.ndarray:
        raise NotImplementedError

    def update(self, tokens) -> None:
        raise NotImplementedError

    def step_counts(self) -> np.ndarray:
        """Codec steps generated so far per row (frames, or time-shift steps), int64 [B]."""
        raise NotImplementedError

    @property
    def steps(self):
        """:meth:`step_counts` as a tensor (torch is imported by then: the samplers use it)."""
        import torch

        return torch.from_numpy(self.step_counts())

    def fork(self) -> Constraints:
        """An independent copy (the live engine samples ahead on one)."""
        new = copy.copy(self)
        for name in self._state:
            setattr(new, name, getattr(self, name).copy())
        return new

    @staticmethod
    def for_codec(codec: Codec, batch: int, cfg: SamplingConfig) -> Constraints:
        """The constraints of ``codec``'s grammar (the codec makes them)."""
        return codec.constraints(batch, cfg)
