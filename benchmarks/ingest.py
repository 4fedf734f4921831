"""Ingest benchmark: ``musicrnn.corpus.prepare`` against a naive pretty_midi loop, and memory
against corpus size.

Generates N synthetic MIDI files (1-3 minutes each, 2-4 tracks, sometimes a drum track, tempo
changes; seeded, so every run makes the same files), then measures in fresh subprocesses:

(a) ``prepare`` over the folder (performance codec with its library defaults: seconds, 10 ms
    grid, 32 velocity bins; all cores unless --workers): files/s, timed with nothing else
    running, and in a second run the peak RSS of the whole process tree (the parent and its
    worker processes, sampled with psutil every 20 ms: the sampler costs CPU the workers need);
(b) a naive single-process loop: ``pretty_midi.PrettyMIDI(path)``, the notes of non-drum
    instruments, ``codec.encode(make_notes(...))`` with the same codec: files/s, measured on a
    sample of --naive-sample files and extrapolated to N (it is slow);
(c) ``prepare`` on a 1,000-file subset, in its own process, so the peak RSS at 1,000 and at N
    files can be compared: streaming ingest keeps that ratio near 1.

Prints a markdown table. Usage::

    python benchmarks/ingest.py                               # 5,000 files: takes a while
    python benchmarks/ingest.py --files 40 --naive-sample 10  # smoke test
    python benchmarks/ingest.py --dir /data/synth --keep      # keep the files and outputs

Needs psutil (``pip install 'musicrnn[test]'``) and pretty_midi (a musicrnn dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TICKS_PER_BEAT = 480
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# synthetic corpus
# --------------------------------------------------------------------------------------------


def synth_name(seed: int, i: int) -> str:
    return f"synth-s{seed}-{i:05d}.mid"


def make_score(rng: np.random.Generator):
    """One synthetic song as a symusic Score: a tempo map with changes, 2-4 tracks."""
    import symusic

    from musicrnn.notes import Piece, make_notes

    seconds = rng.uniform(60, 180)
    bpm0 = rng.uniform(70, 160)
    rough_beats = seconds * bpm0 / 60
    change_beats = np.sort(rng.choice(np.arange(8, int(rough_beats), 4), size=rng.integers(1, 5), replace=False))
    tempos = [(0.0, bpm0)] + [(float(b), float(bpm0 * rng.uniform(0.8, 1.25))) for b in change_beats]
    total_beats = float(Piece(make_notes([]), tempos=tempos).beats(seconds))
    total_ticks = int(total_beats * TICKS_PER_BEAT)

    score = symusic.Score(TICKS_PER_BEAT)
    for beat, bpm in tempos:
        score.tempos.append(symusic.Tempo(int(beat * TICKS_PER_BEAT), float(bpm)))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))

    n_tracks = int(rng.integers(2, 5))
    drum_track = int(rng.integers(0, n_tracks)) if rng.random() < 0.4 else -1
    for t in range(n_tracks):
        if t == drum_track:
            step = TICKS_PER_BEAT // 2  # eighth notes
            time_ = np.arange(0, total_ticks, step)
            time_ = time_[rng.random(len(time_)) < 0.8]
            pitch = rng.choice([35, 36, 38, 42, 46, 49, 51], size=len(time_))
            duration = np.full(len(time_), 60)
            track = symusic.Track(f"drums {t}", 0, True)
        else:
            density = rng.uniform(0.5, 3.0)  # notes per beat
            count = max(1, int(total_beats * density))
            time_ = np.sort(rng.integers(0, max(1, total_ticks // 120), count)) * 120  # sixteenth grid
            centre = int(rng.integers(40, 80))
            pitch = np.clip(centre + rng.integers(-12, 13, count), 21, 108)
            duration = rng.choice([120, 240, 480, 960], size=count)
            track = symusic.Track(f"part {t}", int(rng.integers(0, 96)), False)
        velocity = rng.integers(40, 121, size=len(time_))
        track.notes = symusic.Note.from_numpy(
            time=time_.astype(np.int32),
            duration=duration.astype(np.int32),
            pitch=pitch.astype(np.int8),
            velocity=velocity.astype(np.int8),
        )
        score.tracks.append(track)
    return score


def generate(folder: Path, n: int, seed: int) -> tuple[list[Path], float, int]:
    """Write the n synthetic files (files already there are reused). Returns (paths, seconds, made)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / synth_name(seed, i) for i in range(n)]
    t0 = time.perf_counter()
    made = 0
    for i, path in enumerate(paths):
        if path.exists() and path.stat().st_size > 0:
            continue
        score = make_score(np.random.default_rng([seed, i]))
        tmp = path.with_name(f".{path.name}.tmp")
        score.dump_midi(str(tmp))
        os.replace(tmp, path)
        made += 1
        if made % 500 == 0:
            print(f"  generated {made} files", file=sys.stderr)
    return paths, time.perf_counter() - t0, made


