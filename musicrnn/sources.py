"""Corpus sources: where training pieces come from.

Holds :func:`find_items`, which turns each ``SRC`` given to ``musicrnn data prepare`` into a
list of :class:`Item` (one piece each, with its split when the source defines one), and
:func:`load_item`, which reads one item into notes. Three kinds of source:

- a folder of MIDI files (recursive; ``.mid .midi .kar .smf``) or a single MIDI file;
- a Boulanger-Lewandowski piano-roll ``.mat`` file (keeps its own train/valid/test split);
- ``music21:NAME`` (e.g. ``music21:bach``), a corpus shipped with music21 (``corpora`` extra).

``.mat`` files are parsed in a child process: scipy's MATLAB reader is not hardened against
corrupt or crafted files (a mutated file made it crash with SIGSEGV, scipy 1.17), so a bad file
becomes a :class:`DataError` instead of taking the whole run down.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicrnn.errors import DataError, MidiError, MusicRNNError
from musicrnn.midi import load_midi
from musicrnn.notes import NOTE_DTYPE, NoteBatch, Piece
from musicrnn.tonality import Key, parse_key

MIDI_SUFFIXES = {".mid", ".midi", ".kar", ".smf"}
MAT_SPLITS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
# beats per frame of the known piano-roll benchmarks: JSB is sampled in quarter notes, the
# others in eighth notes (Boulanger-Lewandowski et al. 2012)
MAT_FRAME_BEATS = {"jsb": 1.0, "nottingham": 0.5, "musedata": 0.5, "piano": 0.5}
MAT_LOWEST_PITCH = 21  # column 0 of the 88-key rolls is A0
MAT_READ_TIMEOUT_S = 300.0  # the child process reading a .mat file is killed after this long
_MAT_BAD_FILE = 3  # the child's exit status for "read it, and it is not a usable piano-roll file"


@dataclass(frozen=True)
class Item:
    """One piece to prepare: ``name`` says where it came from (reports, index files); ``key``
    is its path relative to the source given (posix separators), which alone chooses its split,
    so renaming or moving the source folder moves no piece between splits."""

    kind: str  # "midi" | "mat" | "music21"
    name: str
    path: str
    split: str | None = None  # fixed by the source (.mat), else chosen by hash
    index: int = 0  # piece index inside a .mat split
    key: str = ""  # the split key (see above); the name when empty

    def piece_key(self, piece_name: str) -> str:
        """The split key of one of this item's pieces (a song-book tune adds its '#N')."""
        suffix = piece_name.removeprefix(self.name) if piece_name.startswith(self.name) else ""
        return (self.key or self.name) + suffix


SPLIT_RULE = (
    "split key = the file's path relative to the source given (posix separators; a song-book tune "
    "adds '#N'); x = first 8 bytes of sha1('SEED:KEY') as a big-endian integer / 2**64; "
    "train if x < train fraction, valid if x < train + valid fraction, else test; "
    ".mat piano rolls keep their published split"
)


def hash_fraction(key: str, seed: int = 0) -> float:
    """A stable number in [0, 1) from a piece's split key and the split seed: adding files never
    moves other files, and another seed gives another split of the same files."""
    text = f"{int(seed)}:{key}"
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def choose_split(key: str, fractions: tuple[float, float, float], seed: int = 0) -> str:
    """The split of a piece with split key ``key`` (see :data:`SPLIT_RULE`)."""
    x = hash_fraction(key, seed)
    train, valid, _ = fractions
    if x < train:
        return "train"
    if x < train + valid:
        return "valid"
    return "test"


DRUM_CHOICES = ("drop", "keep", "only")
UNNAMED = "(unnamed)"


