"""The ``musicrnn`` command line: parses options and calls library functions.

Every user error is a :class:`~musicrnn.errors.MusicRNNError`; :func:`main` prints its one
line as ``error: ...`` and exits with status 1 (no traceback).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from musicrnn import __version__
from musicrnn.errors import MusicRNNError


def _pitch_range(value: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in value.split("-", 1))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give LO-HI in MIDI note numbers, e.g. 21-108") from None
    if not (0 <= lo <= hi <= 127):
        raise click.BadParameter(f"{value!r}: need 0 <= LO <= HI <= 127")
    return lo, hi


def codec_options(f):
    """Options that describe a codec (shared by every command that builds one)."""
    opts = [
        click.option("--codec", "codec_name", type=click.Choice(["performance", "grid"]), default="performance",
                     show_default=True, help="performance: note-on/off + time-shift events; grid: piano-roll frames."),
        click.option("--time-unit", type=click.Choice(["seconds", "beats"]), default="beats", show_default=True,
                     help="performance codec: time shifts in seconds (10 ms grid) or beats (follows tempo)."),
        click.option("--steps", type=float, default=None,
                     help="Grid resolution: steps per second/beat (performance: 100/s or 12/beat; grid: 4/beat)."),
        click.option("--max-shift", type=int, default=None,
                     help="performance codec: longest single time shift in steps (default 1 s or 4 beats)."),
        click.option("--velocity-bins", type=int, default=32, show_default=True,
                     help="performance codec: velocity levels (0 = no velocity tokens)."),
        click.option("--pitch-range", type=str, default="21-108", show_default=True,
                     help="Lowest-highest MIDI pitch kept (notes outside are dropped)."),
        click.option("--restrike/--no-restrike", default=False, show_default=True,
                     help="grid codec: mark re-struck notes apart from held ones."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_codec(codec_name, time_unit, steps, max_shift, velocity_bins, pitch_range, restrike, default_steps=None):
    from musicrnn.codec import GridCodec, PerformanceCodec

    lo, hi = _pitch_range(pitch_range)
    if codec_name == "grid":
        spb = steps or default_steps or 4
        if spb != int(spb):
            raise click.BadParameter("grid codec --steps must be a whole number of steps per beat")
        return GridCodec(steps_per_beat=int(spb), min_pitch=lo, max_pitch=hi, mark_restrikes=restrike)
    return PerformanceCodec(time_unit=time_unit, steps_per_unit=steps, max_shift_steps=max_shift,
                            velocity_bins=velocity_bins, min_pitch=lo, max_pitch=hi)


def user_errors(f):
    """Turn MusicRNNError into one 'error:' line and exit status 1."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except MusicRNNError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="musicrnn")
def cli() -> None:
    """musicrnn: LSTM/GRU note-sequence models that compose MIDI and jam live.

    \b
    Typical use:
      musicrnn data prepare my_midi/ -o data/mine        # MIDI folder -> training data
      musicrnn data stats data/mine                       # what is in it
    """


@cli.group()
def data() -> None:
    """Prepare and inspect training data."""


@data.command("prepare")
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output data folder (replaced atomically if it already holds prepared data).")
@codec_options
@click.option("--split", default="0.8,0.1,0.1", show_default=True,
              help="train,valid,test fractions for MIDI folders (.mat files keep their own split).")
@click.option("--workers", type=int, default=None, help="Parallel parser processes (default: all cores).")
@user_errors
def data_prepare(sources, out, codec_name, time_unit, steps, max_shift, velocity_bins, pitch_range, restrike,
                 split, workers) -> None:
    """Turn SOURCES into token data for training.

    \b
    SOURCES: folders of MIDI files (searched recursively), single MIDI files,
    Boulanger-Lewandowski piano-roll .mat files, or music21:NAME (e.g. music21:bach;
    needs `pip install musicrnn[corpora]`).

    Corrupt or unusable files are skipped, listed in OUT/rejected.tsv and counted here;
    the command succeeds if any piece was usable.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from musicrnn.corpus import prepare
    from musicrnn.sources import mat_frame_beats

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        raise click.BadParameter(f"{split!r}: give three fractions, e.g. 0.8,0.1,0.1", param_hint="--split") from None
    mats = [s for s in sources if s.lower().endswith(".mat")]
    default_steps = round(1 / mat_frame_beats(mats[0])) if mats else None
    codec = build_codec(codec_name, time_unit, steps, max_shift, velocity_bins, pitch_range, restrike, default_steps)
    console = Console(stderr=True)
    with Progress(TextColumn("parsing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("parse", total=None)
        manifest = prepare(list(sources), out, codec, fractions, workers,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
    for entry in manifest["rejected"]:
        console.print(f"[yellow]rejected[/] {entry['file']}: {entry['reason']}", highlight=False, soft_wrap=True)
    s = manifest["splits"]
    click.echo(
        f"{out}: {codec.name} codec, vocab {codec.vocab_size}; pieces train/valid/test "
        f"{s['train']['pieces']}/{s['valid']['pieces']}/{s['test']['pieces']}, "
        f"{sum(v['tokens'] for v in s.values())} tokens; {len(manifest['rejected'])} of "
        f"{manifest['files_seen']} rejected (listed in {out / 'rejected.tsv'})"
    )


@data.command("stats")
@click.argument("folder", type=click.Path(path_type=Path))
@user_errors
def data_stats_cmd(folder) -> None:
    """Show pieces, tokens, frames, notes per split and the most common tokens of FOLDER."""
    from rich.console import Console
    from rich.table import Table

    from musicrnn.corpus import data_stats

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


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