def folder_of(paths: list[Path], folder: Path, work: Path, label: str) -> Path:
    """A folder holding exactly ``paths``: ``folder`` itself when it holds nothing else, otherwise
    a folder of symbolic links under ``work``."""
    present = {p for p in folder.rglob("*") if p.suffix.lower() in {".mid", ".midi", ".kar", ".smf"}}
    if present == set(paths):
        return folder
    links = work / label
    links.mkdir()
    for p in paths:
        (links / p.name).symlink_to(p.resolve())
    return links


# --------------------------------------------------------------------------------------------
# measurements (each in a fresh subprocess)
# --------------------------------------------------------------------------------------------


def child_prepare(src: str, out: str, workers: int | None) -> dict:
    from musicrnn.codec import PerformanceCodec
    from musicrnn.corpus import prepare

    t0 = time.perf_counter()
    manifest = prepare([src], out, PerformanceCodec(), workers=workers)
    seconds = time.perf_counter() - t0
    return {
        "files": manifest["files_seen"],
        "rejected": len(manifest["rejected"]),
        "tokens": sum(s["tokens"] for s in manifest["splits"].values()),
        "seconds": seconds,
        # ru_maxrss is in KiB on Linux: the largest single process, this one or a worker
        "max_rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "max_rss_workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def child_naive(paths: list[str]) -> dict:
    import warnings

    import pretty_midi

    from musicrnn.codec import PerformanceCodec
    from musicrnn.notes import make_notes

    warnings.filterwarnings("ignore")
    codec = PerformanceCodec()
    failed = tokens = 0
    t0 = time.perf_counter()
    for path in paths:
        try:
            pm = pretty_midi.PrettyMIDI(path)
        except Exception:
            failed += 1
            continue
        notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
        arr = make_notes(
            pitch=np.array([n.pitch for n in notes]),
            velocity=np.array([n.velocity for n in notes]),
            start=np.array([n.start for n in notes]),
            end=np.array([n.end for n in notes]),
        )
        tokens += len(codec.encode(arr))
    seconds = time.perf_counter() - t0
    return {
        "files": len(paths),
        "rejected": failed,
        "tokens": tokens,
        "seconds": seconds,
        "max_rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "max_rss_workers": 0,
    }


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_procs = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._stop_event.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_total = max(self.peak_total, total)
            self.peak_procs = max(self.peak_procs, len(procs))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(mode: str, payload: dict, work: Path, sample: bool = True) -> dict:
    """Run one measurement in a fresh interpreter; with ``sample``, sample its process tree's
    memory meanwhile (the sampler polls /proc every 20 ms: it competes with the workers for the
    cores, so timed runs go without it)."""
    arg_file = work / f"args-{mode}-{time.monotonic_ns()}.json"
    arg_file.write_text(json.dumps(payload))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(arg_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = TreeSampler(proc.pid) if sample else None
    if sampler is not None:
        sampler.start()
    stdout, _ = proc.communicate()
    if sampler is not None:
        sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"error: the {mode} measurement failed (exit {proc.returncode}); see the messages above")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_tree_rss"] = sampler.peak_total if sampler is not None else result["max_rss_self"]
    result["processes"] = sampler.peak_procs if sampler is not None else 1
    return result


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / MIB:,.0f} MiB"


