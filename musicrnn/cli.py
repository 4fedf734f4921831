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
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="CKPT",
              help="Fine-tune: start from this checkpoint's weights and architecture (same codec as DATA_FOLDER).")
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
@user_errors
def train_cmd(data_folder, run_dir, resume, **options) -> None:
    """Train a model on DATA_FOLDER (made by `musicrnn data prepare`).

    \b
    Ctrl-C saves RUN/last.pt and exits; `--resume` continues from it exactly.
    Several GPUs or nodes: run the same command under torchrun, e.g.
      torchrun --nproc-per-node 4 -m musicrnn train data/jsb -o runs/jsb --epochs 100
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from musicrnn.train import TrainConfig, train

    cfg = TrainConfig(**options)
    console = Console(stderr=True)
    rank0 = os.environ.get("RANK", "0") == "0"
    with Progress(TextColumn("step"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=console, disable=not rank0) as bar:
        task = bar.add_task("train", total=None, info="")
        last: dict = {}

        def on_progress(row: dict) -> None:
            last.update(row)
            def shown(key: str, fmt: str) -> str:  # "-" until the first logging window has it
                return format(last[key], fmt) if key in last else "-"

            info = f"loss {shown('train_loss', '.3f')} valid {shown('best_valid_nll', '.4f')} {shown('tokens_per_s', ',.0f')} tok/s"
            bar.update(task, completed=row["step"], total=row.get("total_steps", bar.tasks[0].total), info=info)

        result = train(data_folder, run_dir, cfg, resume=resume, on_progress=on_progress)
    if rank0:
        click.echo(f"{result.stopped} after {result.steps} steps; best valid NLL/token {result.best_valid_nll:.4f}; "
                   f"saved {run_dir / 'best.pt'} and {run_dir / 'last.pt'}")


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

    CHECKPOINT may also be `ngram:ORDER` to score a Kneser-Ney n-gram baseline fitted on the
    train split of DATA_FOLDER.
    """
    import json as jsonlib

    from musicrnn.train import pick_device

    from torch import device as torch_device

    dev = pick_device(device)
    if str(checkpoint).startswith("ngram:"):
        from musicrnn.ngram import evaluate_ngram

        result = evaluate_ngram(data_folder, int(str(checkpoint).split(":", 1)[1]), split)
    else:
        from musicrnn.evaluate import evaluate_checkpoint
        from musicrnn.model import load_checkpoint

        ckpt = load_checkpoint(checkpoint, dev)
        if quantize != "none":
            from musicrnn.model import quantized

            dev = torch_device("cpu")
            ckpt.model = quantized(ckpt.model, quantize)
        if precision != "fp32":
            from musicrnn.model import at_precision

            ckpt.model = at_precision(ckpt.model, precision)
        result = evaluate_checkpoint(ckpt, data_folder, split, str(dev), batch_size)
        if music_stats:
            from musicrnn.evaluate import music_stats_comparison

            result["music_stats"] = music_stats_comparison(ckpt, data_folder, split, samples, bars)
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
    from musicrnn.model import export_checkpoint

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
              help="MIDI file to continue: each output starts with it, then the model's continuation.")
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
@click.option("--max-note", type=float, default=0, show_default=True, help="Longest new note in beats (0 = no limit).")
@click.option("--tempo", type=float, default=None, help="Tempo in BPM (default: the primer's, else 120).")
@click.option("--program", type=click.IntRange(0, 127), default=0, show_default=True, help="General MIDI program for new notes.")
@click.option("--png", is_flag=True, help="Also draw a piano-roll PNG per piece.")
@click.option("--wav", is_flag=True, help="Also render a WAV per piece (needs FluidSynth and a GM SoundFont).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: bfloat16 weights (half the bytes per step), for many pieces at once on a GPU; on a "
                   "CPU fp32 batches step in numpy about as fast; other samples than fp32 for the same seed.")