@dataclass(frozen=True)
class TrackChoice:
    """Which notes of a multi-track MIDI file go into the data. A pitched track is kept when
    its name is one of ``names`` (any case; None = any name) and its program one of
    ``programs`` (None = any); drum tracks follow ``drums`` alone: ``drop`` them, ``keep``
    them (their hits become notes at their GM drum key numbers), or keep ``only`` them."""

    names: frozenset[str] | None = None  # lower case, stripped
    programs: frozenset[int] | None = None  # General MIDI program numbers 0-127
    drums: str = "drop"

    @classmethod
    def parse(cls, tracks: str | None = None, programs: str | None = None, drums: str = "drop") -> TrackChoice:
        """From the CLI's ``--tracks MELODY,PIANO``, ``--programs 0-7,24`` and ``--drums``."""
        if drums not in DRUM_CHOICES:
            raise DataError(f"--drums {drums}: choose one of {', '.join(DRUM_CHOICES)}")
        names = None
        if tracks is not None:
            names = frozenset(n.strip().lower() for n in tracks.split(",") if n.strip())
            if not names:
                raise DataError(f"--tracks {tracks!r}: give track names separated by commas, e.g. --tracks MELODY,PIANO")
        return cls(names, None if programs is None else _parse_programs(programs), drums)

    @property
    def is_default(self) -> bool:
        return self.names is None and self.programs is None and self.drums == "drop"

    def describe(self) -> str:
        """The options that make this choice, for messages."""
        parts = []
        if self.names is not None:
            parts.append(f"--tracks {','.join(sorted(self.names))}")
        if self.programs is not None:
            parts.append(f"--programs {_ranges(sorted(self.programs))}")
        parts.append(f"--drums {self.drums}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        return {"tracks": None if self.names is None else sorted(self.names),
                "programs": None if self.programs is None else sorted(self.programs), "drums": self.drums}