def report(args, n: int, gen_seconds: float, made: int, full: dict, small: dict, naive: dict, workers: int) -> str:
    full_rate = full["files"] / full["seconds"]
    naive_rate = naive["files"] / naive["seconds"]
    small_rate = small["files"] / small["seconds"]
    naive_note = (
        f"{naive['files']:,} of {n:,} (sample; rate extrapolated)" if naive["files"] < n else f"{naive['files']:,}"
    )
    rows = [
        ("`prepare`, all files", f"{workers} worker processes", f"{full['files']:,}", full["seconds"], full_rate,
         mib(full["peak_tree_rss"]), mib(max(full["max_rss_self"], full["max_rss_workers"]))),
        ("naive pretty_midi loop", "1 process", naive_note, naive["seconds"], naive_rate,
         mib(naive["peak_tree_rss"]), mib(naive["max_rss_self"])),
        (f"`prepare`, {small['files']:,}-file subset", f"{workers} worker processes", f"{small['files']:,}",
         small["seconds"], small_rate, mib(small["peak_tree_rss"]),
         mib(max(small["max_rss_self"], small["max_rss_workers"]))),
    ]
    lines = [
        f"## musicrnn ingest benchmark ({n:,} synthetic MIDI files)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; codec: PerformanceCodec() defaults (seconds, 10 ms grid, 32 velocity bins).",
        f"Corpus: seed {args.seed}, 1-3 min per file, 2-4 tracks (drums in ~40%), tempo changes; "
        f"{made:,} files generated in {gen_seconds:.1f} s ({n - made:,} reused).",
        "",
        "| run | processes | files | seconds | files/s | peak RSS, process tree | largest single process |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, procs, files, secs, rate, tree, one in rows:
        lines.append(f"| {name} | {procs} | {files} | {secs:,.2f} | {rate:,.1f} | {tree} | {one} |")
    naive_total = n / naive_rate
    lines += [
        "",
        f"- Speed: `prepare` ingests **{full_rate / naive_rate:,.1f}x** as many files per second as the naive loop "
        f"({full_rate:,.1f} vs {naive_rate:,.1f} files/s; the naive loop would take about {naive_total:,.0f} s "
        f"for all {n:,} files, extrapolated from its {naive['files']:,}-file sample). `prepare` also writes the "
        "token files and manifest; the naive loop only parses and encodes.",
        f"- Memory: peak process-tree RSS at {full['files']:,} files is **{full['peak_tree_rss'] / small['peak_tree_rss']:.2f}x** "
        f"the peak at {small['files']:,} files ({mib(full['peak_tree_rss'])} vs {mib(small['peak_tree_rss'])}); "
        "1.0 means memory does not grow with the corpus.",
        "- Process-tree RSS adds up each process's resident memory (sampled every 20 ms), so pages that "
        "forked workers share are counted once per process; the last column is the largest single process "
        "(getrusage). Timed runs go without the sampler (it polls /proc and would compete with the workers "
        f"for the {os.cpu_count()} cores): the first row's tree RSS comes from a second, sampled run of "
        "`prepare` on all files; the naive loop is one process (its getrusage peak).",
    ]
    if full["rejected"]:
        lines.append(f"- {full['rejected']} files were rejected by `prepare` (see its rejected.tsv).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5000, help="synthetic MIDI files to generate and ingest (default 5000)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="folder for the MIDI files (kept; files already there are reused); default: a temp folder")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (MIDI files and prepared data)")
    ap.add_argument("--workers", type=int, default=None, help="prepare's worker processes (default: all cores)")
    ap.add_argument("--naive-sample", type=int, default=300,
                    help="files timed in the naive loop; its rate is extrapolated to --files (default 300)")
    ap.add_argument("--rss-small", type=int, default=1000,
                    help="subset size for the memory comparison (default 1000; at most a fifth of --files)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic corpus")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "ARGS"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        mode, arg_file = args.child
        payload = json.loads(Path(arg_file).read_text())
        result = child_prepare(**payload) if mode == "prepare" else child_naive(**payload)
        print(json.dumps(result))
        return

    try:
        import psutil  # noqa: F401
    except ImportError:
        raise SystemExit("error: this benchmark needs psutil: pip install psutil") from None
    if args.files < 2:
        raise SystemExit("error: --files must be at least 2")
    n = args.files
    workers = args.workers or os.cpu_count() or 1
    small_n = max(1, min(args.rss_small, n // 5))

    work = Path(tempfile.mkdtemp(prefix="musicrnn-ingest-"))
    try:
        midi_dir = args.dir or work / "midi"
        print(f"generating {n:,} files in {midi_dir} ...", file=sys.stderr)
        paths, gen_seconds, made = generate(midi_dir, n, args.seed)
        full_src = folder_of(paths, midi_dir, work, f"all-{n}")
        small_src = folder_of(paths[:small_n], midi_dir, work, f"subset-{small_n}")

        print(f"prepare on {small_n:,} files ...", file=sys.stderr)
        small = measure("prepare", {"src": str(small_src), "out": str(work / f"data-{small_n}"), "workers": workers}, work)
        print(f"prepare on {n:,} files (memory) ...", file=sys.stderr)
        memory = measure("prepare", {"src": str(full_src), "out": str(work / f"data-{n}-rss"), "workers": workers}, work)
        print(f"prepare on {n:,} files (timed) ...", file=sys.stderr)
        full = measure("prepare", {"src": str(full_src), "out": str(work / f"data-{n}"), "workers": workers}, work,
                       sample=False)
        full["peak_tree_rss"] = memory["peak_tree_rss"]
        k = max(1, min(args.naive_sample, n))
        sample = [str(p) for p in paths[:: max(1, n // k)][:k]]  # spread over the corpus
        print(f"naive pretty_midi loop on {len(sample):,} files ...", file=sys.stderr)
        naive = measure("naive", {"paths": sample}, work, sample=False)  # one process: its getrusage peak

        print(report(args, n, gen_seconds, made, full, small, naive, workers))
    finally:
        if args.keep:
            print(f"\nkept: {work} (prepared data; MIDI files in {args.dir or work / 'midi'})", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
