"""Reading and writing MIDI files (the notes they become: :mod:`musicrnn.notes`).

Holds:
- :func:`load_midi`: any MIDI file into a :class:`Piece`, or :class:`~musicrnn.errors.MidiError`
  with a one-line reason. symusic parses (about 100x faster than pretty_midi); mido is the
  fallback for files symusic refuses. :func:`load_midi_batch` reads many files into one
  :class:`NoteBatch` (plain arrays, no Piece), for ``prepare``.
- :func:`write_midi`: a :class:`Piece` back to a standard MIDI file, written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from musicrnn.errors import MidiError
from musicrnn.fileio import atomic_write
from musicrnn.notes import DEFAULT_BPM, NOTE_DTYPE, Columns, Maps, NoteBatch, Piece, make_notes, piece_index

WRITE_TICKS_PER_BEAT = 480
# The longest piece read: 65536 beats (about 9 hours at 120 BPM). Real files stay far below
# (the longest in the test corpus: ~7,000 beats), but one corrupt delta time can put a note at
# beat 10^12, and every codec's token count (the grid codec's memory) grows with the length.
MAX_PIECE_BEATS = 65536


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    for prefix in ("MiniMidi: ",):
        text = text.replace(prefix, "")
    return text.replace(": iostream error", "") or type(exc).__name__


def _reason_for_bytes(path: Path) -> str | None:
    """Cheap checks that give clearer reasons than a parser's message."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    with open(path, "rb") as fh:
        head = fh.read(4)
    return _reason_for_head(size, head)


def _reason_for_head(size: int, head: bytes) -> str | None:
    """:func:`_reason_for_bytes` for a file of ``size`` bytes that begins with ``head``."""
    if size == 0:
        return "empty file (0 bytes)"
    if head != b"MThd":
        if head == b"RIFF":
            return "RIFF-wrapped MIDI (.rmi) is not supported; export a standard .mid"
        return "not a MIDI file (no 'MThd' header)"
    if size < 14:
        return f"corrupt MIDI: truncated header ({size} bytes)"
    return None


class _ScoreNotes(NamedTuple):
    """A score's notes as symusic gives them, track by track (tracks with notes only): turned
    into columns for a whole chunk of files at once by :func:`_score_columns`."""

    tpq: float
    arrays: list[dict[str, np.ndarray]]  # time, duration, pitch, velocity
    programs: np.ndarray
    indices: np.ndarray  # the tracks' places in the file
    drums: list[bool]
    names: list[str]  # every track's name, by place (tracks without notes too)


def _from_symusic(path: Path, data: bytes) -> tuple[_ScoreNotes, Maps]:
    import symusic

    score = symusic.Score.from_midi(data, ttype="tick")
    tpq = float(score.ticks_per_quarter)
    if tpq <= 0:
        raise MidiError(f"{path}: corrupt MIDI: SMPTE time division is not supported")
    tracks = [(ti, track, track.notes.numpy()) for ti, track in enumerate(score.tracks)]
    tracks = [t for t in tracks if len(t[2]["pitch"])]
    notes = _ScoreNotes(
        tpq,
        [arr for _, _, arr in tracks],
        np.array([t.program for _, t, _ in tracks], np.int16),
        np.array([ti for ti, _, _ in tracks], np.int16),
        [t.is_drum for _, t, _ in tracks],
        [t.name for t in score.tracks],
    )
    tempos = [(t.time / tpq, float(t.qpm)) for t in score.tempos]
    sigs = [(s.time / tpq, int(s.numerator), int(s.denominator)) for s in score.time_signatures]
    return notes, _clean_maps(tempos, sigs)


def _score_columns(scores: list[tuple[int, _ScoreNotes]]) -> tuple[Columns, np.ndarray]:
    """The note columns of many ``(piece, score notes)`` with one numpy call per column, and
    the piece of each row."""
    arrays = [arr for _, notes in scores for arr in notes.arrays]
    if not arrays:
        return _no_notes(), np.zeros(0, np.int64)
    counts = [len(arr["pitch"]) for arr in arrays]

    def joined(key: str, dtype: type | None = None) -> np.ndarray:
        return np.concatenate([arr[key] for arr in arrays], dtype=dtype)

    def per_track(values: list | np.ndarray) -> np.ndarray:
        return np.repeat(values, counts)

    time, tpq = joined("time"), per_track([notes.tpq for _, notes in scores for _ in notes.arrays])
    drum = per_track(np.array([d for _, notes in scores for d in notes.drums], np.bool_))
    cols = {
        "pitch": joined("pitch", np.int16),
        "velocity": joined("velocity", np.int16),
        "start": time / tpq,
        "end": (time + joined("duration")) / tpq,
        "program": per_track(np.concatenate([notes.programs for _, notes in scores])),
        "is_drum": drum,
        "track": per_track(np.concatenate([notes.indices for _, notes in scores])),
        "channel": drum * np.int16(9),
    }
    return cols, per_track([i for i, notes in scores for _ in notes.arrays])