def _parse_programs(text: str) -> frozenset[int]:
    """``"0-7,24"`` -> {0, ..., 7, 24}."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
        except ValueError:
            a, b = -1, -1
        if not 0 <= a <= b <= 127:
            raise DataError(f"--programs {text}: give General MIDI program numbers 0-127 or ranges, e.g. --programs 0-7,24")
        out.update(range(a, b + 1))
    return frozenset(out)


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 24] -> "0-3,24"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def chosen_notes(batch: NoteBatch, choice: TrackChoice) -> np.ndarray:
    """Which rows of ``batch`` ``choice`` keeps, with one numpy call per step for the whole
    batch (names are looked up once per track, not per note)."""
    drum = batch.cols["is_drum"]
    if choice.drums == "only":
        return drum.copy()
    keep = ~drum
    if choice.programs is not None:
        table = np.zeros(128, np.bool_)
        table[list(choice.programs)] = True
        keep &= table[np.clip(batch.cols["program"], 0, 127)]
    if choice.names is not None:
        keep &= _track_table(batch, lambda name: name.strip().lower() in choice.names)[_track_ids(batch)]
    if choice.drums == "keep":
        keep |= drum
    return keep


def _track_ids(batch: NoteBatch) -> np.ndarray:
    """Each row's track as one number over the whole batch: piece ``i`` has the slots
    ``firsts[i] .. firsts[i] + len(track_names[i])``, its last one for rows of no named track
    (a piece without track names)."""
    lens = np.array([len(names) for names in batch.track_names], np.int64)
    firsts = np.concatenate([[0], np.cumsum(lens + 1)[:-1]])
    counts = np.diff(batch.bounds)
    ids = batch.cols["track"].astype(np.int64)  # in place from here: a few passes over every note
    np.maximum(ids, 0, out=ids)
    np.minimum(ids, np.repeat(lens, counts), out=ids)
    ids += np.repeat(firsts, counts)
    return ids


def _track_table(batch: NoteBatch, f) -> np.ndarray:
    """``f(name)`` for every slot of :func:`_track_ids`."""
    return np.array([f(n) for names in batch.track_names for n in [*names, ""]], np.bool_)


def track_values(batch: NoteBatch, f) -> np.ndarray:
    """Per row of ``batch``, ``f(its track's name)`` (an int; the name "" for rows of no named
    track), with ``f`` called once per track, not per note."""
    return np.array([f(n) for names in batch.track_names for n in [*names, ""]], np.int64)[_track_ids(batch)]


def piece_tracks(batch: NoteBatch, keep: np.ndarray) -> list[list[tuple[str, bool, bool]]]:
    """Per piece of ``batch``, its tracks that have notes as ``(name, is_drum, kept)``, where
    ``keep`` marks the rows kept (see :func:`chosen_notes`); none for a piece without tracks.
    One bincount per column for the batch, then a loop over the tracks with notes (a few per
    file), not over notes."""
    lens = [len(names) for names in batch.track_names]
    firsts = np.cumsum([0] + [n + 1 for n in lens])
    code = _track_ids(batch)  # slot * 4 + kept * 2 + drum: one bincount for the three counts
    code *= 4
    code += keep.astype(np.int64) * 2
    code += batch.cols["is_drum"]
    counts = np.bincount(code, minlength=4 * firsts[-1]).reshape(-1, 4)
    kept = (counts[:, 2] + counts[:, 3]) > 0
    drums = (counts[:, 1] + counts[:, 3]) > 0
    slots = np.flatnonzero(counts.any(1))
    pieces = np.searchsorted(firsts, slots, side="right") - 1
    out: list[list[tuple[str, bool, bool]]] = [[] for _ in lens]
    for slot, i, k, d in zip(slots.tolist(), pieces.tolist(), kept[slots].tolist(), drums[slots].tolist()):
        names = batch.track_names[i]
        if names:  # a piece without track names (music21) reports none; its last slot: no named track
            name = names[slot - firsts[i]] if slot - firsts[i] < len(names) else ""
            out[i].append((" ".join(name.split()) or UNNAMED, d, k))
    return out


KEY_ANNOTATION = "key_audio.txt"  # POP909's key changes, beside each song's MIDI file


def read_key_annotation(midi_path: str | Path) -> Key | None:
    """The key of the MIDI file at ``midi_path`` from the annotation file beside it
    (:data:`KEY_ANNOTATION`, lines ``start_s end_s key`` as in POP909): the key that covers most
    of the song's duration; None when there is no such file, :class:`DataError` when it cannot
    be read."""
    path = Path(midi_path).with_name(KEY_ANNOTATION)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{KEY_ANNOTATION} beside it cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    spans: dict[Key, float] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            start, end, name = line.split()
            key = parse_key(name)
            spans[key] = spans.get(key, 0.0) + max(0.0, float(end) - float(start))
        except (ValueError, MusicRNNError):
            raise DataError(f"{KEY_ANNOTATION} beside it, line {n}: {line.strip()[:60]!r} is not 'start_s end_s key' "
                            "(key like Gb:maj or E:min)") from None
    if not spans:
        return None
    return max(spans.items(), key=lambda kv: kv[1])[0]  # ties: the first key written


def mat_frame_beats(path: str | Path) -> float:
    """Beats per frame for a known piano-roll file (by name); 0.5 (eighth notes) otherwise."""
    stem = Path(path).stem.lower()
    for key, beats in MAT_FRAME_BEATS.items():
        if key in stem:
            return beats
    return 0.5


def find_items(src: str) -> list[Item]:
    """All pieces in one source, sorted by name so runs are reproducible."""
    if src.startswith("music21:"):
        return _music21_items(src.split(":", 1)[1])
    p = Path(src)
    if not p.exists():
        raise DataError(f"{src}: no such file or folder; give a MIDI folder, a .mat file or music21:NAME")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in MIDI_SUFFIXES and f.is_file())
        root = p.name or p.resolve().name  # "." has no name of its own
        rels = [f.relative_to(p).as_posix() for f in files]
        return [Item("midi", f"{root}/{rel}", str(f), key=rel) for f, rel in zip(files, rels)]
    if p.suffix.lower() == ".mat":
        return _mat_items(p)
    return [Item("midi", p.name, str(p), key=p.name)]


def _read_mat_rolls(path: Path) -> dict[str, list[np.ndarray]]:
    """Parse a piano-roll .mat file in this process: its boolean [frames, 88] rolls per split.
    Only ever called in a child process (see :func:`_mat_rolls_isolated`)."""
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a readable MATLAB piano-roll file ({' '.join(str(exc).split())[:200]})") from None
    missing = [k for k in MAT_SPLITS.values() if k not in data]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; expected a Boulanger-Lewandowski piano-roll .mat")
    out: dict[str, list[np.ndarray]] = {}
    for split, key in MAT_SPLITS.items():
        rolls = []
        for i, cell in enumerate(np.asarray(data[key]).ravel()):
            roll = np.asarray(cell)
            if roll.ndim != 2 or roll.shape[1] != 88 or not (np.issubdtype(roll.dtype, np.number) or roll.dtype == bool):
                what = f"shape {list(roll.shape)}" if roll.dtype.kind in "biuf" else f"{roll.dtype} values"
                raise DataError(f"{path}: {split} piece {i} has {what}, expected numbers of shape [frames, 88]")
            if np.iscomplexobj(roll):
                raise DataError(f"{path}: {split} piece {i} holds complex numbers, expected 0/1 piano-roll values")
            rolls.append(roll > 0)
        out[split] = rolls
    return out


def _mat_child(path: str, out: str) -> None:
    """Child-process entry: parse ``path``, save the rolls to the ``.npz`` file ``out``."""
    try:
        rolls = _read_mat_rolls(Path(path))
    except DataError as exc:
        sys.stdout.write(str(exc))
        sys.stdout.flush()
        os._exit(_MAT_BAD_FILE)
    arrays = {f"{split}_{i:06d}": roll for split, rs in rolls.items() for i, roll in enumerate(rs)}
    np.savez(out, **arrays)


# the child imports what this process imports (its sys.path), never from the current folder
_CHILD_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "from musicrnn.sources import _mat_child; _mat_child(sys.argv[1], sys.argv[2])"
)


def _mat_rolls_isolated(path: Path) -> dict[str, list[np.ndarray]]:
    """Parse ``path`` in a child process (a crash or hang there is a DataError here)."""
    paths = [str(Path(__file__).resolve().parents[1])] + [p for p in sys.path if p and p != "."]
    with tempfile.TemporaryDirectory(prefix="musicrnn-mat-") as tmp:
        out = os.path.join(tmp, "rolls.npz")
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, str(path), out, json.dumps(paths)],
                                  capture_output=True, text=True, timeout=MAT_READ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"{path}: reading it took longer than {MAT_READ_TIMEOUT_S:g} s; the file is corrupt or too large") from None
        if proc.returncode == _MAT_BAD_FILE:
            raise DataError(proc.stdout.strip() or f"{path}: not a usable piano-roll .mat file")
        if proc.returncode != 0:
            if proc.returncode < 0:
                try:
                    why = f"the MATLAB reader crashed ({signal.Signals(-proc.returncode).name})"
                except ValueError:
                    why = f"the MATLAB reader was killed by signal {-proc.returncode}"
            else:
                lines = proc.stderr.strip().splitlines()
                why = f"the MATLAB reader failed: {lines[-1][:200] if lines else f'exit status {proc.returncode}'}"
            raise DataError(f"{path}: not a readable MATLAB piano-roll file ({why}); the file is corrupt or not a .mat file")
        rolls: dict[str, list[np.ndarray]] = {split: [] for split in MAT_SPLITS}
        with np.load(out, allow_pickle=False) as npz:
            for name in sorted(npz.files):
                rolls[name.rsplit("_", 1)[0]].append(npz[name])
    return rolls


@functools.lru_cache(maxsize=4)
def _cached_mat_rolls(path: str, mtime_ns: int, size: int) -> dict[str, list[np.ndarray]]:
    return _mat_rolls_isolated(Path(path))


def _load_mat_rolls(path: Path) -> dict[str, list[np.ndarray]]:
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return _cached_mat_rolls(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _mat_items(path: Path) -> list[Item]:
    rolls = _load_mat_rolls(path)
    items = []
    for split in MAT_SPLITS:
        items += [Item("mat", f"{path.name}/{split}/{i:04d}", str(path), split, i, key=f"{split}/{i:04d}")
                  for i in range(len(rolls[split]))]
    return items


def mat_rolls(path: str | Path, split: str) -> list[np.ndarray]:
    """The boolean [frames, 88] rolls of one split of a piano-roll .mat file."""
    return list(_load_mat_rolls(Path(path))[split])


def roll_to_notes(roll: np.ndarray, frame_beats: float, lowest_pitch: int = MAT_LOWEST_PITCH) -> np.ndarray:
    """A boolean piano roll -> notes; consecutive active frames of a pitch make one note."""
    padded = np.zeros((roll.shape[0] + 2, roll.shape[1]), np.int8)
    padded[1:-1] = roll
    d = np.diff(padded, axis=0)
    on_f, on_p = np.nonzero(d == 1)
    off_f, off_p = np.nonzero(d == -1)
    on_order = np.lexsort((on_f, on_p))
    off_order = np.lexsort((off_f, off_p))
    notes = np.zeros(len(on_f), NOTE_DTYPE)
    notes["pitch"] = on_p[on_order] + lowest_pitch
    notes["velocity"] = 80
    notes["start"] = on_f[on_order] * frame_beats
    notes["end"] = off_f[off_order] * frame_beats
    return notes[np.lexsort((notes["pitch"], notes["start"]))]


def _music21_items(name: str) -> list[Item]:
    try:
        from music21 import corpus
    except ImportError:
        raise DataError("music21 corpora need the optional extra: pip install 'musicrnn[corpora]'") from None
    paths = corpus.getComposer(name) or [r.sourcePath for r in corpus.search(name)]
    if not paths:
        raise DataError(f"music21:{name}: no such corpus in music21; try music21:bach or music21:essenFolksong")
    root = Path(corpus.getCorePaths()[0]).parent if corpus.getCorePaths() else None
    items = []
    for p in sorted({str(p) for p in paths if Path(p).suffix.lower() in MUSIC21_SUFFIXES}):
        rel = Path(p).relative_to(root).as_posix() if root and p.startswith(str(root)) else Path(p).name
        items.append(Item("music21", f"music21:{name}/{rel}", p, key=rel))
    return items


MUSIC21_SUFFIXES = {".mxl", ".xml", ".musicxml", ".krn", ".abc", ".mid", ".midi"}


def _score_to_piece(score, source: str) -> Piece:
    from music21 import meter, tempo

    rows = []
    for n in score.flatten().notes:
        for p in getattr(n, "pitches", []):
            start = float(n.offset)
            rows.append((int(p.midi), 80, start, start + float(n.quarterLength)))
    notes = np.zeros(len(rows), NOTE_DTYPE)
    if rows:
        arr = np.array(rows, np.float64)
        notes["pitch"], notes["velocity"], notes["start"], notes["end"] = arr.T
    marks = list(score.flatten().getElementsByClass(tempo.MetronomeMark))
    bpm = float(marks[0].getQuarterBPM()) if marks and marks[0].getQuarterBPM() else 120.0
    sigs = sorted({(float(ts.offset), int(ts.numerator), int(ts.denominator))
                   for ts in score.flatten().getElementsByClass(meter.TimeSignature)})
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0.0, 4, 4))
    return Piece(notes[notes["end"] > notes["start"]], tempos=[(0.0, bpm)], time_signatures=sigs, source=source)


def load_music21(path: str) -> list[tuple[str, Piece]]:
    """A music21 corpus file -> its pieces (times in quarter notes, all parts merged). A song
    book (an Opus, as in the Essen and O'Neill's collections) gives one piece per tune."""
    from music21 import converter, stream

    try:
        parsed = converter.parse(path)
    except Exception as exc:
        raise MidiError(f"{path}: music21 could not parse it ({' '.join(str(exc).split())[:120]})") from None
    if isinstance(parsed, stream.Opus):
        return [(f"#{i + 1}", _score_to_piece(s, path)) for i, s in enumerate(parsed.scores)]
    return [("", _score_to_piece(parsed, path))]


def load_item(item: Item) -> list[tuple[str, Piece]]:
    """Read one non-.mat item into its pieces: ``(name, piece)``; one for a MIDI file, one per
    tune for a music21 song book."""
    if item.kind == "music21":
        return [(item.name + suffix, piece) for suffix, piece in load_music21(item.path)]
    return [(item.name, load_midi(item.path))]
