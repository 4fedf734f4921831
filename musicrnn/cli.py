"""The ``musicrnn`` command line: parses options and calls library functions.

Every user error is a :class:`~musicrnn.errors.MusicRNNError`; :func:`main` prints its one
line as ``error: ...`` and exits with status 1 (no traceback).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from musicrnn import __version__
from musicrnn.errors import MusicRNNError
from musicrnn.limits import MAX_NOTE_BEATS
from musicrnn.live.control_table import CONTROLS as LIVE_CONTROLS
from musicrnn.live.controls import CONTROLS as CC_CONTROLS
from musicrnn.live.controls import cc_help_lines


def _pitch_range(value: str) -> tuple[int, int]:
    from musicrnn.codecs import OptionValueError, parse_pitch_range

    try:
        return parse_pitch_range(value)
    except OptionValueError as exc:
        raise _bad_value(exc) from None


def _bad_value(exc) -> click.BadParameter:
    """A codec's bad option value as click reports its own."""
    return click.BadParameter(str(exc), param_hint=f"'{exc.flag}'")


def codec_options(f):
    """Options that describe a codec: every registered codec's (musicrnn.codecs.cli_options)."""
    from musicrnn.codecs import cli_options

    for opt in reversed(cli_options()):
        kind = click.Choice(list(opt.type)) if isinstance(opt.type, tuple) else None if opt.type is bool else opt.type
        f = click.option(opt.flag, opt.param, type=kind, default=opt.default, show_default=opt.show_default,
                         help=opt.help)(f)
    return f


def build_codec(values: dict, default_steps=None):
    """The codec that codec_options' ``values`` describe (``default_steps``: the sources' grid)."""
    from musicrnn.codecs import OptionValueError, codec_from_cli

    values = dict(values)
    try:
        return codec_from_cli(values.pop("codec_name"), values, default_steps)
    except OptionValueError as exc:
        raise _bad_value(exc) from None


