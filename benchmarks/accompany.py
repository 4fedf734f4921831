"""Accompaniment measures (issue 17, "Numbers"): how an accompaniment model's part fits the
songs it accompanies, on held-out POP909 songs, against the real accompaniment and two baselines.

Per held-out song (the ``--split`` of a prepared ``--data`` folder, read from ``--dataset``), the
melody (tracks MELODY and BRIDGE) goes in and four accompaniments come out:

- ``real``: the song's own PIANO track (the ceiling);
- ``ours``: ``--model`` through ``compose --accompany``'s code (:func:`musicrnn.accompaniment.accompany`,
  files written and read back; ``--temperature``, compose's default 1.0, and ``--follow-chords``, the
  harmony follower's strength, compose's default 1, for it and the n-gram: 0 is ``compose
  --no-follow-chords``);
- ``ngram``: a Kneser-Ney ``--ngram-order``-gram fitted on ``--data``'s train split (the same
  codec), driven by the same code as the model;
- ``rule``: per annotated beat, the diatonic triad of the song's key (``key_audio.txt``, else
  Krumhansl-Schmuckler on the melody) whose pitch classes cover most of the melody sounding in
  that beat (ties: the chord before, else I, V, IV, vi, ii, iii, vii; :mod:`musicrnn.harmony`,
  whose harmony follower chooses among the same chords), root position with its root in C3-B3,
  struck on the beat at velocity 80 and held to the next.

A key-normalised model (and the n-gram of key-normalised data) hears each melody moved home by
the key its training data was moved by (``key_audio.txt``'s, as ``data prepare --key-normalise``
reads it; ``--key-from estimate``: compose's own estimate from the melody, what a user gets).

Measures (pooled over all songs' notes):

- note-in-chord ratio against ``chord_midi.txt``: the share of accompaniment notes whose pitch
  class is in the chord annotated at the note's onset (notes under ``N`` or outside every chord
  left out), and the same weighted by how long each note sounds under each chord;
- share of onsets on the song's beat grid: within ``--tolerance-ms`` of a sixteenth of the
  annotated beats (``beat_midi.txt``; each beat split in four), and of the MIDI file's own tempo
  grid (POP909's notes sit on the annotated beats, which the file's tick grid can lead by up to
  a sixteenth); with the share a uniformly random onset would get (chance), and for the ratio
  the share a random note of the key's scale would get;
- velocity mean and spread (standard deviation of all notes' velocities; and the mean of each
  song's spread) against the real track's.

    python benchmarks/accompany.py --model runs/acc-a/best.pt --data data/pop909-acc \\
        --dataset ../shared/datasets/pop909 [--songs 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicrnn.errors import MusicRNNError
from musicrnn.harmony import chord_masks, diatonic_triads, greedy_chords, pitch_class_weights
from musicrnn.midi import load_midi, read_track_names
from musicrnn.notes import make_notes
from musicrnn.tonality import Key, estimate_key

MELODY_TRACKS = ("melody", "bridge")
ACCOMPANIMENT_TRACK = "piano"
SYSTEMS = ("real", "ours", "ngram", "rule")
RULE_VELOCITY = 80
RULE_LOWEST_ROOT = 48  # C3: each rule chord's root lies in C3-B3
GOAL = 0.9  # ours' note-in-chord ratio at least this share of the real track's

# --- chord labels ----------------------------------------------------------------------------

# Harte et al. (2005) shorthands, as intervals from the root in semitones
QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8),
    "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10), "7": (0, 4, 7, 10), "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10), "minmaj7": (0, 3, 7, 11), "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9),
    "9": (0, 4, 7, 10, 2), "maj9": (0, 4, 7, 11, 2), "min9": (0, 3, 7, 10, 2),
    "11": (0, 4, 7, 10, 2, 5), "min11": (0, 3, 7, 10, 2, 5),
    "13": (0, 4, 7, 10, 2, 5, 9), "maj13": (0, 4, 7, 11, 2, 5, 9), "min13": (0, 3, 7, 10, 2, 5, 9),
    "sus2": (0, 2, 7), "sus4": (0, 5, 7), "5": (0, 7), "1": (0,),
}
DEGREES = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 11, 8: 0, 9: 2, 10: 4, 11: 5, 12: 7, 13: 9}
ROOTS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_LABEL = re.compile(r"^([A-G][#b]*)(?::([^(/]*))?(?:\(([^)]*)\))?(?:/([#b]*\d+))?$")


def _degree(text: str) -> int:
    """A Harte degree (``b7``, ``#11``, ``3``) -> semitones above the root (0-11)."""
    m = re.fullmatch(r"([#b]*)(\d+)", text.strip())
    if not m or int(m.group(2)) not in DEGREES:
        raise ValueError(f"degree {text!r}")
    return (DEGREES[int(m.group(2))] + m.group(1).count("#") - m.group(1).count("b")) % 12


def parse_chord(label: str) -> frozenset[int] | None:
    """A chord label in Harte's grammar (POP909's ``chord_midi.txt``: ``B:maj``, ``C#:min7``,
    ``A:sus4(b7)``, ``E:maj/3``) -> the pitch classes it sounds, the bass degree included;
    None for no chord (``N``, ``X``). A root alone is a major triad. ValueError when unread."""
    label = label.strip()
    if label in ("N", "X"):
        return None
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"chord {label!r}")
    root_text, quality, extra, bass = m.groups()
    root = (ROOTS[root_text[0]] + root_text.count("#") - root_text.count("b")) % 12
    if quality is None or quality == "":
        quality = "maj" if extra is None else ""
    if quality and quality not in QUALITIES:
        raise ValueError(f"chord {label!r}: quality {quality!r}")
    intervals = set(QUALITIES.get(quality, ()))
    for item in (extra or "").split(","):
        if item.strip():
            (intervals.discard if item.strip().startswith("*") else intervals.add)(_degree(item.strip().lstrip("*")))
    if bass:
        intervals.add(_degree(bass))
    return frozenset((root + i) % 12 for i in intervals)


