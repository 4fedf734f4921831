"""`musicrnn compose`: MIDI files from the model, optionally continuing a primer."""

from __future__ import annotations

from pathlib import Path

import click

from musicrnn.cli.common import parse_pitch_range_option, user_errors
from musicrnn.config import DEVICES, INFERENCE_PRECISIONS
from musicrnn.limits import MAX_NOTE_BEATS, PROGRAM, TEMPO, VELOCITY


@click.command("compose")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Checkpoint (.pt or run folder); default: the model bundled with musicrnn.")
@click.option("-n", "count", type=int, default=4, show_default=True, help="How many pieces to write.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out"), show_default=True,
              help="Output folder.")
@click.option("--name", default=None, help="File name stem (default: the primer's name or 'musicrnn').")
@click.option("--accompany", "accompany_inputs", type=click.Path(path_type=Path), multiple=True, metavar="MELODY.mid",
              help="Play an accompaniment under this MIDI file's melody (repeatable: all in one batch), with a model "
                   "of the accompany codec; writes OUT/<its name>.mid: the melody tracks unchanged (the model's "
                   "melody track names, else every pitched track), a 'musicrnn' track with the accompaniment. "
                   "--temperature, --top-k/-p, --seed, --key, --pitch-range, --max-polyphony, --max-note and --program "
                   "apply to the accompaniment; --key also names the melodies' key for a key-normalised model.")
@click.option("--follow-chords/--no-follow-chords", default=True, show_default=True,
              help="--accompany: lean the accompaniment towards the chord of the key that the melody implies on "
                   "each beat (estimated from the whole melody), or leave its harmony to the model.")
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
              help=f"Tempo of the new music in BPM, {TEMPO.text('-')} (default: the primer's where it ends, else 120).")
@click.option("--beats-per-bar", type=float, default=None,
              help="Beats (quarter notes) per bar, for --bars and --primer-bars (default: the primer's time "
                   "signature, a declared 1/4 read as 4/4; else 4).")
@click.option("--time-signature", default=None, metavar="N/D",
              help="Time signature of the new music, e.g. 3/4 or 6/8 (instead of --beats-per-bar; also written "
                   "to the MIDI file).")
@click.option("--program", type=click.IntRange(int(PROGRAM.lo), int(PROGRAM.hi)), default=0, show_default=True, help="General MIDI program for new notes.")
@click.option("--follow", "follow_spec", default="all", show_default=True, metavar="SPEC",
              help="What a continuation follows of its primer: all, none, or some of key,register,velocity,grid "
                   "(e.g. key,register or velocity=0.5; grid: its straight, swung or triplet feel). --key is always kept.")
@click.option("--velocity", "velocity_how", default=None, metavar="follow|model|N",
              help=f"Velocities of the new notes: the primer's dynamics, the model's own, or N ({VELOCITY.text('-')}) for all "
                   "(default: as --follow says).")
@click.option("--png", is_flag=True, help="Also draw a piano-roll PNG per piece.")
@click.option("--overwrite", is_flag=True,
              help="Replace the files of an earlier run with the same --name in the output folder (and remove "
                   "those this run does not rewrite); without it such files are an error.")
@click.option("--wav", is_flag=True, help="Also render a WAV per piece (needs FluidSynth and a GM SoundFont).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(INFERENCE_PRECISIONS), default="fp32", show_default=True,
              help="bf16: bfloat16 weights (half the bytes per step), for many pieces at once on a GPU; on a "
                   "CPU fp32 batches step in numpy about as fast; other samples than fp32 for the same seed.")
