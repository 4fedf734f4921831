"""Turning corpora into training data, and reading it back.

Holds:
- :func:`prepare`: sources -> a data folder with, per split, a flat uint16 token file
  (memory-mappable), an offsets file, a piece index, plus ``manifest.json`` (codec config,
  sources, counts, rejected files, checksums) and ``rejected.tsv``. Files are parsed in parallel,
  in chunks that a worker encodes with one set of numpy calls (:mod:`musicrnn.ingest`), and
  streamed to disk in a fixed order, so memory stays flat and the output is identical on every
  run. The folder appears complete or not at all.
- :class:`TokenData`: one split of a data folder, memory-mapped; ``piece(i)`` gives its tokens;
  :func:`nonempty_split` refuses an empty one (for scoring and n-gram fits).
- :func:`data_stats`: the numbers ``musicrnn data stats`` prints.

Augmentation (transposition, time stretch) is applied when training reads the data
(see :mod:`musicrnn.codecs` ``transpose``/``stretch``), never stored.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from musicrnn import __version__
from musicrnn.codecs import BOS, Codec, codec_from_dict, frame_count
from musicrnn.errors import DataError, MusicRNNError
from musicrnn.ingest import (
    DEFAULT_INGEST,
    Encoded,
    IngestOptions,
    Result,
    chunk_items,
    encode_chunk,
    init_worker,
    mat_results,
)
from musicrnn.roles import RoleChoice, check_roles
from musicrnn.sources import (
    KEY_ANNOTATION,
    SPLIT_RULE,
    Item,
    TrackChoice,
    choose_split,
    find_items,
)

MANIFEST_FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
CHUNK_FILES = 64  # MIDI files per worker task: per-file numpy overhead and messages shrink with it
# <split>.index.tsv: one row per piece; the columns after the counts come from the piece's info
INDEX_INFO = ("split_key", "beats", "seconds", "bpm", "bpm_min", "bpm_max", "time_signatures", "key", "key_source",
              "shift")
INDEX_COLUMNS = ("name", "tokens", "notes", "frames", *INDEX_INFO)
MUSIC_INFO = ("beats", "seconds", "bpm", "bpm_min", "bpm_max", "time_signatures")


@dataclass
class SplitWriter:
    """Appends pieces of one split to ``<split>.tokens`` and remembers offsets and counts."""

    folder: Path
    split: str
    offsets: list[int] = field(default_factory=lambda: [0])
    index: list[tuple] = field(default_factory=list)
    notes: int = 0
    frames: int = 0
    music: list[tuple] = field(default_factory=list)  # per piece: (notes, info) for music_summary

    def __post_init__(self) -> None:
        self.fh = open(self.folder / f"{self.split}.tokens", "wb", buffering=1 << 20)  # few large writes

    def add(self, name: str, tokens: np.ndarray, notes: int, frames: int, info: dict) -> None:
        """Append a piece; ``info`` holds its :data:`INDEX_INFO` columns (missing ones are blank)."""
        self.fh.write(np.ascontiguousarray(tokens, dtype="<u2").tobytes())
        self.offsets.append(self.offsets[-1] + len(tokens))
        self.index.append((name, len(tokens), notes, frames, *[_cell(info.get(k)) for k in INDEX_INFO]))
        self.music.append((notes, info))  # music_summary reads its MUSIC_INFO columns
        self.notes += notes
        self.frames += frames

    def close(self) -> dict:
        self.fh.close()
        np.save(self.folder / f"{self.split}.offsets.npy", np.asarray(self.offsets, np.int64))
        with open(self.folder / f"{self.split}.index.tsv", "w", encoding="utf-8") as fh:
            fh.write("\t".join(INDEX_COLUMNS) + "\n")
            for row in self.index:
                fh.write("\t".join(str(x) for x in row) + "\n")
        return {
            "pieces": len(self.index),
            "tokens": self.offsets[-1],
            "notes": self.notes,
            "frames": self.frames,
            "sha256": {
                f"{self.split}.tokens": _sha256(self.folder / f"{self.split}.tokens"),
                f"{self.split}.offsets.npy": _sha256(self.folder / f"{self.split}.offsets.npy"),
            },
        }


def _cell(value: object) -> str:
    """One index.tsv cell: blank for unknown, short floats, no tabs or newlines."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(str(value).split())


