"""`musicrnn data prepare|stats`: training data from MIDI, piano rolls and music21."""

from __future__ import annotations

from pathlib import Path

import click

from musicrnn.cli.common import build_codec, codec_options, user_errors


@click.group()
def data() -> None:
    """Prepare and inspect training data."""


@data.command("prepare")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output data folder (replaced atomically if it already holds prepared data).")
@codec_options
@click.option("--split", default="0.8,0.1,0.1", show_default=True,
              help="train,valid,test fractions. Each file's split comes from a hash of its path relative to "
                   "the SOURCE given, so renaming the folder moves nothing (.mat files keep their own split).")
@click.option("--split-seed", type=int, default=0, show_default=True,
              help="Mixed into the split hash: another seed, another split of the same files.")
@click.option("--tracks", default=None, metavar="NAMES",
              help="MIDI files: keep only the tracks with these names (any case), e.g. MELODY,PIANO.")
@click.option("--programs", default=None, metavar="LIST",
              help="MIDI files: keep only pitched tracks with these General MIDI programs, e.g. 0-7,24.")
@click.option("--drums", type=click.Choice(["drop", "keep", "only"]), default="drop", show_default=True,
              help="Drum tracks: drop them, keep them (hits become notes at their drum key numbers), or keep only them.")
@click.option("--roles", "roles", multiple=True, metavar="ROLE=NAMES",
              help="A codec with roles (accompany): the tracks (names, any case) that play each role, one --roles per "
                   "role, e.g. --roles melody=MELODY,BRIDGE --roles accompaniment=PIANO; a file lacking a role's "
                   "tracks is skipped.")
@click.option("--key-normalise", is_flag=True,
              help="Transpose each piece so its tonic is C (C major / C minor, at most 6 semitones): its key from key_audio.txt "
                   "beside the MIDI file (POP909), else estimated from its notes.")