def user_errors(f):
    """Turn MusicRNNError into one 'error:' line and exit status 1 (click's usage errors raised
    in the command get its context, for the help hint of :class:`UsageLine`)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except MusicRNNError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            exc.ctx = exc.ctx or click.get_current_context(silent=True)
            raise

    return wrapper


class UsageLine(click.ClickException):
    """A usage error (bad value, unknown option, missing argument) shown as every other user
    error is: one ``error: <what> — <fix>`` line and exit status 1 (click's own: usage text,
    'Error:' and status 2)."""

    exit_code = 1

    def __init__(self, exc: click.ClickException) -> None:
        ctx = getattr(exc, "ctx", None)
        hint = f" — see '{ctx.command_path} --help'" if ctx is not None else ""
        super().__init__(" ".join(exc.format_message().split()) + hint)

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class MusicRNNGroup(click.Group):
    """The top-level group: turns click's exceptions, from parsing or from a command, into
    :class:`UsageLine` (``--help`` and ``--version`` still exit 0)."""

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            raise exc if isinstance(exc, UsageLine) else UsageLine(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise exc if isinstance(exc, UsageLine) else UsageLine(exc) from None


@click.group(name="musicrnn", cls=MusicRNNGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
@click.option("--key-normalise", is_flag=True,
              help="Transpose each piece so its tonic is C (C major / C minor, at most 6 semitones): its key from key_audio.txt "
                   "beside the MIDI file (POP909), else estimated from its notes.")
@click.option("--workers", type=int, default=None, help="Parallel parser processes (default: all cores).")
@user_errors
def data_prepare(sources, out, split, split_seed, tracks, programs, drums, key_normalise, workers,
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

    from musicrnn.corpus import IngestOptions, key_summary_line, prepare, track_summary_line
    from musicrnn.sources import TrackChoice, mat_frame_beats

    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError:
        raise click.BadParameter(f"{split!r}: give three fractions, e.g. 0.8,0.1,0.1", param_hint="--split") from None
    mats = [s for s in sources if s.lower().endswith(".mat")]
    default_steps = round(1 / mat_frame_beats(mats[0])) if mats else None
    codec = build_codec(codec_values, default_steps)
    options = IngestOptions(tracks=TrackChoice.parse(tracks, programs, drums), key_normalise=key_normalise)
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
    for label, line in (("tracks", track_summary_line(manifest)), ("keys", key_summary_line(manifest))):
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
    for label, line in (("tracks", track_summary_line(st["manifest"])), ("keys", key_summary_line(st["manifest"]))):
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



@cli.command("train")
@click.argument("data_folder", type=click.Path(path_type=Path))
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: best.pt, last.pt and metrics.jsonl go here.")
@click.option("--arch", type=click.Choice(["lstm", "gru", "rnn"]), default="lstm", show_default=True,
              help="Recurrent cell; rnn is the plain tanh RNN baseline.")
@click.option("--layers", type=int, default=2, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=int, default=512, show_default=True, help="Units per layer (the main size knob).")
@click.option("--embedding", type=int, default=256, show_default=True, help="Token embedding width.")
@click.option("--dropout", type=float, default=0.2, show_default=True, help="Dropout; raise to fight overfitting on small corpora.")
@click.option("--tie-weights/--no-tie-weights", default=False, show_default=True, help="Share input embedding and output layer.")
@click.option("--attention", type=int, default=0, show_default=True, help="Attend over the last K outputs (0 = off).")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Pieces played in parallel per step.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per row per step (truncated BPTT).")
@click.option("--epochs", type=float, default=None, help="Passes over the training pieces.")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (stops at whichever of --epochs/--max-steps comes first).")
@click.option("--time-limit", type=float, default=None, metavar="MINUTES",
              help="Stop after this many minutes (the cosine schedule then decays by time; not bit-reproducible).")
@click.option("--init-from", type=click.Path(path_type=str), default=None, metavar="CKPT",
              help="Fine-tune: start from this checkpoint's weights and architecture (same codec as DATA_FOLDER): "
                   "a .pt file, a run folder, or a bundled model name such as 'default'.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adamw", "rmsprop"]), default="adamw", show_default=True)
@click.option("--clip", type=float, default=1.0, show_default=True, help="Gradient-norm clip (0 = off).")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant", "plateau"]), default="cosine", show_default=True,
              help="cosine: warm up then decay to 5%; plateau: halve on each evaluation without improvement.")
@click.option("--warmup-steps", type=int, default=100, show_default=True)
@click.option("--patience", type=int, default=0, show_default=True, help="Stop after N evaluations without valid improvement (0 = off).")
@click.option("--eval-every", type=int, default=0, show_default=True, help="Steps between valid evaluations (0 = once per epoch).")
@click.option("--augment-transpose", type=int, default=0, show_default=True, help="Randomly transpose each piece within +-N semitones.")
@click.option("--augment-stretch", type=float, default=0.0, show_default=True, help="performance codec: random time stretch within +-F.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision (bf16 recommended on recent GPUs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice).")
@click.option("--resume", is_flag=True, help="Continue exactly where RUN/last.pt stopped.")
@click.option("--overwrite", is_flag=True,
              help="Start again in a run folder that already holds a run: deletes its best.pt, last.pt and metrics.jsonl.")
@user_errors
def train_cmd(data_folder, run_dir, resume, overwrite, **options) -> None:
    """Train a model on DATA_FOLDER (made by `musicrnn data prepare`).

    \b
    A run folder that already holds a run is refused unless `--resume` (continue it)
    or `--overwrite` (start again, replacing it) is given.
    Ctrl-C saves RUN/last.pt and exits with status 130 (so `train && eval` stops there);
    `--resume` continues from it exactly.
    Several GPUs or nodes: run the same command under torchrun, e.g.
      torchrun --nproc-per-node 4 -m musicrnn train data/jsb -o runs/jsb --epochs 100
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from musicrnn.config import TrainConfig
    from musicrnn.train import check_run_folder, train
    from musicrnn.train_progress import PlainProgress, clock_text, result_summary

    cfg = TrainConfig.from_dict(options)  # the model's options nest into cfg.model
    check_run_folder(run_dir, resume, overwrite)
    console = Console(stderr=True)
    rank0 = os.environ.get("RANK", "0") == "0"
    # a live bar on a terminal; plain lines where output goes to a file (or the bar cannot be drawn)
    show_bar = rank0 and console.is_terminal
    plain = PlainProgress(click.echo) if rank0 and (not sys.stdout.isatty() or not show_bar) else None
    # drawn from the first progress row on, so an error before training is one clean line
    bar = Progress(TextColumn("step"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), console=console, disable=not show_bar)
    tasks: list = []
    last: dict = {}

    def on_progress(row: dict) -> None:
        if plain is not None:
            plain(row)
        if not show_bar:
            return
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("train", total=None, info=""))
        last.update(row)

        def shown(key: str, fmt: str) -> str:  # "-" until the first logging window has it
            return format(last[key], fmt) if key in last else "-"

        best = (f"best train loss {shown('best_train_loss', '.4f')}" if "best_train_loss" in last
                else f"valid {shown('best_valid_nll', '.4f')}")
        info = (f"loss {shown('train_loss', '.3f')} {best} {shown('tokens_per_s', ',.0f')} tok/s "
                f"left {clock_text(last.get('remaining_s'))}")
        bar.update(tasks[0], completed=row["step"], total=row.get("total_steps", bar.tasks[0].total), info=info)

    try:
        result = train(data_folder, run_dir, cfg, resume=resume, on_progress=on_progress, overwrite=overwrite,
                       echo=click.echo)
    finally:
        if tasks:  # rich prints a blank line when stopping a bar it never drew
            bar.stop()
    if rank0:
        saved = " and ".join(str(run_dir / n) for n in ("best.pt", "last.pt") if (run_dir / n).exists()) or "nothing"
        click.echo(f"{result.stopped} after {result.steps} steps; {result_summary(result)}; saved {saved}")
    if result.stopped == "interrupted":  # a script's `train && eval` must not carry on as if training had finished
        import signal

        if rank0:
            click.echo(f"interrupted; {run_dir / 'last.pt'} is saved: continue with --resume", err=True)
        sys.exit(128 + (result.signum or int(signal.SIGINT)))


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("data_folder", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--music-stats", is_flag=True,
              help="Also compare MusPy music statistics of real excerpts, our samples and n-gram samples.")