def music_summary(pieces: list[tuple[int, dict]]) -> dict:
    """Durations, tempi, metres and note rate of ``(notes, info)`` pieces (info: their
    :data:`MUSIC_INFO` columns; pieces without a tempo, like .mat rolls, count for beats only)."""
    beats = [i["beats"] for _, i in pieces if "beats" in i]
    timed = [(n, i) for n, i in pieces if "seconds" in i]
    seconds = [i["seconds"] for _, i in timed]
    metres: Counter = Counter(m for _, i in timed for m in i["time_signatures"].split())

    def total_mean(values: list[float]) -> dict | None:
        return {"total": float(sum(values)), "mean": float(sum(values) / len(values))} if values else None

    return {
        "pieces": len(pieces),
        "pieces_with_tempo": len(timed),
        "beats": total_mean(beats),
        "seconds": total_mean(seconds),
        "bpm": {"min": min(i["bpm_min"] for _, i in timed), "median": float(np.median([i["bpm"] for _, i in timed])),
                "max": max(i["bpm_max"] for _, i in timed)} if timed else None,
        "time_signatures": dict(sorted(metres.items(), key=lambda kv: (-kv[1], kv[0]))),
        "notes_per_second": sum(n for n, _ in timed) / sum(seconds) if timed and sum(seconds) > 0 else None,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open_output(out: Path) -> Path:
    if out.exists():
        if out.is_file():
            raise DataError(f"{out}: is a file; choose a folder for -o")
        if any(out.iterdir()) and not (out / "manifest.json").exists():
            raise DataError(f"{out}: folder exists and is not a musicrnn data folder; choose another -o")
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted run
    tmp.mkdir(parents=True)
    return tmp


def prepare(
    sources: list[str],
    out: str | os.PathLike,
    codec: Codec,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    split_seed: int = 0,
    options: IngestOptions = DEFAULT_INGEST,
) -> dict:
    """Prepare a data folder from ``sources`` and return its manifest.

    Each piece goes to the split that a hash of its split key (its path relative to its source)
    and ``split_seed`` chooses (:data:`~musicrnn.sources.SPLIT_RULE`); ``.mat`` pieces keep their
    published split. Rejected pieces are listed (with reasons) in the manifest and ``rejected.tsv``; the call
    fails with :class:`DataError` only if no piece at all was usable.
    """
    if len(split) != 3 or any(x < 0 for x in split) or abs(sum(split) - 1.0) > 1e-6:
        raise DataError(f"--split {','.join(map(str, split))}: give three fractions that sum to 1, e.g. 0.8,0.1,0.1")
    out = Path(out)
    check_roles(codec, options.roles, options.tracks.names is not None)
    items: list[Item] = []
    for src in sources:
        found = find_items(src)
        if not found:
            raise DataError(f"{src}: no MIDI files found (looked for .mid .midi .kar .smf)")
        if (options.tracks.names is not None or options.tracks.programs is not None) and found[0].kind != "midi":
            raise DataError(f"{src}: --tracks and --programs choose tracks of MIDI files, and this source has "
                            "none; prepare it without them (into its own data folder)")
        if options.roles is not None and any(it.kind != "midi" for it in found):
            raise DataError(f"{src}: --roles names tracks of MIDI files, and this source has none; give MIDI "
                            "files with named tracks (e.g. POP909's MELODY and PIANO)")
        items += found
    tmp = _open_output(out)
    writers = {s: SplitWriter(tmp, s) for s in SPLITS}
    rejected: list[tuple[str, str]] = []
    tracks: Counter = Counter()
    keys: Counter = Counter()  # (key, from the annotation, shift) over the pieces kept
    codec_json = json.dumps(codec.to_dict(), sort_keys=True)
    workers = max(1, workers or os.cpu_count() or 1)
    file_items = [it for it in items if it.kind != "mat"]
    mat_items = [it for it in items if it.kind == "mat"]
    done = 0
    try:
        results: Iterable[list[Result]] = mat_results(mat_items, codec, options.key_normalise)
        pool = None
        if file_items:
            size = max(1, min(CHUNK_FILES, len(file_items) // (workers * 8)))
            jobs = [(chunk, codec_json, options) for chunk in chunk_items(file_items, size)]
            if workers > 1 and len(jobs) > 1:
                importlib.import_module("symusic")  # once here, not in every forked worker

                pool = ProcessPoolExecutor(workers, initializer=init_worker)
                file_results = pool.map(encode_chunk, jobs)
            else:
                file_results = map(encode_chunk, jobs)
            results = _chain(results, _file_pieces(file_results, tracks))
        try:
            all_items = mat_items + file_items  # the order results arrive in
            for item, pieces in zip(all_items, results):
                done += 1
                if progress:
                    progress(done, len(items))
                for name, tokens, notes, reason, info in pieces:
                    if tokens is None:
                        rejected.append((name, reason or "unknown"))
                        continue
                    key = item.piece_key(name)
                    s = item.split or choose_split(key, split, split_seed)
                    writers[s].add(name, tokens, notes, frame_count(codec, tokens), {**info, "split_key": key})
                    if "key" in info:
                        keys[(info["key"], info["key_source"] == KEY_ANNOTATION, info["shift"])] += 1
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        counts = {s: w.close() for s, w in writers.items()}
        music = {s: music_summary(w.music) for s, w in writers.items()}
        music["all"] = music_summary([m for w in writers.values() for m in w.music])
        if sum(c["pieces"] for c in counts.values()) == 0:
            raise DataError(
                f"no usable pieces in {', '.join(sources)} ({len(rejected)} rejected; see the reasons above)"
            )
        with open(tmp / "rejected.tsv", "w", encoding="utf-8") as fh:
            fh.write("file\treason\n")
            for name, reason in rejected:
                fh.write(f"{name}\t{reason}\n")
        manifest = {
            "format": "musicrnn-data",
            "format_version": MANIFEST_FORMAT_VERSION,
            "musicrnn_version": __version__,
            "codec": codec.to_dict(),
            "sources": list(sources),
            "split_fractions": list(split),
            "split": {"rule": SPLIT_RULE, "fractions": list(split), "seed": int(split_seed),
                      "per_piece": "<split>.index.tsv: name, split_key"},
            "splits": counts,
            "files_seen": len(items),
            "tracks": _track_summary(options.tracks, tracks, options.roles),
            "key_normalise": _key_summary(keys) if options.key_normalise else None,
            "music": music,
            "rejected": [{"file": n, "reason": r} for n, r in rejected],
        }
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        _swap_in(tmp, out)
        return manifest
    except BaseException:
        for w in writers.values():
            w.fh.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out`` by renames only, so that whenever this process
    dies (even SIGKILL), ``out`` is the old complete folder, the new complete one, or absent
    (then the old one waits in ``.<name>.old`` until the next run) -- never half deleted."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)  # left by a run killed between the two renames below
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the old data back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _file_pieces(encoded: Iterable[Encoded], tracks: Counter) -> Iterator[list[Result]]:
    """The pieces of the workers' messages, item by item; their track counts go to ``tracks``."""
    for enc in encoded:
        tracks.update(enc.tracks)
        yield from enc.items()


def _track_summary(choice: TrackChoice, tracks: Counter, roles: RoleChoice | None = None) -> dict:
    """The manifest's record of the track choice (and the roles' tracks, for a codec with roles)
    and of the tracks it kept and dropped (over the pieces in the data), by name, most common first."""
    out: dict = {"choice": choice.to_dict() if roles is None else {**choice.to_dict(), "roles": roles.to_dict()}}
    for field_name, drum, kept in (("kept", False, True), ("dropped", False, False),
                                   ("drums_kept", True, True), ("drums_dropped", True, False)):
        named = Counter({name: n for (name, d, k), n in tracks.items() if d == drum and k == kept})
        out[field_name] = dict(sorted(named.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


KEY_RULE = (
    "each piece is transposed by home_shift(key) semitones (-5..6), which moves the key's tonic to C "
    f"(C major / C minor); key = the one covering most of the song in {KEY_ANNOTATION} beside "
    "the MIDI file, else Krumhansl-Schmuckler (Krumhansl-Kessler profiles) on the duration-weighted pitch "
    "classes of its pitched notes; notes pushed out of the codec's pitch range are dropped; drums never move"
)


def _key_summary(keys: Counter) -> dict:
    """The manifest's record of key normalisation: the rule, and over the pieces kept, how many
    keys came from annotations, each original key's count and each shift's count."""
    by_key: Counter = Counter()
    by_shift: Counter = Counter()
    for (key, _, shift), n in keys.items():
        by_key[key] += n
        by_shift[str(shift)] += n
    return {
        "rule": KEY_RULE,
        "from_annotation": sum(n for (_, given, _), n in keys.items() if given),
        "estimated": sum(n for (_, given, _), n in keys.items() if not given),
        "keys": dict(sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))),
        "shifts": dict(sorted(by_shift.items(), key=lambda kv: int(kv[0]))),
        "per_piece": "<split>.index.tsv: key, key_source, shift",
    }


def key_summary_line(manifest: dict) -> str | None:
    """One line on key normalisation for ``data prepare``'s summary, or None if it was off."""
    k = manifest.get("key_normalise")
    if not k:
        return None
    shifts = ", ".join(f"{int(s):+d}: {n:,}" for s, n in sorted(k["shifts"].items(), key=lambda kv: int(kv[0])))
    return (f"tonic moved to C (C major / C minor): keys from {KEY_ANNOTATION} {k['from_annotation']:,}, estimated "
            f"{k['estimated']:,}; pieces per shift {shifts}")


def track_summary_line(manifest: dict, most: int = 8) -> str | None:
    """What ``data prepare`` did with the tracks, in one line: "merged 2,727 tracks: BRIDGE x909,
    ...; dropped 1 drum track: Drums x1"; None for data without tracks (.mat, music21)."""
    tracks = manifest.get("tracks") or {}
    parts = []
    for field_name, verb, what in (("kept", "merged", "track"), ("drums_kept", "kept", "drum track"),
                                   ("dropped", "dropped", "track"), ("drums_dropped", "dropped", "drum track")):
        named = sorted((tracks.get(field_name) or {}).items(), key=lambda kv: (-kv[1], kv[0]))  # JSON sorts by name
        if named:
            total = sum(n for _, n in named)
            shown = ", ".join(f"{name} x{n:,}" for name, n in named[:most])
            more = f" and {len(named) - most:,} more names" if len(named) > most else ""
            parts.append(f"{verb} {total:,} {what}{'s' if total != 1 else ''}: {shown}{more}")
    return "; ".join(parts) or None


def _chain(*iterables):
    for it in iterables:
        yield from it


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a prepared data folder, checked for format and version."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.exists():
        raise DataError(f"{folder}: not a prepared data folder (no manifest.json); run: musicrnn data prepare SRC -o {folder}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise DataError(f"{path}: corrupt manifest ({' '.join(str(exc).split())[:200]}); prepare the data again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest ({exc.strerror or exc}); prepare the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "musicrnn-data":
        raise DataError(f"{path}: not a musicrnn data manifest; prepare the data again")
    version = manifest.get("format_version")
    if type(version) is not int or version != MANIFEST_FORMAT_VERSION:
        raise DataError(
            f"{path}: data format version {version!r} (musicrnn {manifest.get('musicrnn_version')}) is not "
            f"supported by musicrnn {__version__} (data format version {MANIFEST_FORMAT_VERSION}); prepare the data again"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path}: damaged manifest ({problem}); prepare the data again")
    return manifest


def _manifest_problem(manifest: dict) -> str | None:
    """What is missing or of the wrong type in a manifest of the current format, or None."""
    if not isinstance(manifest.get("codec"), dict):
        return "no codec"
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        return "no splits"
    for s in SPLITS:
        counts = splits.get(s)
        if not isinstance(counts, dict):
            return f"no {s} split"
        for key in ("pieces", "tokens", "notes", "frames"):
            if type(counts.get(key)) is not int or counts[key] < 0:
                return f"{s} {key} is {counts.get(key)!r}, not a count"
    if not isinstance(manifest.get("rejected"), list):
        return "no list of rejected files"
    return None


class TokenData:
    """One split of a prepared data folder, memory-mapped (nothing is read until used)."""

    def __init__(self, folder: str | os.PathLike, split: str = "train") -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.folder = Path(folder)
        self.split = split
        self.manifest = read_manifest(self.folder)
        try:
            self.codec = codec_from_dict(self.manifest["codec"])
        except MusicRNNError as exc:
            raise DataError(f"{self.folder}: {exc}") from None
        tok_path = self.folder / f"{split}.tokens"
        off_path = self.folder / f"{split}.offsets.npy"
        if not tok_path.exists() or not off_path.exists():
            raise DataError(f"{self.folder}: split {split!r} files are missing; prepare the data again")
        size = tok_path.stat().st_size
        if size % 2:
            raise DataError(f"{self.folder}: {split}.tokens is truncated (odd size); prepare the data again")
        self.tokens = np.memmap(tok_path, dtype="<u2", mode="r") if size else np.zeros(0, np.uint16)
        try:
            self.offsets = np.load(off_path, allow_pickle=False)
        except Exception as exc:  # a damaged header makes numpy raise ValueError, but also SyntaxError, TokenError...
            raise DataError(f"{self.folder}: {split}.offsets.npy is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
                            "prepare the data again") from None
        offs = self.offsets
        if (offs.ndim != 1 or offs.dtype.kind not in "iu" or len(offs) == 0 or offs[0] != 0
                or np.any(np.diff(offs) < 0) or len(offs) - 1 != self.manifest["splits"][split]["pieces"]):
            raise DataError(f"{self.folder}: {split}.offsets.npy does not match its manifest; prepare the data again")
        if offs[-1] != len(self.tokens):
            raise DataError(f"{self.folder}: {split} offsets do not match its tokens; prepare the data again")
        if len(self.tokens) and int(self.tokens.max(initial=0)) >= self.codec.vocab_size:
            raise DataError(f"{self.folder}: {split} has tokens outside the codec's vocabulary; prepare the data again")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def piece(self, i: int, with_bos: bool = False) -> np.ndarray:
        """Tokens of piece ``i`` (optionally preceded by BOS), as int64."""
        toks = np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)
        return np.concatenate([[BOS], toks]) if with_bos else toks

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def nonempty_split(data_folder, split: str) -> TokenData:
    """One split of a data folder, refused when it holds no piece: scoring nothing would print
    NLL 0 and perplexity 1, numbers that look like a perfect model."""
    data = TokenData(data_folder, split)
    if len(data) == 0:
        others = " or ".join(s for s in ("valid", "test") if s != split)
        other = f"choose another --split ({others}) or " if split != "train" else ""
        raise DataError(f"{data_folder}: the {split} split is empty (0 pieces); {other}prepare the data with a "
                        f"non-zero {split} fraction (musicrnn data prepare --split)")
    return data


def data_stats(folder: str | os.PathLike, top: int = 10) -> dict:
    """Counts per split and the most common tokens, for ``musicrnn data stats``."""
    manifest = read_manifest(folder)
    stats: dict = {"folder": str(folder), "codec": manifest["codec"], "splits": {}, "rejected": len(manifest["rejected"])}
    hist: Counter = Counter()
    codec = None
    for s in SPLITS:
        data = TokenData(folder, s)
        codec = data.codec
        c = manifest["splits"][s]
        stats["splits"][s] = {k: c[k] for k in ("pieces", "tokens", "frames", "notes")}
        if data.num_tokens:
            counts = np.bincount(np.asarray(data.tokens), minlength=data.codec.vocab_size)
            hist.update({i: int(n) for i, n in enumerate(counts) if n})
    total = sum(hist.values()) or 1
    assert codec is not None
    stats["top_tokens"] = [(codec.token_name(t), n, n / total) for t, n in hist.most_common(top)]
    pitches = [int(codec.token_pitch[t]) for t in hist if codec.token_pitch[t] >= 0]
    stats["pitch_range"] = (min(pitches), max(pitches)) if pitches else None
    stats["vocab_used"] = len(hist)
    stats["vocab_size"] = codec.vocab_size
    stats["music"] = manifest.get("music")  # None: prepared before musicrnn recorded it
    stats["manifest"] = manifest
    return stats
