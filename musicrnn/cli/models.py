"""`musicrnn train|eval|export`: a model's life after its data: training, scoring, sharing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from musicrnn.cli.common import user_errors
from musicrnn.config import ARCHS, DEVICES, INFERENCE_PRECISIONS, OPTIMIZERS, QUANTIZATIONS, SCHEDULES, TRAIN_PRECISIONS
from musicrnn.config import TRAIN_DEFAULTS as D
from musicrnn.limits import NGRAM_ORDER


@click.command("train")
@click.argument("data_folder", type=click.Path(path_type=Path))
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: best.pt, last.pt and metrics.jsonl go here.")
@click.option("--arch", type=click.Choice(ARCHS), default=D.model.arch, show_default=True,
              help="Recurrent cell; rnn is the plain tanh RNN baseline.")
@click.option("--layers", type=int, default=D.model.layers, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=int, default=D.model.hidden, show_default=True, help="Units per layer (the main size knob).")
@click.option("--embedding", type=int, default=D.model.embedding, show_default=True, help="Token embedding width.")
@click.option("--dropout", type=float, default=D.model.dropout, show_default=True, help="Dropout; raise to fight overfitting on small corpora.")
@click.option("--tie-weights/--no-tie-weights", default=D.model.tie_weights, show_default=True, help="Share input embedding and output layer.")
@click.option("--attention", type=int, default=D.model.attention, show_default=True, help="Attend over the last K outputs (0 = off).")
@click.option("--batch-size", type=int, default=D.batch_size, show_default=True, help="Pieces played in parallel per step.")
@click.option("--seq-len", type=int, default=D.seq_len, show_default=True, help="Tokens per row per step (truncated BPTT).")
@click.option("--epochs", type=float, default=None, help="Passes over the training pieces.")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (stops at whichever of --epochs/--max-steps comes first).")
@click.option("--time-limit", type=float, default=None, metavar="MINUTES",
              help="Stop after this many minutes (the cosine schedule then decays by time; not bit-reproducible).")
@click.option("--init-from", type=click.Path(path_type=str), default=None, metavar="CKPT",
              help="Fine-tune: start from this checkpoint's weights and architecture (same codec as DATA_FOLDER): "
                   "a .pt file, a run folder, or a bundled model name such as 'default'.")
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=D.optimizer, show_default=True)
@click.option("--clip", type=float, default=D.clip, show_default=True, help="Gradient-norm clip (0 = off).")
@click.option("--weight-decay", type=float, default=D.weight_decay, show_default=True)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=D.schedule, show_default=True,
              help="cosine: warm up then decay to 5%; plateau: halve on each evaluation without improvement.")
@click.option("--warmup-steps", type=int, default=D.warmup_steps, show_default=True)
@click.option("--patience", type=int, default=D.patience, show_default=True, help="Stop after N evaluations without valid improvement (0 = off).")
@click.option("--eval-every", type=int, default=D.eval_every, show_default=True, help="Steps between valid evaluations (0 = once per epoch).")
@click.option("--augment-transpose", type=int, default=D.augment_transpose, show_default=True, help="Randomly transpose each piece within +-N semitones.")
@click.option("--augment-stretch", type=float, default=D.augment_stretch, show_default=True, help="performance codec: random time stretch within +-F.")
@click.option("--device", type=click.Choice(DEVICES), default=D.device, show_default=True)
@click.option("--precision", type=click.Choice(TRAIN_PRECISIONS), default=D.precision, show_default=True,
              help="Autocast precision (bf16 recommended on recent GPUs).")
@click.option("--seed", type=int, default=D.seed, show_default=True)
@click.option("--threads", type=int, default=D.threads, help="CPU threads for torch (default: torch's choice).")
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


EVAL_HELP = f"""Score CHECKPOINT on a split of DATA_FOLDER: NLL per token, bits per token, perplexity,
and for grid-codec data NLL per frame (nats) as in the published piano-roll tables.

CHECKPOINT is a .pt file, a run folder (its best.pt) or a bundled model name such as
`default`; or `ngram:ORDER` ({NGRAM_ORDER.text('-')}) to score a Kneser-Ney n-gram baseline fitted on the
train split of DATA_FOLDER."""


@click.command("eval", help=EVAL_HELP)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("data_folder", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--music-stats", is_flag=True,
              help="Also compare MusPy music statistics of real excerpts, our samples and n-gram samples.")
@click.option("--samples", type=int, default=64, show_default=True, help="--music-stats: pieces to generate.")
@click.option("--bars", type=float, default=8, show_default=True, help="--music-stats: bars per generated piece.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
              help="Score the int8 fast path that `musicrnn serve --quantize int8` plays with (CPU).")
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="fp32", show_default=True,
              help="Score with bfloat16 weights, as `musicrnn compose --precision bf16` generates.")
@user_errors
def eval_cmd(checkpoint, data_folder, split, device, batch_size, as_json, music_stats, samples, bars, quantize,
             precision) -> None:
    """Score a model (the help text is EVAL_HELP)."""
    import json as jsonlib

    from musicrnn.inference import pick_device

    dev = pick_device(device)
    if str(checkpoint).startswith("ngram:"):
        from musicrnn.evaluate import evaluate_ngram
        from musicrnn.ngram import parse_ngram_spec

        result = evaluate_ngram(data_folder, parse_ngram_spec(str(checkpoint)), split)
    else:
        from musicrnn.checkpoint import load_checkpoint
        from musicrnn.evaluate import evaluate_checkpoint

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



@click.command("models")
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@user_errors
def models_cmd(folders) -> None:
    """List the bundled models (use them by name: --model NAME, --init-from NAME) and the trained
    runs in FOLDERS (default: ./runs), each with its card's one-line summary or its best score."""
    from musicrnn.model_list import bundled_models, run_models

    for m in bundled_models():
        click.echo(f"{m.name:<12} {m.summary}")
    runs = run_models(list(folders) or [Path("runs")])
    if runs:
        click.echo("")
        for m in runs:
            click.echo(f"{m.name:<12} {m.summary}")


@click.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp16/--fp32", default=True, show_default=True, help="Store weights in float16 (half the size).")
@user_errors
def export_cmd(checkpoint, out, fp16) -> None:
    """Write a slim, shareable copy of CHECKPOINT (no optimizer/training state) to OUT."""
    from musicrnn.checkpoint import export_checkpoint

    path = export_checkpoint(checkpoint, out, half=fp16)
    click.echo(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