@click.option("--samples", type=int, default=64, show_default=True, help="--music-stats: pieces to generate.")
@click.option("--bars", type=float, default=8, show_default=True, help="--music-stats: bars per generated piece.")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="Score the int8 fast path that `musicrnn serve --quantize int8` plays with (CPU).")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Score with bfloat16 weights, as `musicrnn compose --precision bf16` generates.")
@user_errors
def eval_cmd(checkpoint, data_folder, split, device, batch_size, as_json, music_stats, samples, bars, quantize,
             precision) -> None:
    """Score CHECKPOINT on a split of DATA_FOLDER: NLL per token, bits per token, perplexity,
    and for grid-codec data NLL per frame (nats) as in the published piano-roll tables.

    CHECKPOINT is a .pt file, a run folder (its best.pt) or a bundled model name such as
    `default`; or `ngram:ORDER` (1-16) to score a Kneser-Ney n-gram baseline fitted on the
    train split of DATA_FOLDER.
    """
    import json as jsonlib

    from musicrnn.inference import pick_device

    dev = pick_device(device)
    if str(checkpoint).startswith("ngram:"):
        from musicrnn.evaluate import evaluate_ngram
        from musicrnn.ngram import parse_ngram_spec

        result = evaluate_ngram(data_folder, parse_ngram_spec(str(checkpoint)), split)
    else:
        from musicrnn.evaluate import evaluate_checkpoint
        from musicrnn.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint, dev)
        run = {"device": str(dev), "precision": precision, "quantize": quantize}
        result = evaluate_checkpoint(ckpt, data_folder, split, batch_size=batch_size, **run)
        if music_stats:
            from musicrnn.evaluate import music_stats_comparison

            result["music_stats"] = music_stats_comparison(ckpt, data_folder, split, samples, bars, **run)
    if as_json:
        click.echo(jsonlib.dumps(result))
        return
    lines = [f"{checkpoint} on {data_folder} [{split}]: {result['pieces']} pieces, {result['tokens']:,} tokens",
             f"  NLL/token {result['nll_per_token']:.4f} nats  ({result['bits_per_token']:.4f} bits, perplexity {result['perplexity']:.3f})"]
    if "nll_per_frame" in result:
        lines.append(f"  NLL/frame {result['nll_per_frame']:.4f} nats over {result['frames']:,} frames")
    click.echo("\n".join(lines))
    if "music_stats" in result:
        ms = result["music_stats"]
        names = list(ms["stats"])
        click.echo(f"\nmusic statistics ({ms['samples']} samples of {ms['bars']:g} bars; {ms['real_excerpts']} real excerpts)")
        click.echo(f"  {'statistic':<22}" + "".join(f"{n:>12}" for n in names))
        for stat in next(iter(ms["stats"].values())):
            click.echo(f"  {stat:<22}" + "".join(f"{ms['stats'][n][stat]:>12.3f}" for n in names))
        click.echo(f"  ours closer to real than the n-gram on {ms['ours_closer']} of {ms['compared']} statistics")