@user_errors
def compose_cmd(model_path, count, out, name, accompany_inputs, follow_chords, primer, primer_bars, primer_seconds, bars, seconds, temperature, top_k,
                top_p, seed, key, pitch_range, max_polyphony, min_note, max_note, tempo, beats_per_bar, time_signature,
                program, follow_spec, velocity_how, png, overwrite, wav, device, precision) -> None:
    """Write new MIDI files with the model: all pieces are generated together as one batch.

    \b
    Examples:
      musicrnn compose -n 8 -o out --seed 1 --png
      musicrnn compose --primer riff.mid --bars 16 --key A:minor --temperature 0.9 -o out
      musicrnn compose --primer song.mid --primer-bars 8 --bars 8 -o out   # continue a song's last 8 bars
      musicrnn compose --accompany tune.mid -o out --model accompany  # an accompaniment under a melody
    """
    from rich.console import Console
    from rich.table import Table

    from musicrnn.checkpoint import default_model_path, load_checkpoint
    from musicrnn.compose import ComposeOptions, compose
    from musicrnn.inference import bf16_is_native, pick_device
    from musicrnn.listening import follow_options
    from musicrnn.metre import Metre, parse_time_signature
    from musicrnn.sample import SamplingConfig, parse_key
    from musicrnn.tonality import parse_tonic

    dev = pick_device(device)
    ckpt = load_checkpoint(model_path or default_model_path(), dev)
    if accompany_inputs:
        _accompany(ckpt, model_path, list(accompany_inputs), out, temperature, top_k, top_p, seed, key, pitch_range,
                   max_polyphony, max_note, program, png, overwrite, str(dev), precision, follow_chords)
        return
    if click.get_current_context().get_parameter_source("follow_chords") != click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--follow-chords/--no-follow-chords apply to --accompany only; leave them out or give "
                               "--accompany MELODY.mid")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                              key=parse_key(key) if key else None,
                              pitch_range=parse_pitch_range_option(pitch_range) if pitch_range else None,
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
    for col in ("file", "seconds", "bars", "notes", "pitch range", "key"):
        table.add_column(col, justify="right" if col not in ("file", "key") else "left")
    for p in pieces:
        rng = f"{p.pitch_range[0]}-{p.pitch_range[1]}" if p.pitch_range else "-"
        table.add_row(p.path.name, f"{p.seconds:.1f}", f"{p.bars:.1f}", str(p.notes), rng, p.key)
    Console().print(table)


# compose's options that --accompany has no use for (the melody files set length, tempo and metre)
NOT_FOR_ACCOMPANY = {"count": "-n", "name": "--name", "primer": "--primer", "primer_bars": "--primer-bars",
                     "primer_seconds": "--primer-seconds", "bars": "--bars", "seconds": "--seconds", "tempo": "--tempo",
                     "beats_per_bar": "--beats-per-bar", "time_signature": "--time-signature",
                     "follow_spec": "--follow", "velocity_how": "--velocity", "min_note": "--min-note", "wav": "--wav"}


def _accompany(ckpt, model_path, inputs, out, temperature, top_k, top_p, seed, key, pitch_range, max_polyphony,
               max_note, program, png, overwrite, device, precision, follow_chords) -> None:
    """`compose --accompany`: the accompanied files and their summary (musicrnn.accompaniment)."""
    from musicrnn.accompaniment import MELODY_ROLE, AccompanyOptions, accompany, check_roles
    from musicrnn.sample import SamplingConfig, parse_key
    from musicrnn.tonality import parse_tonic

    ctx = click.get_current_context()
    for param, flag in NOT_FOR_ACCOMPANY.items():
        if ctx.get_parameter_source(param) not in (None, click.core.ParameterSource.DEFAULT):
            raise click.UsageError(f"{flag} does not apply to --accompany (the melody files set what is played "
                                   f"and how long); leave {flag} out", ctx)
    check_roles(ckpt.codec, str(model_path or "default"))
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, key=parse_key(key) if key else None,
                              pitch_range=parse_pitch_range_option(pitch_range) if pitch_range else None,
                              max_polyphony=max_polyphony)
    opts = AccompanyOptions(inputs, out, melody_tracks=(ckpt.meta.get("roles") or {}).get(MELODY_ROLE),
                            sampling=sampling, max_note_beats=max_note, seed=seed, png=png, program=program,
                            key_tonic=parse_tonic(key.partition(":")[0]) if key else None,
                            home_key_model=bool(ckpt.meta.get("key_normalised")), device=device, precision=precision,
                            overwrite=overwrite, follow_chords=1.0 if follow_chords else 0.0)
    pieces = accompany(ckpt.model, ckpt.codec, opts)
    for p in pieces:
        click.echo(f"{p.path}: melody = {p.melody} ({p.melody_notes} notes); accompaniment {p.notes} notes on track "
                   f"'musicrnn'; {p.seconds:.1f} s, {p.bars:.1f} bars" + (f"; {p.png}" if p.png else ""))
    if opts.home_key_model:
        click.echo("key-normalised model: each melody was moved into C by its key "
                   f"({'--key' if key else 'estimated'}), its accompaniment back: "
                   + ", ".join(f"{p.path.name} {p.shift:+d}" for p in pieces))