def _no_notes() -> Columns:
    return {name: np.zeros(0, NOTE_DTYPE[name]) for name in NOTE_DTYPE.names}


def _from_mido(path: Path) -> tuple[Columns, Maps, list[str]]:
    import mido

    mid = mido.MidiFile(str(path), clip=True)
    if mid.type == 2:
        raise MidiError(f"{path}: MIDI type 2 (independent patterns) is not supported")
    tpq = float(mid.ticks_per_beat)
    rows: list[tuple] = []
    tempos: list[tuple[float, float]] = []
    sigs: list[tuple[float, int, int]] = []
    names = [track.name for track in mid.tracks]
    for ti, track in enumerate(mid.tracks):
        tick = 0
        programs = [0] * 16
        open_notes: dict[tuple[int, int], list[tuple[float, int]]] = {}
        for msg in track:
            tick += msg.time
            beat = tick / tpq
            if msg.type == "set_tempo":
                tempos.append((beat, mido.tempo2bpm(msg.tempo)))
            elif msg.type == "time_signature":
                sigs.append((beat, msg.numerator, msg.denominator))
            elif msg.type == "program_change":
                programs[msg.channel] = msg.program
            elif msg.type == "note_on" and msg.velocity > 0:
                open_notes.setdefault((msg.channel, msg.note), []).append((beat, msg.velocity))
            elif msg.type in ("note_off", "note_on"):
                stack = open_notes.get((msg.channel, msg.note))
                if stack:
                    start, vel = stack.pop(0)
                    rows.append((msg.note, vel, start, beat, programs[msg.channel], msg.channel == 9, ti, msg.channel))
    notes = make_notes(rows) if rows else np.zeros(0, NOTE_DTYPE)
    return {name: notes[name] for name in NOTE_DTYPE.names}, _clean_maps(tempos, sigs), names


def _clean_maps(tempos, sigs):
    # stable sort on time only: events at the same time keep their file order (the last wins below)
    tempos = sorted(((max(0.0, b), float(bpm)) for b, bpm in tempos if bpm > 0 and math.isfinite(bpm)), key=lambda t: t[0])
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0.0, DEFAULT_BPM))  # MIDI's default before the first tempo event
    dedup: dict[float, float] = {}
    for b, bpm in tempos:
        dedup[b] = bpm  # the last tempo event at a time wins, as a sequencer would play it
    sigs = sorted((max(0.0, b), int(n), int(d)) for b, n, d in sigs if n > 0 and d > 0)
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0.0, 4, 4))
    return list(dedup.items()), sigs


def sanitize_notes(notes: np.ndarray) -> np.ndarray:
    """Drop impossible notes and sort by (start, pitch).

    Removes pitches outside 0..127, non-finite or negative times and zero-length notes; clips
    velocity to 1..127. Real files contain all of these.
    """
    cols = {name: notes[name] for name in NOTE_DTYPE.names}
    return _sorted_notes(_sanitize_columns(cols, np.array([0, len(notes)]))[0])


def _sanitize_columns(cols: Columns, bounds: np.ndarray) -> tuple[Columns, np.ndarray]:
    """:func:`sanitize_notes` on the columns of several pieces (rows ``bounds[i]:bounds[i + 1]``),
    but each piece sorted by start only (stable: notes that start together keep their order),
    which is all the codecs need and much cheaper than by (start, pitch): the tracks are already
    in time order. Returns the columns and the pieces' new row bounds."""
    pitch, start, end = cols["pitch"], cols["start"], cols["end"]
    ok = (pitch >= 0) & (pitch <= 127) & np.isfinite(start) & np.isfinite(end) & (start >= 0) & (end > start)
    idx = np.flatnonzero(ok)
    bounds = np.searchsorted(idx, bounds)
    # piece by piece: timsort merges a piece's few runs (its tracks) in a pass or two, but the
    # many runs of a whole chunk in many
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        rows = idx[lo:hi]
        idx[lo:hi] = rows[np.argsort(start[rows], kind="stable")]
    out = {name: col[idx] for name, col in cols.items()}
    out["velocity"] = np.minimum(np.maximum(out["velocity"], 1), 127)
    return out, bounds


def _sorted_notes(cols: Columns) -> np.ndarray:
    """Columns sorted by start -> a note array sorted by (start, pitch)."""
    order = np.lexsort((cols["pitch"], cols["start"]))
    return make_notes(**{name: col[order] for name, col in cols.items()})