@cli.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp16/--fp32", default=True, show_default=True, help="Store weights in float16 (half the size).")
@user_errors
def export_cmd(checkpoint, out, fp16) -> None:
    """Write a slim, shareable copy of CHECKPOINT (no optimizer/training state) to OUT."""
    from musicrnn.checkpoint import export_checkpoint

    path = export_checkpoint(checkpoint, out, half=fp16)
    click.echo(f"{path}: {path.stat().st_size / 1e6:.1f} MB")


@cli.command("compose")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Checkpoint (.pt or run folder); default: the model bundled with musicrnn.")
@click.option("-n", "count", type=int, default=4, show_default=True, help="How many pieces to write.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out"), show_default=True,
              help="Output folder.")
@click.option("--name", default=None, help="File name stem (default: the primer's name or 'musicrnn').")
@click.option("--primer", type=click.Path(path_type=Path), default=None,
              help="MIDI file to continue: each output starts with it (its tracks, tempo changes and time "
                   "signatures as they are), then the model's continuation on a track of its own ('musicrnn').")
@click.option("--primer-bars", type=int, default=None, metavar="N",
              help="Keep only the primer's last N bars, as context and in the output (default: all of it; "
                   "a note suggests this for primers over 32 bars).")
@click.option("--primer-seconds", type=float, default=None, metavar="S",
              help="Keep only the primer's last S seconds (instead of --primer-bars).")
@click.option("--bars", type=float, default=None, help="Length of the new music in bars (default 8).")
@click.option("--seconds", type=float, default=None, help="Length of the new music in seconds (instead of --bars).")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="1.0 = as trained; lower = safer and more repetitive; higher = wilder; 0 = always the likeliest.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample only among the K likeliest tokens (0 = off).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling: keep tokens up to probability P (1 = off).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same files (byte for byte).")
@click.option("--key", default=None, help="Keep new notes in a key, e.g. C:major, A:minor, D:dorian, E:pentatonic.")
@click.option("--pitch-range", default=None, help="Keep new notes within LO-HI (MIDI numbers), e.g. 48-84.")
@click.option("--max-polyphony", type=int, default=0, show_default=True, help="Most notes at once (0 = no limit).")
@click.option("--min-note", type=float, default=0, show_default=True, help="Shortest new note in beats (0 = no limit).")
@click.option("--max-note", type=float, default=MAX_NOTE_BEATS, show_default=True,
              help="Longest new note in beats (0 = no limit; the default is serve's --max-note-beats).")
@click.option("--tempo", type=float, default=None,
              help="Tempo of the new music in BPM, 20-400 (default: the primer's where it ends, else 120).")
@click.option("--beats-per-bar", type=float, default=None,
              help="Beats (quarter notes) per bar, for --bars and --primer-bars (default: the primer's time "
                   "signature, a declared 1/4 read as 4/4; else 4).")
@click.option("--time-signature", default=None, metavar="N/D",
              help="Time signature of the new music, e.g. 3/4 or 6/8 (instead of --beats-per-bar; also written "
                   "to the MIDI file).")
@click.option("--program", type=click.IntRange(0, 127), default=0, show_default=True, help="General MIDI program for new notes.")
@click.option("--follow", "follow_spec", default="all", show_default=True, metavar="SPEC",
              help="What a continuation follows of its primer: all, none, or some of key,register,velocity "
                   "(e.g. key,register or velocity=0.5). --key is always kept.")
@click.option("--velocity", "velocity_how", default=None, metavar="follow|model|N",
              help="Velocities of the new notes: the primer's dynamics, the model's own, or N (1-127) for all "
                   "(default: as --follow says).")
@click.option("--png", is_flag=True, help="Also draw a piano-roll PNG per piece.")
@click.option("--overwrite", is_flag=True,
              help="Replace the files of an earlier run with the same --name in the output folder (and remove "
                   "those this run does not rewrite); without it such files are an error.")
