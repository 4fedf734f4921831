"""One control table (musicrnn/live/control_table.py) makes the MIDI CC map, the OSC routes,
serve's CLI choices and the status; each limit is checked by one definition wherever a value
comes in; one class per live mode; one LATE_S; server.py split by job."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import click
import mido
import pytest
from click.testing import CliRunner
from test_live_modes import BEAT, FakeScheduler, S, play_phrase, run
from test_live_osc import FakeContext, FakeServer
from test_live_scheduler import MS, RecordingOutput, hanging_notes, wait_until

from musicrnn import limits
from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.errors import MusicRNNError
from musicrnn.listening import FOLLOWERS, Follow, Listener
from musicrnn.live import controls, osc
from musicrnn.live.clock import InternalClock, now_ns
from musicrnn.live.control_table import CONTROLS, STATUS_ARGS
from musicrnn.live.engine import Engine
from musicrnn.live.modes import Conductor, Settings
from musicrnn.live.play_modes import MODE_CLASSES, MODES, LiveMode
from musicrnn.live.scheduler import Scheduler
from musicrnn.live.server import ServeOptions, Server
from musicrnn.sample import SamplingConfig

LIVE = Path(__file__).resolve().parents[1] / "musicrnn" / "live"
EXAMPLE = {"key": ["A:minor"], "velocity": ["model"], "follow": ["register", 0.5], "range": [48, 84]}


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


def _example(c) -> list:
    """Values a control takes: the middle of each range, the first choice."""
    if c.name in EXAMPLE:
        return EXAMPLE[c.name]
    out = []
    for a in c.args:
        if a.choices:
            out.append(a.choices[-1])
        elif a.range is not None:
            mid = (a.range.lo + a.range.hi) / 2
            out.append(int(mid) if a.kind == "int" else mid)
    return out


def test_every_control_route_is_made_from_its_row_and_reaches_its_server_method() -> None:
    srv, ctx = FakeServer(), FakeContext()
    routed = [c for c in CONTROLS.values() if c.osc]
    assert {"follow", "velocity", "mode", "temperature", "key", "range", "answer_bars"} <= {c.name for c in routed}
    for c in routed:
        route = osc.route_for(f"/musicrnn/{c.osc}")
        assert route is not None and route.args == c.args and route.help == c.help, c.name
        assert callable(getattr(Server, c.method)), c.method  # the Python API has the method OSC calls
        values = _example(c)
        osc.handle(route, srv, ctx, route.address, values)
        assert not ctx.replies, ctx.replies
        assert srv.calls[-1] == (c.method, *osc.check_args(route, values), *[None] * (len(c.args) - len(values)))
    assert [a.arg.name for a in STATUS_ARGS] == [a.name for a in osc.REPLIES[2].args]


def test_follow_and_velocity_are_controls_over_osc_and_the_api(tiny_grid_model) -> None:
    srv, ctx = FakeServer(), FakeContext()
    for address, args in (("follow", ["pitch", 1]), ("follow", ["key", 2]), ("velocity", ["loud"])):
        osc.handle(osc.route_for(f"/musicrnn/{address}"), srv, ctx, f"/musicrnn/{address}", args)
    assert not srv.calls and [r[0] for r in ctx.replies] == [osc.ERROR] * 3
    assert "key, register" in ctx.replies[0][1] and "0-1" in ctx.replies[1][1] and "1-127" in ctx.replies[2][1]
    live = Server(load_checkpoint(tiny_grid_model), ServeOptions(midi_in="none", midi_out="none"), output=RecordingOutput())
    with live:
        live.set_follow("register", 0.25)
        live.set_velocity("64")
        assert wait_until(lambda: live.status()["follow"]["fixed_velocity"] == 64)
        assert live.status()["follow"]["register"] == 0.25
        with pytest.raises(MusicRNNError, match="0-1"):
            live.set_follow("key", 1.5)


@pytest.mark.parametrize("value", [7.0, -0.5, float("nan")])
def test_temperature_is_checked_by_one_limit_wherever_it_comes_in(tiny_grid_model, tmp_path, value) -> None:
    """It used to be checked three ways: OSC 0-5, the server and engine >= 0 (7 passed both)."""
    ckpt = load_checkpoint(tiny_grid_model)
    with pytest.raises(osc.OscArgError, match="0-5|finite"):
        osc.check_args(osc.route_for("/musicrnn/temperature"), [value])
    srv = Server(ckpt, ServeOptions(midi_in="none", midi_out="none"), output=RecordingOutput())
    with srv:
        with pytest.raises(MusicRNNError, match="temperature must be (0-5|a finite number)"):
            srv.set_temperature(value)
    with pytest.raises(MusicRNNError, match="temperature must be (0-5|a finite number)"):
        Engine(ckpt.model, ckpt.codec, SamplingConfig(), seed=0).set_temperature(value)
    with pytest.raises(MusicRNNError, match="temperature must be (0-5|a finite number)"):
        ServeOptions(midi_in="none", midi_out="none", sampling=SamplingConfig(temperature=value)).validate()
    for command in (["serve", "--midi-in", "none", "--midi-out", "none", "--osc-port", "0", "--seconds", "0.1"],
                    ["compose", "-n", "1", "--bars", "1", "-o", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, [*command, "--model", str(tiny_grid_model), "--temperature", str(value)])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: temperature must be"), result.output


def test_serve_cli_choices_defaults_and_cc_help_come_from_the_table() -> None:
    serve = cli.commands["serve"]
    params = {p.opts[0]: p for p in serve.params}
    assert list(params["--learn"].type.choices) == list(controls.CONTROLS)
    assert list(params["--mode"].type.choices) == list(MODES)
    for c in CONTROLS.values():
        if c.cli:
            assert c.cli in params, c.cli
            if c.default is not None:
                assert params[c.cli].default == c.default, c.cli
    text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for c in controls.CONTROLS.values():
        assert f"{c.cc} {c.name}: {c.cc_help}" in text
    # the start values the table calls defaults are the ones a session starts with
    opts, sampling = ServeOptions(), SamplingConfig()
    assert (opts.mode, opts.tempo, opts.answer_bars) == tuple(CONTROLS[n].default for n in ("mode", "tempo", "answer_bars"))
    assert (sampling.temperature, sampling.top_p, sampling.max_polyphony) == tuple(
        CONTROLS[n].default for n in ("temperature", "top_p", "density"))
    assert isinstance(params["--mode"].type, click.Choice)


def test_cc_map_comes_from_the_table_and_a_cc_does_what_the_api_does(tiny_grid_model) -> None:
    assert [(c.name, c.cc) for c in controls.CONTROLS.values()] == [
        ("temperature", 20), ("answer_bars", 21), ("density", 22), ("mode", 23), ("end_call", 24), ("panic", 25), ("reset", 26)]
    assert controls.CONTROLS["mode"].cc_help == "0-31 call-response, 32-63 accompany, 64-95 duet, 96-127 autoplay"
    out = RecordingOutput()
    srv = Server(load_checkpoint(tiny_grid_model), ServeOptions(midi_in="none", midi_out="none", tempo=240), output=out)
    with srv:
        srv._on_midi(mido.Message("control_change", control=22, value=0))  # density 1
        srv._on_midi(mido.Message("control_change", control=23, value=127))  # autoplay
        assert wait_until(lambda: srv.status()["mode"] == "autoplay" and srv.status()["density"] == 1)
        assert wait_until(lambda: srv.status()["notes_out"] > 0, timeout=5)
        srv._on_midi(mido.Message("control_change", control=25, value=127))  # panic
        assert wait_until(lambda: any(m.type == "control_change" for m in out.messages()))
    assert not hanging_notes(out.messages())


class ListenOnly(LiveMode):
    """A mode defined outside the package: hears the player, never plays."""

    name = "listen-only"
    help = "only listen"
    activities = ("listening",)

    def activity(self, c) -> str:
        return "listening"

    def listening(self, c) -> bool:
        return True


def test_a_new_live_mode_is_one_class_and_one_registry_line(monkeypatch, tiny_grid_model) -> None:
    monkeypatch.setitem(MODE_CLASSES, ListenOnly.name, ListenOnly)
    ckpt = load_checkpoint(tiny_grid_model)
    engine = Engine(ckpt.model, ckpt.codec, SamplingConfig(), seed=2)
    sched = FakeScheduler()
    cond = Conductor(engine, sched, InternalClock(120, start_ns=0), Settings(mode="duet"), 0, Listener(Follow.parse("none")))
    run(cond, 2 * S)
    assert sched.notes(), "duet plays"
    cond.set_mode("listen-only", 2 * S)
    since = len(sched.log)
    last = play_phrase(cond, 2 * S + BEAT)
    cond.end_call(last)
    run(cond, last + 4 * S, start_ns=last)
    assert cond.activity == "listening" and cond.notes_in == 4
    assert not [n for n in sched.notes(since) if n[2] > 0], "a listen-only mode plays nothing"
    with pytest.raises(MusicRNNError, match="unknown mode 'jazz'"):
        cond.set_mode("jazz", last)


def test_one_late_limit_for_the_conductor_and_the_scheduler() -> None:
    """LATE_S was 0.03 s in modes.py and 0.1 s in scheduler.py: a note-on 50 ms late was
    played by the scheduler although the conductor skips decisions that late."""
    from musicrnn.live import modes, scheduler

    assert modes.LATE_S is scheduler.LATE_S is limits.LATE_S
    out = RecordingOutput()
    with Scheduler(out) as sched:
        sched.play([(now_ns() - 50 * MS, 60, 100)])
        assert wait_until(lambda: sched.stats["late"] == 1)
        time.sleep(0.02)
    assert not [m for m in out.messages() if m.type == "note_on"]


@pytest.mark.parametrize("module", ["server", "inbox", "terminal", "control_table", "controls", "osc", "modes", "play_modes"])
def test_live_modules_each_do_one_job_in_under_500_lines(module) -> None:
    source = (LIVE / f"{module}.py").read_text()
    assert len(source.splitlines()) <= 500
    assert ast.get_docstring(ast.parse(source)), f"{module}.py says what its job is"


def test_follow_choices_are_the_listeners_followers() -> None:
    assert tuple(CONTROLS["follow"].args[0].choices) == FOLLOWERS
    assert CONTROLS["follow"].args[0].range_text == " \\| ".join(FOLLOWERS)