@dataclass
class Chords:
    """A song's annotated chords: spans in seconds and each span's pitch classes (``pcs`` [n, 12];
    ``known`` False for ``N``)."""

    start: np.ndarray
    end: np.ndarray
    pcs: np.ndarray
    known: np.ndarray


def read_chords(path: Path) -> Chords:
    """``start_s end_s label`` per line (POP909's ``chord_midi.txt``)."""
    start, end, pcs, known = [], [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            a, b, label = line.split()
            chord = parse_chord(label)
            start.append(float(a))
            end.append(float(b))
        except ValueError as exc:
            raise MusicRNNError(f"{path}, line {n}: {line.strip()[:60]!r} is not 'start_s end_s chord' ({exc}); "
                                "give chords like B:maj, C#:min7, N") from None
        row = np.zeros(12, bool)
        row[list(chord or ())] = True
        pcs.append(row)
        known.append(chord is not None)
    return Chords(np.array(start), np.array(end), np.array(pcs, bool).reshape(-1, 12), np.array(known, bool))


def read_beats(path: Path) -> np.ndarray:
    """Beat times in seconds: the first column of POP909's ``beat_midi.txt``, sorted."""
    try:
        beats = np.loadtxt(path, ndmin=2)[:, 0]
    except (ValueError, IndexError) as exc:
        raise MusicRNNError(f"{path}: not 'time_s is_beat is_downbeat' lines ({exc}); give POP909's beat_midi.txt") from None
    return np.sort(beats)


# --- measures --------------------------------------------------------------------------------


def note_in_chord(notes: np.ndarray, chords: Chords) -> dict[str, float]:
    """Counts for the note-in-chord ratio of ``notes`` (times in seconds): by onset (``onset_in``
    of ``onset_counted`` notes whose onset lies under a chord other than N) and by duration
    (``seconds_in`` of ``seconds_counted``: each note's overlap with each chord but N)."""
    if not len(notes) or not len(chords.start):
        return {"onset_in": 0, "onset_counted": 0, "seconds_in": 0.0, "seconds_counted": 0.0}
    pc = notes["pitch"].astype(np.int64) % 12
    at = np.searchsorted(chords.start, notes["start"], side="right") - 1
    under = (at >= 0) & (notes["start"] < chords.end[np.maximum(at, 0)])
    counted = under & chords.known[np.maximum(at, 0)]
    inside = counted & chords.pcs[np.maximum(at, 0), pc]
    overlap = np.clip(np.minimum(notes["end"][:, None], chords.end[None, :])
                      - np.maximum(notes["start"][:, None], chords.start[None, :]), 0.0, None)  # [notes, chords]
    overlap = overlap * chords.known[None, :]
    return {"onset_in": int(inside.sum()), "onset_counted": int(counted.sum()),
            "seconds_in": float((overlap * chords.pcs[:, pc].T).sum()), "seconds_counted": float(overlap.sum())}


def sixteenths(beats: np.ndarray, until: float) -> np.ndarray:
    """The sixteenth grid of beat times (each beat split in four), from 0 s to ``until``, the
    first and last beat's length carried before and after them."""
    if len(beats) < 2:
        return np.asarray(beats, np.float64)
    first, last = beats[1] - beats[0], beats[-1] - beats[-2]
    before = beats[0] - first * np.arange(int(np.ceil(beats[0] / first)), 0, -1)
    after = beats[-1] + last * np.arange(1, max(int(np.ceil((until - beats[-1]) / last)), 0) + 1)
    full = np.concatenate([before, beats, after])
    steps = np.diff(full)[:, None] * (np.arange(4) / 4.0)[None, :]
    return np.concatenate([(full[:-1, None] + steps).ravel(), full[-1:]])


def on_grid(onsets: np.ndarray, grid: np.ndarray, tolerance: float) -> int:
    """How many ``onsets`` lie within ``tolerance`` seconds of a point of ``grid`` (sorted)."""
    if not len(onsets) or not len(grid):
        return 0
    i = np.clip(np.searchsorted(grid, onsets), 1, len(grid) - 1)
    nearest = np.minimum(np.abs(onsets - grid[i - 1]), np.abs(grid[i] - onsets))
    return int((nearest <= tolerance).sum())


def chance_on_grid(grid: np.ndarray, start: float, end: float, tolerance: float) -> tuple[float, float]:
    """(seconds within ``tolerance`` of a grid point, seconds) between ``start`` and ``end``: the
    share of a uniformly random onset's chances to land on the grid."""
    inside = grid[(grid >= start) & (grid <= end)]
    if len(inside) < 2:
        return 0.0, max(end - start, 0.0)
    gaps = np.diff(inside)
    return float(np.minimum(gaps, 2 * tolerance).sum()), float(gaps.sum())


# --- the songs -------------------------------------------------------------------------------


@dataclass
class Song:
    """One held-out song: its parts in seconds (NOTE_DTYPE rows, times in seconds), its
    annotations, and the key its melody is moved home by."""

    name: str
    midi: Path
    melody: np.ndarray
    real: np.ndarray
    chords: Chords
    beats: np.ndarray
    midi_grid: np.ndarray  # the MIDI file's sixteenths (its tempo map), seconds
    key: Key


def _in_seconds(piece, notes: np.ndarray) -> np.ndarray:
    out = notes.copy()
    out["start"], out["end"] = piece.seconds(notes["start"]), piece.seconds(notes["end"])
    return out


def track_notes(path: Path, names: tuple[str, ...]) -> tuple[np.ndarray, object]:
    """The pitched notes (times in seconds) of the tracks of ``path`` named one of ``names``
    (any case), and the file's :class:`~musicrnn.notes.Piece`."""
    piece = load_midi(path)
    tracks = {t for t, n in read_track_names(path).items() if n.strip().lower() in names}
    notes = piece.notes[np.isin(piece.notes["track"], list(tracks)) & ~piece.notes["is_drum"]]
    return _in_seconds(piece, notes), piece


def read_song(midi: Path, key_from: str = "annotation") -> Song:
    """A POP909 song folder's MIDI file (tracks MELODY, BRIDGE, PIANO) and its annotations."""
    from musicrnn.sources import read_key_annotation

    melody, piece = track_notes(midi, MELODY_TRACKS)
    real, _ = track_notes(midi, (ACCOMPANIMENT_TRACK,))
    if not len(melody):
        raise MusicRNNError(f"{midi}: no notes on a track named {' or '.join(MELODY_TRACKS)}; give POP909 songs")
    key = read_key_annotation(midi) if key_from == "annotation" else None
    if key is None:
        key = estimate_key(melody["pitch"], melody["end"] - melody["start"])
    beats = piece.seconds(np.arange(0.0, piece.duration_beats + 0.25, 0.25))
    return Song(midi.parent.name, midi, melody, real, read_chords(midi.with_name("chord_midi.txt")),
                read_beats(midi.with_name("beat_midi.txt")), beats, key)


def held_out(data: Path, dataset: Path, split: str, count: int | None) -> list[Path]:
    """The MIDI files of ``data``'s ``split`` (its index's split keys, relative to ``dataset``)."""
    index = data / f"{split}.index.tsv"
    if not index.is_file():
        raise MusicRNNError(f"{index}: no such file; give --data a folder made by `musicrnn data prepare` "
                            f"and --split one of its splits")
    lines = index.read_text(encoding="utf-8").splitlines()
    column = lines[0].split("\t").index("split_key")
    paths = [dataset / line.split("\t")[column] for line in lines[1:] if line.strip()]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise MusicRNNError(f"{missing[0]}: no such file ({len(missing)} of {split}'s songs missing); give --dataset "
                            "the folder --data was prepared from")
    return paths[:count] if count else paths


# --- the systems -----------------------------------------------------------------------------


def rule_accompaniment(song: Song) -> np.ndarray:
    """Per annotated beat within the melody's span, the diatonic triad that covers most of the
    melody sounding in that beat (:func:`musicrnn.harmony.greedy_chords`), struck on the beat."""
    triads = diatonic_triads(song.key)
    first, last = float(song.melody["start"].min()), float(song.melody["end"].max())
    beats = song.beats[(song.beats >= first - 1e-6) & (song.beats < last)]
    bounds = np.append(beats, last) if len(beats) else np.array([])
    chosen = greedy_chords(pitch_class_weights(song.melody, bounds), chord_masks(triads)) if len(bounds) else []
    rows: list[tuple] = []
    for a, b, chord in zip(bounds[:-1], bounds[1:], chosen):
        root = triads[chord][0]
        base = RULE_LOWEST_ROOT + root
        for pc in triads[chord]:
            rows.append((base + (pc - root) % 12, RULE_VELOCITY, a, b))
    if not rows:
        return make_notes(pitch=[], velocity=[], start=[], end=[])
    p, v, s, e = zip(*rows)
    return make_notes(pitch=p, velocity=v, start=s, end=e)


def composed(model, codec, songs: list[Song], home_key: bool, by_key: bool, seed: int, out: Path,
             system: str, temperature: float = 1.0, follow_chords: float = 1.0) -> list[np.ndarray]:
    """Each song's accompaniment by ``model`` (a network or a stepper) through ``compose
    --accompany``'s code, all songs in one batch: written to ``out/<system>/<song>.mid``, read
    back (seconds). Each melody's key is on its song's annotated tonic where ``by_key`` (a
    key-normalised model, ``home_key``, hears it moved home by it), else compose's own estimate."""
    from musicrnn.accompaniment import AccompanyOptions, accompany
    from musicrnn.limits import MAX_NOTE_BEATS
    from musicrnn.sample import SamplingConfig

    opts = AccompanyOptions([s.midi for s in songs], out / system, melody_tracks=list(MELODY_TRACKS),
                            sampling=SamplingConfig(temperature=temperature), max_note_beats=MAX_NOTE_BEATS,
                            key_tonics=[s.key.tonic for s in songs] if by_key else None, home_key_model=home_key,
                            seed=seed, overwrite=True, follow_chords=follow_chords)
    return [track_notes(piece.path, ("musicrnn",))[0] for piece in accompany(model, codec, opts)]


# --- the table -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def measure(songs: list[Song], parts: dict[str, list[np.ndarray]], tolerance: float) -> dict:
    """Every measure per system (pooled over the songs' notes), with per-song detail."""
    out: dict = {}
    for system, per_song in parts.items():
        totals = {"onset_in": 0, "onset_counted": 0, "seconds_in": 0.0, "seconds_counted": 0.0,
                  "beat_grid": 0, "midi_grid": 0, "notes": 0}
        detail, spreads, velocities = {}, [], []
        for song, notes in zip(songs, per_song):
            c = note_in_chord(notes, song.chords)
            on_beats = on_grid(notes["start"], sixteenths(song.beats, float(song.melody["end"].max()) + 10), tolerance)
            on_midi = on_grid(notes["start"], song.midi_grid, tolerance)
            for k, v in c.items():
                totals[k] += v
            totals["beat_grid"] += on_beats
            totals["midi_grid"] += on_midi
            totals["notes"] += len(notes)
            velocities.append(notes["velocity"].astype(np.float64))
            if len(notes) > 1:
                spreads.append(float(notes["velocity"].std()))
            detail[song.name] = {"notes": len(notes), "in_chord_onsets": _ratio(c["onset_in"], c["onset_counted"]),
                                 "in_chord_duration": _ratio(c["seconds_in"], c["seconds_counted"]),
                                 "on_beat_grid": _ratio(on_beats, len(notes))}
        vel = np.concatenate(velocities) if velocities else np.zeros(0)
        out[system] = {
            "notes": totals["notes"],
            "in_chord_onsets": _ratio(totals["onset_in"], totals["onset_counted"]),
            "in_chord_duration": _ratio(totals["seconds_in"], totals["seconds_counted"]),
            "notes_under_chords": totals["onset_counted"],
            "on_beat_grid": _ratio(totals["beat_grid"], totals["notes"]),
            "on_midi_grid": _ratio(totals["midi_grid"], totals["notes"]),
            "velocity_mean": float(vel.mean()) if len(vel) else None,
            "velocity_spread": float(vel.std()) if len(vel) else None,
            "velocity_song_spread": float(np.mean(spreads)) if spreads else None,
            "per_song": detail,
        }
    return out


def chance(songs: list[Song], tolerance: float) -> float | None:
    """The share of a uniformly random onset (within the melodies' spans) on the beat grid."""
    near = total = 0.0
    for s in songs:
        n, t = chance_on_grid(sixteenths(s.beats, float(s.melody["end"].max()) + 10), float(s.melody["start"].min()),
                              float(s.melody["end"].max()), tolerance)
        near, total = near + n, total + t
    return _ratio(near, total)


def scale_chance(songs: list[Song]) -> float | None:
    """The note-in-chord ratio of a note drawn at random from the song's key's scale (minor:
    natural minor plus the raised 7th), over the annotated chords' time: what an accompaniment
    that keeps to the key but not to the chords gets."""
    from musicrnn.tonality import scale_pitch_classes

    hit = total = 0.0
    for s in songs:
        scale = np.zeros(12, bool)
        scale[list(scale_pitch_classes(s.key))] = True
        seconds = (s.chords.end - s.chords.start) * s.chords.known
        hit += float((seconds * (s.chords.pcs & scale).sum(axis=1) / scale.sum()).sum())
        total += float(seconds.sum())
    return _ratio(hit, total)


def _cell(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def table(result: dict) -> str:
    """The results as a Markdown table and the goal line."""
    m = result["systems"]
    head = ("| system | notes | in chord (onsets) | in chord (duration) | on beat grid | on MIDI grid "
            "| velocity mean | velocity spread (all / per song) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in m.items():
        lines.append(f"| {result['labels'][name]} | {r['notes']:,} | {_cell(r['in_chord_onsets'])} | "
                     f"{_cell(r['in_chord_duration'])} | {_cell(r['on_beat_grid'])} | {_cell(r['on_midi_grid'])} | "
                     f"{_cell(r['velocity_mean'], '.1f')} | {_cell(r['velocity_spread'], '.1f')} / "
                     f"{_cell(r['velocity_song_spread'], '.1f')} |")
    lines.append("")
    lines.append(f"chance of a uniformly random onset on the beat grid (±{result['tolerance_ms']:g} ms): "
                 f"{_cell(result['chance_on_beat_grid'])}")
    lines.append(f"note-in-chord ratio of a random note of the song's key: {_cell(result['chance_in_chord'])}")
    for g in result["goals"]:
        lines.append(f"goal: ours' note-in-chord ratio ({g['by']}) ≥ {GOAL:g} × the real track's: "
                     f"{_cell(g['ours'])} = {_cell(g['share'], '.2f')} × {_cell(g['real'])}: "
                     f"{'met' if g['met'] else 'not met'}")
    return "\n".join(lines)


def goals(systems: dict) -> list[dict]:
    out = []
    for by, key in (("onsets", "in_chord_onsets"), ("duration", "in_chord_duration")):
        ours, real = systems.get("ours", {}).get(key), systems["real"].get(key)
        share = ours / real if ours is not None and real else None
        out.append({"by": by, "ours": ours, "real": real, "share": share, "met": share is not None and share >= GOAL})
    return out


def run(args: argparse.Namespace) -> dict:
    from musicrnn.accompaniment import check_roles
    from musicrnn.checkpoint import load_checkpoint
    from musicrnn.codecs import codec_from_dict
    from musicrnn.corpus import read_manifest
    from musicrnn.ngram import NGramStepper, fit_ngram

    ckpt = load_checkpoint(args.model)
    check_roles(ckpt.codec, args.model)
    if args.songs < 0:
        raise MusicRNNError(f"--songs {args.songs}: give a number of songs, or 0 for all of the split")
    paths = held_out(Path(args.data), Path(args.dataset), args.split, args.songs)
    if not paths:
        raise MusicRNNError(f"{args.data}: its {args.split} split has no songs; give another --split or --data")
    songs = [read_song(p, args.key_from) for p in paths]
    tolerance = args.tolerance_ms / 1000.0
    by_key = args.key_from == "annotation"
    labels = {"real": "real (PIANO track)", "ours": f"ours ({'/'.join(Path(args.model).parts[-2:])})",
              "ngram": f"{args.ngram_order}-gram", "rule": "rule (key's triads)"}
    with tempfile.TemporaryDirectory(prefix="accompany-bench-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        parts = {"real": [s.real for s in songs]}
        parts["ours"] = composed(ckpt.model, ckpt.codec, songs, bool(ckpt.meta.get("key_normalised")), by_key,
                                 args.seed, out, "ours", args.temperature, args.follow_chords)
        if args.ngram_order:
            manifest = read_manifest(args.data)  # the n-gram's codec and key normalisation are its data's
            check_roles(codec_from_dict(manifest["codec"]), f"ngram:{args.ngram_order} of {args.data}")
            lm = fit_ngram(args.data, args.ngram_order)
            parts["ngram"] = composed(NGramStepper(lm), codec_from_dict(manifest["codec"]), songs,
                                      bool(manifest.get("key_normalise")), by_key, args.seed, out, "ngram",
                                      args.temperature, args.follow_chords)
        parts["rule"] = [rule_accompaniment(s) for s in songs]
    systems = measure(songs, parts, tolerance)
    return {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/accompany.py " + shlex.join(args.argv),
            "model": str(args.model), "data": str(args.data), "split": args.split, "songs": [s.name for s in songs],
            "seed": args.seed, "temperature": args.temperature, "follow_chords": args.follow_chords, "ngram_order": args.ngram_order, "key_from": args.key_from,
            "tolerance_ms": args.tolerance_ms, "chance_on_beat_grid": chance(songs, tolerance),
            "chance_in_chord": scale_chance(songs),
            "labels": {k: labels[k] for k in systems}, "systems": systems, "goals": goals(systems)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="accompany", help="an accompany-codec checkpoint (default: the bundled accompany)")
    ap.add_argument("--data", default="data/pop909-acc", help="the prepared data: its split's songs, its train split for the n-gram")
    ap.add_argument("--dataset", default="../shared/datasets/pop909", help="the POP909 folder --data was prepared from")
    ap.add_argument("--split", default="test", help="which split's songs to accompany (default test)")
    ap.add_argument("--songs", type=int, default=0, help="only the first N songs of the split (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of ours and the n-gram "
                    "(compose's default 1.0)")
    ap.add_argument("--follow-chords", type=float, default=1.0, metavar="STRENGTH",
                    help="the harmony follower's strength for ours and the n-gram (compose's default 1; 0: off, as "
                         "compose --no-follow-chords)")
    ap.add_argument("--ngram-order", type=int, default=5, help="the n-gram baseline's order (0: no n-gram)")
    ap.add_argument("--key-from", choices=("annotation", "estimate"), default="annotation",
                    help="the key a key-normalised model hears each melody moved home by: key_audio.txt's (as its "
                         "training data) or compose's estimate from the melody")
    ap.add_argument("--tolerance-ms", type=float, default=30.0, help="how near a grid point an onset counts as on it")
    ap.add_argument("--out", default=None, help="keep the accompanied MIDI files here (OUT/ours, OUT/ngram)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here too")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except MusicRNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(result['songs'])} {result['split']} songs of {result['data']}, model {result['model']}, "
          f"seed {result['seed']}, temperature {result['temperature']:g}, {result['date']}")
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