@click.option("--wav", is_flag=True, help="Also render a WAV per piece (needs FluidSynth and a GM SoundFont).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: bfloat16 weights (half the bytes per step), for many pieces at once on a GPU; on a "
                   "CPU fp32 batches step in numpy about as fast; other samples than fp32 for the same seed.")
@user_errors
def compose_cmd(model_path, count, out, name, primer, primer_bars, primer_seconds, bars, seconds, temperature, top_k,
                top_p, seed, key, pitch_range, max_polyphony, min_note, max_note, tempo, beats_per_bar, time_signature,
                program, follow_spec, velocity_how, png, overwrite, wav, device, precision) -> None:
    """Write new MIDI files with the model: all pieces are generated together as one batch.

    \b
    Examples:
      musicrnn compose -n 8 -o out --seed 1 --png
      musicrnn compose --primer riff.mid --bars 16 --key A:minor --temperature 0.9 -o out
      musicrnn compose --primer song.mid --primer-bars 8 --bars 8 -o out   # continue a song's last 8 bars
    """
    from rich.console import Console
    from rich.table import Table

    from musicrnn.compose import ComposeOptions, compose
    from musicrnn.listening import follow_options
    from musicrnn.metre import Metre, parse_time_signature
    from musicrnn.inference import bf16_is_native
    from musicrnn.checkpoint import default_model_path, load_checkpoint
    from musicrnn.sample import SamplingConfig, parse_key
    from musicrnn.tonality import parse_tonic
    from musicrnn.inference import pick_device

    dev = pick_device(device)
    ckpt = load_checkpoint(model_path or default_model_path(), dev)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                              key=parse_key(key) if key else None,
                              pitch_range=_pitch_range(pitch_range) if pitch_range else None,
                              max_polyphony=max_polyphony)
    metre = Metre(beats_per_bar, parse_time_signature(time_signature) if time_signature else None)
    opts = ComposeOptions(n=count, out=out, name=name or (primer.stem if primer else "musicrnn"), primer=primer,
                          primer_bars=primer_bars, primer_seconds=primer_seconds, bars=bars, seconds=seconds,
                          tempo=tempo, metre=metre, min_note_beats=min_note, max_note_beats=max_note, program=program,
                          seed=seed, png=png, wav=wav, device=str(dev), precision=precision, overwrite=overwrite,
                          sampling=sampling, follow=follow_options(follow_spec, velocity_how),
                          key_tonic=parse_tonic(key.partition(":")[0]) if key else None,
                          home_key_model=bool(ckpt.meta.get("key_normalised")))
    if precision == "bf16" and not bf16_is_native(dev):
        click.echo(f"warning: {dev} has no native bfloat16; --precision bf16 is emulated there (slower than fp32)", err=True)
    pieces = compose(ckpt.model, ckpt.codec, opts, notify=lambda line: click.echo(line, err=True))
    table = Table(title=f"{len(pieces)} pieces in {out}")
    for col in ("file", "seconds", "bars", "notes", "pitch range"):
        table.add_column(col, justify="right" if col != "file" else "left")
    for p in pieces:
        rng = f"{p.pitch_range[0]}-{p.pitch_range[1]}" if p.pitch_range else "-"
        table.add_row(p.path.name, f"{p.seconds:.1f}", f"{p.bars:.1f}", str(p.notes), rng)
    Console().print(table)


MIDI_APIS = ["auto", "alsa", "jack", "coremidi", "windows"]


def _serve_help() -> str:
    """serve's --help text; the CC map comes from the control table (musicrnn/live/control_table.py)."""
    return "\n".join([
        "Jam live: the model listens on a MIDI input (and/or OSC) and answers on a MIDI output",
        "(and/or to OSC subscribers), in time.", "",
        "\b", "Default CC map (channel: any; change with --cc, or --learn):",
        *(f"  {line}" for line in cc_help_lines()),
        "Every note the model starts is ended: on Ctrl-C, SIGTERM, panic, mode switch and errors.", "",
        "\b", "Examples:",
        "  musicrnn serve                                   # virtual ports 'musicrnn in' / 'musicrnn out'",
        '  musicrnn serve --midi-in "Keystation" --midi-out virtual --mode duet',
        "  musicrnn serve --clock midi --midi-api jack --answer-bars 4",
        "  musicrnn serve --midi-in none --midi-out none --osc-port 9000   # OSC only (Pd, Max, SuperCollider)",
        "  musicrnn serve --follow key,register --velocity 100   # follow only your key and register",
    ])


