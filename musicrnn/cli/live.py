"""`musicrnn serve|ports`: live play over MIDI and OSC."""

from __future__ import annotations

from pathlib import Path

import click

from musicrnn.cli.common import FAST_EXIT, parse_pitch_range_option, user_errors
from musicrnn.config import QUANTIZATIONS
from musicrnn.errors import MusicRNNError
from musicrnn.limits import MAX_NOTE_BEATS, VELOCITY
from musicrnn.live.control_table import CONTROLS as LIVE_CONTROLS
from musicrnn.live.controls import CONTROLS as CC_CONTROLS
from musicrnn.live.controls import cc_help_lines

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
        "  musicrnn serve --model accompany --clock midi    # accompany the melody you play, in the DAW's time",
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


@click.command("serve", help=_serve_help())
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
              show_default=True, help=_live("mode").help + " A model with roles (e.g. --model accompany) plays "
              "accompany only, and starts in it when --mode is not given.")
@click.option("--tempo", type=float, default=_live("tempo").default, show_default=True,
              help="BPM of the internal clock (with --clock midi: the guess until clock arrives).")
@click.option("--clock", "clock_source", type=click.Choice(["internal", "midi"]), default="internal", show_default=True,
              help="internal: --tempo; midi: follow MIDI clock (24 ppqn, start/stop/continue/song position) on the input.")
@click.option("--channel", type=click.IntRange(1, 16), default=1, show_default=True, help="MIDI channel of the model's notes.")
@click.option("--silence-beats", type=float, default=2.0, show_default=True,
              help="call-response: answer after this many beats with no key held.")
@click.option("--answer-bars", type=float, default=_live("answer_bars").default, show_default=True,
              help=f"call-response: answer length in bars; accompany: bars the accompaniment plays on after the "
                   f"melody stops ({_cc_note('answer_bars')}).")
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
                   "velocity, density, motif, grid, chords (accompany: the chord your melody implies) with optional "
                   "strengths 0-1, e.g. key,register,velocity=0.5 (live: /musicrnn/follow).")
@click.option("--velocity", "velocity_spec", default=None,
              help=f"Answer velocities: follow (your dynamics), model (the model's own) or a fixed {VELOCITY.text('-')} "
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
@click.option("--quantize", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
              help="int8: int8 weights (torch) for big models, e.g. 2x1024 (4x faster steps there); small models such as the default run faster on the float32 numpy fast path (none). See `musicrnn eval --quantize`.")
@user_errors
def serve_cmd(model_path, midi_in, midi_out, midi_api, port_name, mode, tempo, clock_source, channel, silence_beats,
              answer_bars, beats_per_bar, answer_start, temperature, top_k, top_p, key, pitch_range, max_polyphony,
              max_note_beats, follow_spec, velocity_spec, seed, cc_bindings, learn, seconds, osc_port, osc_host, osc_allow,
              quantize) -> None:
    """Jam live (the help text is _serve_help's)."""
    from musicrnn.checkpoint import default_model_path, load_checkpoint
    from musicrnn.listening import follow_options
    from musicrnn.live.controls import parse_bindings
    from musicrnn.live.server import ServeOptions
    from musicrnn.live.terminal import serve
    from musicrnn.sample import SamplingConfig, parse_key

    if osc_port is None and (osc_allow or osc_host != "127.0.0.1"):
        raise MusicRNNError("--osc-host and --osc-allow set up OSC; give --osc-port too")
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, key=parse_key(key) if key else None,
                              pitch_range=parse_pitch_range_option(pitch_range) if pitch_range else None, max_polyphony=max_polyphony)
    options = ServeOptions(midi_in=midi_in, midi_out=midi_out, midi_api=midi_api, port_name=port_name, mode=mode,
                           tempo=tempo, clock=clock_source, channel=channel, silence_beats=silence_beats,
                           answer_bars=answer_bars, beats_per_bar=beats_per_bar, answer_start=answer_start,
                           max_note_beats=max_note_beats, seed=seed, sampling=sampling, cc=parse_bindings(cc_bindings),
                           learn=learn, osc_port=osc_port, osc_host=osc_host, osc_allow=tuple(osc_allow),
                           quantize=quantize, follow=follow_options(follow_spec, velocity_spec))
    options.validate()
    options.check_reachable()
    ckpt = load_checkpoint(model_path or default_model_path())
    if click.get_current_context().get_parameter_source("mode") == click.core.ParameterSource.DEFAULT:
        from musicrnn.live.play_modes import default_mode

        options.mode = default_mode(ckpt.codec)  # a model with roles plays accompany only
    serve(ckpt, options, seconds=seconds, echo=click.echo)
    FAST_EXIT["after_live_session"] = True


@click.command("ports")
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