@user_errors
def compose_cmd(model_path, count, out, name, primer, bars, seconds, temperature, top_k, top_p, seed, key, pitch_range,
                max_polyphony, min_note, max_note, tempo, program, png, wav, device, precision) -> None:
    """Write new MIDI files with the model: all pieces are generated together as one batch.

    \b
    Examples:
      musicrnn compose -n 8 -o out --seed 1 --png
      musicrnn compose --primer riff.mid --bars 16 --key A:minor --temperature 0.9 -o out
    """
    from rich.console import Console
    from rich.table import Table

    from musicrnn.compose import ComposeOptions, compose
    from musicrnn.model import bf16_is_native, default_model_path, load_checkpoint
    from musicrnn.sample import SamplingConfig, parse_key
    from musicrnn.train import pick_device

    dev = pick_device(device)
    ckpt = load_checkpoint(model_path or default_model_path(), dev)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                              key=parse_key(key) if key else None,
                              pitch_range=_pitch_range(pitch_range) if pitch_range else None,
                              max_polyphony=max_polyphony)
    # note lengths are asked in beats; the codec counts steps (per beat, or per second at the tempo)
    steps_per_beat = ckpt.codec.steps_per_unit * (60.0 / (tempo or 120.0) if ckpt.codec.time_unit == "seconds" else 1.0)
    sampling.min_note_steps = int(round(min_note * steps_per_beat))
    sampling.max_note_steps = int(round(max_note * steps_per_beat))
    if max_note and sampling.max_note_steps < 1:
        raise MusicRNNError(f"--max-note {max_note} is shorter than one step of this model's grid")
    opts = ComposeOptions(n=count, out=out, name=name or (primer.stem if primer else "musicrnn"), primer=primer,
                          bars=bars, seconds=seconds, tempo=tempo, program=program, seed=seed, png=png, wav=wav,
                          device=str(dev), precision=precision, sampling=sampling)
    if precision == "bf16" and not bf16_is_native(dev):
        click.echo(f"warning: {dev} has no native bfloat16; --precision bf16 is emulated there (slower than fp32)", err=True)
    pieces = compose(ckpt.model, ckpt.codec, opts)
    table = Table(title=f"{len(pieces)} pieces in {out}")
    for col in ("file", "seconds", "bars", "notes", "pitch range"):
        table.add_column(col, justify="right" if col != "file" else "left")
    for p in pieces:
        rng = f"{p.pitch_range[0]}-{p.pitch_range[1]}" if p.pitch_range else "-"
        table.add_row(p.path.name, f"{p.seconds:.1f}", f"{p.bars:.1f}", str(p.notes), rng)
    Console().print(table)


def _follow(spec: str, velocity: str | None):
    """--follow and --velocity as one Follow (--velocity, when given, overrides --follow's velocity)."""
    from musicrnn.listening import Follow, parse_velocity

    follow = Follow.parse(spec)
    if velocity is not None:
        strength, fixed = parse_velocity(velocity)
        if strength is not None:
            follow.velocity = strength
        follow.fixed_velocity = fixed
    return follow


MIDI_APIS = ["auto", "alsa", "jack", "coremidi", "windows"]


@cli.command("serve")
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
@click.option("--mode", type=click.Choice(["call-response", "duet", "autoplay"]), default="call-response",
              show_default=True, help="call-response: answer after you stop; duet: play along; autoplay: play alone.")
@click.option("--tempo", type=float, default=120.0, show_default=True,
              help="BPM of the internal clock (with --clock midi: the guess until clock arrives).")
@click.option("--clock", "clock_source", type=click.Choice(["internal", "midi"]), default="internal", show_default=True,
              help="internal: --tempo; midi: follow MIDI clock (24 ppqn, start/stop/continue/song position) on the input.")
@click.option("--channel", type=click.IntRange(1, 16), default=1, show_default=True, help="MIDI channel of the model's notes.")
@click.option("--silence-beats", type=float, default=2.0, show_default=True,
              help="call-response: answer after this many beats with no key held.")
@click.option("--answer-bars", type=float, default=2.0, show_default=True, help="call-response: answer length in bars.")
@click.option("--beats-per-bar", type=float, default=4.0, show_default=True)
@click.option("--answer-start", type=click.Choice(["next-beat", "now"]), default="next-beat", show_default=True,
              help="call-response: start answering on the next beat, or at once.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="1.0 = as trained; lower = safer; higher = wilder (live: CC 20).")
@click.option("--top-k", type=int, default=0, show_default=True, help="Sample only among the K likeliest tokens (0 = off).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling (1 = off).")
@click.option("--key", default=None, help="Keep the model's notes in a key, e.g. C:major, A:minor.")
@click.option("--pitch-range", default=None, help="Keep the model's notes within LO-HI, e.g. 48-84.")
@click.option("--max-polyphony", type=int, default=0, show_default=True, help="Most model notes at once (0 = no limit; live: CC 22).")
@click.option("--max-note-beats", type=float, default=8.0, show_default=True, help="No model note lasts longer than this.")
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
@click.option("--learn", type=click.Choice(["temperature", "answer_bars", "density", "mode", "end_call", "panic", "reset"]),
              default=None, help="MIDI learn: the first CC that arrives drives this control.")
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
    """Jam live: the model listens on a MIDI input (and/or OSC) and answers on a MIDI output
    (and/or to OSC subscribers), in time.

    \b
    Default CC map (channel: any; change with --cc, or --learn):
      20 temperature   21 answer length   22 density (most notes at once)
      23 mode (low: call-response, mid: duet, high: autoplay)
      24 end of call (answer now)   25 panic   26 reset
    Every note the model starts is ended: on Ctrl-C, SIGTERM, panic, mode switch and errors.

    \b
    Examples:
      musicrnn serve                                   # virtual ports 'musicrnn in' / 'musicrnn out'
      musicrnn serve --midi-in "Keystation" --midi-out virtual --mode duet
      musicrnn serve --clock midi --midi-api jack --answer-bars 4
      musicrnn serve --midi-in none --midi-out none --osc-port 9000   # OSC only (Pd, Max, SuperCollider)
      musicrnn serve --follow key,register --velocity 100   # follow only your key and register
    """
    from musicrnn.live.controls import parse_bindings
    from musicrnn.live.server import ServeOptions, serve
    from musicrnn.model import default_model_path, load_checkpoint
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
                           quantize=quantize, follow=_follow(follow_spec, velocity_spec))
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