@click.option("--workers", type=int, default=None, help="Parallel parser processes (default: all cores).")
@user_errors
def data_prepare(sources, out, split, split_seed, tracks, programs, drums, roles, key_normalise, workers,
                 **codec_values) -> None:
    """Turn SOURCES into token data for training.

    \b
    SOURCES: folders of MIDI files (searched recursively), single MIDI files,
    Boulanger-Lewandowski piano-roll .mat files, or music21:NAME (e.g. music21:bach;
    needs `pip install musicrnn[corpora]`).

    The pitched tracks of a MIDI file are merged into one stream and drum tracks dropped,
    unless --tracks, --programs or --drums say otherwise (--tracks and --programs must both
    match); the summary says which tracks were merged and dropped. A file with none of the
    chosen tracks is rejected.

    Corrupt or unusable files are skipped, listed in OUT/rejected.tsv and counted here;
    the command succeeds if any piece was usable.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from musicrnn.corpus import key_summary_line, prepare, track_summary_line
    from musicrnn.ingest import IngestOptions
    from musicrnn.roles import RoleChoice, role_summary_line
    from musicrnn.sources import TrackChoice, mat_frame_beats

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        raise click.BadParameter(f"{split!r}: give three fractions, e.g. 0.8,0.1,0.1", param_hint="--split") from None
    mats = [s for s in sources if s.lower().endswith(".mat")]
    default_steps = round(1 / mat_frame_beats(mats[0])) if mats else None
    codec = build_codec(codec_values, default_steps)
    role_choice = RoleChoice.parse(roles, codec.roles, codec.name) if roles or codec.roles else None
    options = IngestOptions(tracks=TrackChoice.parse(tracks, programs, drums), key_normalise=key_normalise,
                            roles=role_choice)
    console = Console(stderr=True)
    with Progress(TextColumn("parsing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("parse", total=None)
        manifest = prepare(list(sources), out, codec, fractions, workers,
                           progress=lambda done, total: bar.update(task, completed=done, total=total),
                           split_seed=split_seed, options=options)
    for entry in manifest["rejected"]:
        console.print(f"[yellow]rejected[/] {entry['file']}: {entry['reason']}", highlight=False, soft_wrap=True)
    s = manifest["splits"]
    click.echo(
        f"{out}: {codec.name} codec, vocab {codec.vocab_size}; pieces train/valid/test "
        f"{s['train']['pieces']}/{s['valid']['pieces']}/{s['test']['pieces']}, "
        f"{sum(v['tokens'] for v in s.values())} tokens; {len(manifest['rejected'])} of "
        f"{manifest['files_seen']} rejected (listed in {out / 'rejected.tsv'})"
    )
    for label, line in (("tracks", track_summary_line(manifest)), ("roles", role_summary_line(manifest)),
                        ("keys", key_summary_line(manifest))):
        if line:
            click.echo(f"{label}: {line}")


@data.command("stats")
@click.argument("folder", type=click.Path(path_type=Path))
@user_errors
def data_stats_cmd(folder) -> None:
    """Show pieces, tokens, frames, notes per split, the most common tokens, and durations,
    tempi, time signatures and notes per second of FOLDER."""
    from rich.console import Console
    from rich.table import Table

    from musicrnn.corpus import data_stats, key_summary_line, track_summary_line
    from musicrnn.roles import role_summary_line

    st = data_stats(folder)
    console = Console()
    table = Table(title=f"{folder} ({st['codec']['type']} codec, {st['vocab_used']}/{st['vocab_size']} tokens used)")
    for col in ("split", "pieces", "tokens", "frames", "notes"):
        table.add_column(col, justify="right")
    for name, c in st["splits"].items():
        table.add_row(name, *(f"{c[k]:,}" for k in ("pieces", "tokens", "frames", "notes")))
    console.print(table)
    top = Table(title="most common tokens")
    for col in ("token", "count", "share"):
        top.add_column(col, justify="right")
    for name, n, share in st["top_tokens"]:
        top.add_row(name, f"{n:,}", f"{share:.1%}")
    console.print(top)
    if st["pitch_range"]:
        console.print(f"pitch range used: {st['pitch_range'][0]}-{st['pitch_range'][1]}; rejected files: {st['rejected']}")
    _print_music(console, st["music"])
    for label, line in (("tracks", track_summary_line(st["manifest"])), ("roles", role_summary_line(st["manifest"])),
                        ("keys", key_summary_line(st["manifest"]))):
        if line:
            console.print(f"{label}: {line}", highlight=False)


def _print_music(console, music: dict | None) -> None:
    """``data stats``' durations, tempi, metres and note rate per split (from the manifest)."""
    from rich.table import Table

    if not music:
        console.print("durations, tempi and metres: not recorded in this data folder (prepared by an older "
                      "musicrnn); prepare it again to see them")
        return
    table = Table(title="durations and tempi")
    for col in ("split", "total", "mean length", "mean beats", "tempo min/median/max", "notes/s"):
        table.add_column(col, justify="right")
    for name in ("train", "valid", "test", "all"):
        m = music[name]
        sec, beats, bpm = m["seconds"], m["beats"], m["bpm"]
        table.add_row(
            name,
            _hours(sec["total"]) if sec else "-",
            f"{sec['mean']:.1f} s" if sec else "-",
            f"{beats['mean']:.1f}" if beats else "-",
            f"{bpm['min']:.0f}/{bpm['median']:.0f}/{bpm['max']:.0f} BPM" if bpm else "-",
            f"{m['notes_per_second']:.2f}" if m["notes_per_second"] is not None else "-",
        )
    console.print(table)
    metres = music["all"]["time_signatures"]
    if metres:
        most = sorted(metres.items(), key=lambda kv: (-kv[1], kv[0]))
        console.print("time signatures (pieces): " + ", ".join(f"{k} {n:,}" for k, n in most), highlight=False)
    untimed = music["all"]["pieces"] - music["all"]["pieces_with_tempo"]
    if untimed:
        console.print(f"{untimed:,} pieces have no tempo or metre (piano rolls): counted in beats only", highlight=False)


def _hours(seconds: float) -> str:
    """1234.5 -> '0:20:34'."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