def load_midi(path: str | os.PathLike, require_notes: bool = True) -> Piece:
    """Load a MIDI file into a :class:`Piece` (times in beats), or raise :class:`MidiError`.

    The error message is one line: ``<path>: <reason>`` (corrupt, not a MIDI file, empty,
    no notes, too long: a note past :data:`MAX_PIECE_BEATS`). With ``require_notes=False`` a
    valid file without notes loads as an empty piece.
    """
    batch, errors = load_midi_batch([path], require_notes)
    if errors[0] is not None:
        raise errors[0]
    tempos, sigs = batch.maps[0]
    return Piece(_sorted_notes(batch.cols), tempos, sigs, source=str(Path(path)))


def load_midi_batch(
    paths: list[str | os.PathLike], require_notes: bool = True
) -> tuple[NoteBatch, list[Exception | None]]:
    """Many MIDI files at once, for ``prepare`` (numpy's overhead per call, paid once per step
    for all the files, would cost more than parsing): a :class:`NoteBatch` with one piece per
    path, the notes of each sorted by start only (see :func:`_sanitize_columns`), and per path
    the error that :func:`load_midi` would raise, or None. A file that fails has no notes in
    the batch."""
    files = [Path(p) for p in paths]
    cols, bounds, maps, errors, names = _read_files(files)
    cols, bounds = _sanitize_columns(cols, bounds)
    counts = np.diff(bounds)
    ends = np.zeros(len(files))
    if counts.any():
        ends[counts > 0] = np.maximum.reduceat(cols["end"], bounds[:-1][counts > 0])
    for i, path in enumerate(files):
        if errors[i] is None:
            errors[i] = _piece_problem(path, int(counts[i]), float(ends[i]), require_notes)
    bad = np.array([e is not None for e in errors])
    if bad[counts > 0].any():  # a piece too long: its notes leave the batch
        keep = ~bad[piece_index(bounds)]
        cols = {name: col[keep] for name, col in cols.items()}
        counts[bad] = 0
        bounds = np.concatenate([[0], np.cumsum(counts)])
    # tempo and metre changes past the limit affect no note (and could not be written back)
    maps = [
        ([t for t in tempos if t[0] <= MAX_PIECE_BEATS], [s for s in sigs if s[0] <= MAX_PIECE_BEATS])
        for tempos, sigs in maps
    ]
    return NoteBatch(cols, bounds, maps, names), errors


def _read_files(files: list[Path]) -> tuple[Columns, np.ndarray, list[Maps], list[Exception | None], list[list[str]]]:
    """Parse files one by one, then put all their notes (unsanitised) in one set of columns:
    (columns, pieces' row bounds, maps, errors, track names). A file that fails has no notes."""
    errors: list[Exception | None] = [None] * len(files)
    parsed: list[_ScoreNotes | Columns] = []
    maps: list[Maps] = []
    names: list[list[str]] = []
    for i, path in enumerate(files):
        try:
            notes, piece_maps, piece_names = _parse(path)
        except Exception as exc:  # one file's failure, whatever it is, stays that file's
            errors[i], notes, piece_maps, piece_names = exc, _no_notes(), _clean_maps([], []), []
        parsed.append(notes)
        maps.append(piece_maps)
        names.append(piece_names)
    cols, piece = _score_columns([(i, n) for i, n in enumerate(parsed) if isinstance(n, _ScoreNotes)])
    others = [(i, n) for i, n in enumerate(parsed) if not isinstance(n, _ScoreNotes) and len(n["pitch"])]
    if others:  # read by mido: their rows go to their pieces' places
        cols = {name: np.concatenate([cols[name]] + [n[name] for _, n in others]) for name in NOTE_DTYPE.names}
        piece = np.concatenate([piece] + [np.full(len(n["pitch"]), i) for i, n in others])
        order = np.argsort(piece, kind="stable")
        cols, piece = {name: col[order] for name, col in cols.items()}, piece[order]
    return cols, np.searchsorted(piece, np.arange(len(files) + 1)), maps, errors, names


def _parse(p: Path) -> tuple[_ScoreNotes | Columns, Maps, list[str]]:
    """One file's notes (unsanitised; as symusic gives them, or columns from mido), maps and
    track names (by the notes' ``track`` numbers), or :class:`MidiError`."""
    try:
        data = p.read_bytes()  # read once, for the checks and the parser
    except OSError:
        _check_file(p)  # the reason the checks give
        raise
    reason = _reason_for_head(len(data), data[:4])
    if reason:
        raise MidiError(f"{p}: {reason}")
    try:
        notes, maps = _from_symusic(p, data)
        return notes, maps, notes.names
    except MidiError:
        raise
    except Exception as first:  # symusic refuses some files mido can read (and vice versa)
        try:
            return _from_mido(p)
        except MidiError:
            raise
        except Exception:
            raise MidiError(f"{p}: corrupt MIDI: {_one_line(first)}") from None