def _live(name: str):
    """The live control ``name`` (musicrnn/live/control_table.py): serve's start-value options take
    their choices, defaults and CC numbers from it."""
    return LIVE_CONTROLS[name]


def _cc_note(name: str) -> str:
    return f"live: CC {_live(name).cc}"


@cli.command("serve", help=_serve_help())
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Checkpoint (.pt or run folder); default: the model bundled with musicrnn.")
@click.option("--midi-in", default="virtual", show_default=True,
              help="Where the player's notes come from: a port name (or a unique part of it), 'virtual' "
                   "(a new port named '<port-name> in' that your DAW or keyboard sends to), or 'none'.")
@click.option("--midi-out", default="virtual", show_default=True,
              help="Where the model plays: a port name, 'virtual' ('<port-name> out'), or 'none' "
                   "(both 'none': OSC only, with --osc-port).")
@click.option("--midi-api", type=click.Choice(MIDI_APIS), default="auto", show_default=True,
              help="MIDI system: auto picks CoreMIDI on macOS, ALSA then JACK on Linux, Windows MIDI on Windows.")
@click.option("--port-name", default="musicrnn", show_default=True, help="Name of the virtual ports.")
@click.option("--mode", type=click.Choice(_live("mode").args[0].choices), default=_live("mode").default,
              show_default=True, help=_live("mode").help)
@click.option("--tempo", type=float, default=_live("tempo").default, show_default=True,
              help="BPM of the internal clock (with --clock midi: the guess until clock arrives).")
@click.option("--clock", "clock_source", type=click.Choice(["internal", "midi"]), default="internal", show_default=True,
              help="internal: --tempo; midi: follow MIDI clock (24 ppqn, start/stop/continue/song position) on the input.")
@click.option("--channel", type=click.IntRange(1, 16), default=1, show_default=True, help="MIDI channel of the model's notes.")
@click.option("--silence-beats", type=float, default=2.0, show_default=True,
              help="call-response: answer after this many beats with no key held.")
@click.option("--answer-bars", type=float, default=_live("answer_bars").default, show_default=True,
              help=f"call-response: answer length in bars ({_cc_note('answer_bars')}).")
@click.option("--beats-per-bar", type=float, default=4.0, show_default=True)
@click.option("--answer-start", type=click.Choice(["next-beat", "now"]), default="next-beat", show_default=True,
              help="call-response: start answering on the next beat, or at once.")
@click.option("--temperature", type=float, default=_live("temperature").default, show_default=True,
              help=f"1.0 = as trained; lower = safer; higher = wilder ({_cc_note('temperature')}).")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample only among the K likeliest tokens (0 = off).")
@click.option("--top-p", type=float, default=_live("top_p").default, show_default=True, help="Nucleus sampling (1 = off).")
@click.option("--key", default=None, help="Keep the model's notes in a key, e.g. C:major, A:minor.")
@click.option("--pitch-range", default=None, help="Keep the model's notes within LO-HI, e.g. 48-84.")
@click.option("--max-polyphony", type=int, default=_live("density").default, show_default=True,
              help=f"Most model notes at once (0 = no limit; {_cc_note('density')}).")
@click.option("--max-note-beats", type=float, default=MAX_NOTE_BEATS, show_default=True,
              help="No model note lasts longer than this (compose's --max-note has the same default).")
@click.option("--follow", "follow_spec", default="all", show_default=True,
              help="What the answers follow of your playing: all, none, or a comma list of key, register, "
                   "velocity, density, motif with optional strengths 0-1, e.g. key,register,velocity=0.5 "
                   "(live: /musicrnn/follow).")
@click.option("--velocity", "velocity_spec", default=None,
              help="Answer velocities: follow (your dynamics), model (the model's own) or a fixed 1-127 "
                   "(default: as --follow says; live: /musicrnn/velocity).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cc", "cc_bindings", multiple=True, metavar="CONTROL=CC",
              help="Move a control to another CC number, e.g. --cc temperature=74 (repeatable).")
@click.option("--learn", type=click.Choice(list(CC_CONTROLS)), default=None,
              help="MIDI learn: the first CC that arrives drives this control.")
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until Ctrl-C).")
@click.option("--osc-port", type=click.IntRange(0, 65535), default=None,
              help="Also take control and notes over OSC (UDP) on this port, and send generated notes to "
                   "subscribers (docs/osc.md). 0 = any free port.")