def _check_file(p: Path) -> None:
    """Raise :class:`MidiError` with a clear reason if ``p`` is missing, a folder or no MIDI file."""
    if not p.exists():
        raise MidiError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise MidiError(f"{p}: is a folder, not a MIDI file")
    reason = _reason_for_bytes(p)
    if reason:
        raise MidiError(f"{p}: {reason}")


def _piece_problem(p: Path, notes: int, duration: float, require_notes: bool) -> MidiError | None:
    """Why a parsed file (``notes`` sane notes, the last ending at beat ``duration``) is refused."""
    if require_notes and notes == 0:
        return MidiError(f"{p}: no notes (the file is valid MIDI but contains no playable notes)")
    if duration > MAX_PIECE_BEATS:
        return MidiError(
            f"{p}: too long: a note ends at beat {duration:.6g}, past the {MAX_PIECE_BEATS} beats "
            "(about 9 hours at 120 BPM) musicrnn reads; a corrupt delta time is the usual cause"
        )
    return None


def read_track_names(path: str | os.PathLike) -> dict[int, str]:
    """The names of a file's tracks by the ``track`` index :func:`load_midi` gives its notes
    (empty names left out), so that a primer's tracks keep their names when written back."""
    data = Path(path).read_bytes()
    try:
        import symusic

        tracks = symusic.Score.from_midi(data, ttype="tick").tracks
        return {i: t.name for i, t in enumerate(tracks) if t.name}
    except Exception:  # the file was read by mido (see _parse): its indices are the file's tracks
        import io

        import mido

        mid = mido.MidiFile(file=io.BytesIO(data), clip=True)  # mido reads text as latin-1 bytes
        return {i: t.name.encode("latin-1").decode("utf-8", "replace") for i, t in enumerate(mid.tracks) if t.name}


def write_midi(piece: Piece, path: str | os.PathLike, ticks_per_beat: int = WRITE_TICKS_PER_BEAT,
               track_names: dict[int, str] | None = None) -> Path:
    """Write a :class:`Piece` as a type-1 MIDI file; one track per (track, program, channel,
    drum), named from ``track_names`` (by the notes' ``track`` index) where given.

    The file appears complete or not at all (written to a temporary file, then renamed).
    """
    import mido

    path = Path(path)
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    meta = mido.MidiTrack()
    events: list[tuple[int, int, mido.MetaMessage]] = []
    for beat, bpm in piece.tempos:
        events.append((round(beat * ticks_per_beat), 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))))
    for beat, num, den in piece.time_signatures:
        events.append(
            (round(beat * ticks_per_beat), 1, mido.MetaMessage("time_signature", numerator=num, denominator=den))
        )
    _append_sorted(meta, events)
    mid.tracks.append(meta)

    notes = sanitize_notes(piece.notes)
    groups: dict[tuple[int, int, int, bool], list[int]] = {}
    for i, (tr, prog, ch, drum) in enumerate(zip(notes["track"], notes["program"], notes["channel"], notes["is_drum"])):
        groups.setdefault((int(tr), int(prog), 9 if drum else int(ch) % 16, bool(drum)), []).append(i)
    for (tr, prog, ch, drum), idx in sorted(groups.items()):
        track = mido.MidiTrack()
        evs: list[tuple[int, int, mido.Message]] = []
        if (track_names or {}).get(tr):
            # as UTF-8 bytes (mido writes text as latin-1): names in any script survive
            name = track_names[tr].encode("utf-8").decode("latin-1")  # type: ignore[index]
            evs.append((0, -2, mido.MetaMessage("track_name", name=name)))
        if not drum:
            evs.append((0, -1, mido.Message("program_change", program=prog % 128, channel=ch)))
        sub = notes[idx]
        on_t = np.round(sub["start"] * ticks_per_beat).astype(np.int64)
        off_t = np.maximum(np.round(sub["end"] * ticks_per_beat).astype(np.int64), on_t + 1)
        for n, t0, t1 in zip(sub, on_t, off_t):
            pitch, vel = int(n["pitch"]), int(n["velocity"])
            # note-offs sort before note-ons at the same tick, so a re-struck note is heard again
            evs.append((int(t0), 1, mido.Message("note_on", note=pitch, velocity=vel, channel=ch)))
            evs.append((int(t1), 0, mido.Message("note_off", note=pitch, velocity=0, channel=ch)))
        _append_sorted(track, evs)
        mid.tracks.append(track)

    with atomic_write(path) as fh:
        mid.save(file=fh)
    return path


def _append_sorted(track, events) -> None:
    events.sort(key=lambda e: (e[0], e[1]))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