@click.option("--osc-host", default="127.0.0.1", show_default=True,
              help="Interface OSC listens on; e.g. 0.0.0.0 to accept other machines (then consider --osc-allow).")
@click.option("--osc-allow", multiple=True, metavar="ADDR",
              help="Only these client addresses or networks may send OSC, e.g. 192.168.1.20 or 192.168.1.0/24 "
                   "(repeatable; this machine is always allowed).")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="int8: int8 weights (torch) for big models, e.g. 2x1024 (4x faster steps there); small models such as the default run faster on the float32 numpy fast path (none). See `musicrnn eval --quantize`.")
@user_errors
def serve_cmd(model_path, midi_in, midi_out, midi_api, port_name, mode, tempo, clock_source, channel, silence_beats,
              answer_bars, beats_per_bar, answer_start, temperature, top_k, top_p, key, pitch_range, max_polyphony,
              max_note_beats, follow_spec, velocity_spec, seed, cc_bindings, learn, seconds, osc_port, osc_host, osc_allow,
              quantize) -> None:
    """Jam live (the help text is _serve_help's)."""
    from musicrnn.listening import follow_options
    from musicrnn.live.controls import parse_bindings
    from musicrnn.live.server import ServeOptions
    from musicrnn.live.terminal import serve
    from musicrnn.checkpoint import default_model_path, load_checkpoint
    from musicrnn.sample import SamplingConfig, parse_key

    if osc_port is None and (osc_allow or osc_host != "127.0.0.1"):
        raise MusicRNNError("--osc-host and --osc-allow set up OSC; give --osc-port too")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, key=parse_key(key) if key else None,
                              pitch_range=_pitch_range(pitch_range) if pitch_range else None, max_polyphony=max_polyphony)
    options = ServeOptions(midi_in=midi_in, midi_out=midi_out, midi_api=midi_api, port_name=port_name, mode=mode,
                           tempo=tempo, clock=clock_source, channel=channel, silence_beats=silence_beats,
                           answer_bars=answer_bars, beats_per_bar=beats_per_bar, answer_start=answer_start,
                           max_note_beats=max_note_beats, seed=seed, sampling=sampling, cc=parse_bindings(cc_bindings),
                           learn=learn, osc_port=osc_port, osc_host=osc_host, osc_allow=tuple(osc_allow),
                           quantize=quantize, follow=follow_options(follow_spec, velocity_spec))
    options.validate()
    options.check_reachable()
    ckpt = load_checkpoint(model_path or default_model_path())
    serve(ckpt, options, seconds=seconds, echo=click.echo)
    _FAST_EXIT["after_live_session"] = True


@cli.command("ports")
@click.option("--midi-api", type=click.Choice(MIDI_APIS), default="auto", show_default=True,
              help="Which MIDI system to list (auto: every one worth trying here).")
@user_errors
def ports_cmd(midi_api) -> None:
    """List the MIDI input and output ports, per MIDI system, as --midi-in/--midi-out take them."""
    from musicrnn.live.midi_ports import API_LABELS, list_ports, readable_ports

    for entry in list_ports(midi_api):
        label = API_LABELS[entry.api]
        if entry.problem:
            click.echo(f"{label} ({entry.api}): not usable: {entry.problem}")
            continue
        click.echo(f"{label} ({entry.api}):")
        for direction, flag, names in (("input", "--midi-in", entry.inputs), ("output", "--midi-out", entry.outputs)):
            ports = readable_ports(names, entry.api, direction)
            click.echo(f"  {direction}s ({flag}):" + ("" if ports else " none"))
            for port in ports:
                notes = [f"client {port.client}"] if port.client else []
                if port.ours:
                    notes.append("musicrnn serve's own virtual port")
                click.echo(f"    {port.short!r}" + (f"  ({'; '.join(notes)})" if notes else ""))


# Set once `serve` has closed every port and sent every note-off: the process then exits without
# interpreter teardown, during which the MIDI system's threads could still call into Python
# (seen as a rare SIGSEGV at exit under JACK).
_FAST_EXIT = {"after_live_session": False}


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SystemExit as exc:
        if _FAST_EXIT["after_live_session"]:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
