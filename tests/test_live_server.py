"""The server in-process, with a recording output instead of a port: the control API, MIDI CC
controls and learn, echo suppression, floods, errors, and the CLI's one-line errors."""

from __future__ import annotations

import time

import mido
import pytest
from click.testing import CliRunner

from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.errors import MusicRNNError
from musicrnn.live.controls import CONTROLS, ControlMap, parse_bindings
from musicrnn.live.server import ServeOptions, Server
from musicrnn.live.terminal import serve

from helpers.live import RecordingOutput, hanging_notes, wait_until


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


def server(model_path, **opts) -> tuple[Server, RecordingOutput]:
    out = RecordingOutput()
    options = ServeOptions(midi_in="none", midi_out="none", **{"silence_beats": 1, "answer_bars": 1, "tempo": 240, **opts})
    return Server(load_checkpoint(model_path), options, output=out), out


def phrase(s: Server, pitches=(60, 64, 67), dur=0.06) -> None:
    for p in pitches:
        s.note_on(p, 90)
        time.sleep(dur)
        s.note_off(p)


def test_mixed_session_through_the_api_leaves_no_note_hanging(tiny_grid_model, tiny_performance_model) -> None:
    srv, out = server(tiny_grid_model)
    with srv:
        phrase(srv)
        assert wait_until(lambda: srv.status()["activity"] == "answering", timeout=5)
        assert wait_until(lambda: srv.status()["notes_out"] > 0, timeout=5)
        srv.set_mode("duet")
        phrase(srv, (62, 65))
        srv.set_temperature(0.7)
        srv.set_density(3)
        srv.set_mode("autoplay")
        time.sleep(0.3)
        srv.panic()
        srv.reset()
        srv.load_model(tiny_performance_model)  # a different codec mid-session
        srv.set_mode("call-response")
        phrase(srv)
        time.sleep(0.5)
        status = srv.status()
        assert status["codec"] == "performance"
        assert status["temperature"] == 0.7 and status["density"] == 3  # the player's settings outlive a model load
        srv.end_call()
        time.sleep(0.3)
    assert not srv.running and srv.error is None
    assert srv.status()["notes_in"] >= 3
    assert not hanging_notes(out.messages())
    assert any(m.type == "control_change" and m.control == 123 for m in out.messages())  # the panic


def test_cc_controls_and_midi_learn(tiny_grid_model) -> None:
    srv, out = server(tiny_grid_model, cc={"temperature": 74}, learn="panic")
    with srv:
        srv._on_midi(mido.Message("control_change", control=102, value=127))  # learnt: CC 102 is panic now
        srv._on_midi(mido.Message("control_change", control=74, value=32))
        srv._on_midi(mido.Message("control_change", control=23, value=70))  # mode: duet
        srv._on_midi(mido.Message("control_change", control=21, value=127))  # 16 bars
        assert wait_until(lambda: srv.status()["mode"] == "duet")
        status = srv.status()
        assert status["temperature"] == pytest.approx(0.504, abs=1e-3) and status["answer_bars"] == 16
        assert srv.controls.cc_of("panic") == 102 and any("learned" in e for e in srv.events)
        assert wait_until(lambda: srv.status()["notes_out"] > 0, timeout=5)
        srv._on_midi(mido.Message("control_change", control=102, value=0))
        srv._on_midi(mido.Message("control_change", control=102, value=127))  # panic by the learnt CC
        assert wait_until(lambda: any(m.type == "control_change" for m in out.messages()))
    assert not hanging_notes(out.messages())


def test_our_own_notes_coming_back_are_not_heard_as_the_player(tiny_grid_model) -> None:
    srv, out = server(tiny_grid_model, mode="autoplay")
    with srv:
        assert wait_until(lambda: len(out.messages()) >= 4, timeout=5)
        for _, msg in list(out.sent)[:4]:
            srv._on_midi(msg.copy())  # a DAW loop sends our notes straight back
        time.sleep(0.1)
        assert srv.status()["notes_in"] == 0 and srv.echo.echoes >= 1
        srv._on_midi(mido.Message("note_on", channel=5, note=61, velocity=80))  # the player, another channel
        assert wait_until(lambda: srv.status()["notes_in"] == 1)


def test_a_flood_of_input_is_bounded_and_counted(tiny_grid_model) -> None:
    srv, out = server(tiny_grid_model, mode="duet")
    with srv:
        for i in range(20_000):
            srv._on_midi(mido.Message("note_on" if i % 2 == 0 else "note_off", note=40 + (i // 2) % 40, velocity=90))
        assert len(srv.inbox) <= srv.inbox.max_events
        assert wait_until(lambda: len(srv.inbox) == 0, timeout=20)
        assert srv.running
    assert not hanging_notes(out.messages())


def test_an_engine_error_ends_every_note_and_is_reported(tiny_grid_model) -> None:
    srv, out = server(tiny_grid_model, mode="autoplay")
    with srv:
        assert wait_until(lambda: srv.scheduler.sounding > 0, timeout=5)

        def boom(*args):
            raise RuntimeError("model exploded")

        srv.conductor.tick = boom  # type: ignore[method-assign]
        assert srv.wait(5)
        assert isinstance(srv.error, RuntimeError)
        assert wait_until(lambda: srv.scheduler.sounding == 0)
    assert not hanging_notes(out.messages())


def test_api_refuses_bad_values_with_one_line_errors(tiny_grid_model) -> None:
    srv, _ = server(tiny_grid_model)
    with srv:
        for call in (lambda: srv.set_mode("jazz"), lambda: srv.set_temperature(-1), lambda: srv.note_on(200),
                     lambda: srv.set_tempo(1000), lambda: srv.load_model("/nonexistent.pt")):
            with pytest.raises(MusicRNNError):
                call()
        srv.set_tempo(90)
        assert wait_until(lambda: srv.status()["tempo"] == 90)
    with pytest.raises(MusicRNNError):
        srv.panic()  # closed
    with pytest.raises(MusicRNNError):
        ServeOptions(clock="midi", midi_in="none").validate()


def test_control_map_defaults_bindings_and_switch_edges() -> None:
    cmap = ControlMap(parse_bindings(["temperature=74", "end-call=30"]))
    assert cmap.cc_of("temperature") == 74 and 20 not in cmap.by_cc
    assert cmap.handle(74, 127).value == 2.0
    assert cmap.handle(23, 0).value == "call-response" and cmap.handle(23, 127).value == "autoplay"
    assert cmap.handle(22, 127).value == 0 and cmap.handle(22, 0).value == 1
    assert cmap.handle(30, 127).name == "end_call"
    assert cmap.handle(30, 127) is None  # held: fires once
    assert cmap.handle(30, 0) is None and cmap.handle(30, 100).name == "end_call"
    assert cmap.handle(99, 64) is None
    assert {row[0] for row in cmap.table()} == set(CONTROLS)
    for bad in (["tempo=3"], ["temperature=x"], ["panic=123"]):
        with pytest.raises(MusicRNNError):
            parse_bindings(bad)


def test_cli_bad_options_are_one_line_errors(tiny_grid_model) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--model", str(tiny_grid_model), "--cc", "volume=7"])
    assert result.exit_code == 1 and "unknown control" in result.output
    result = runner.invoke(cli, ["serve", "--model", "/nonexistent.pt", "--midi-in", "none", "--midi-out", "none",
                                 "--osc-port", "0"])
    assert result.exit_code == 1 and "no such checkpoint" in result.output


def test_cli_serve_runs_without_midi_ports_and_stops_cleanly(tiny_grid_model) -> None:
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-in", "none", "--midi-out", "none",
                                      "--osc-port", "0", "--mode", "autoplay", "--seconds", "0.5"])
    assert result.exit_code == 0, result.output
    assert "autoplay" in result.output and "all notes off" in result.output


def test_cli_serve_that_could_neither_hear_nor_play_is_refused(tiny_grid_model) -> None:
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-in", "none", "--midi-out", "none",
                                      "--seconds", "0.5"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "neither hear nor play" in lines[0] and "--osc-port" in lines[0]
    assert "musicrnn serve" not in result.output  # refused before a session started
    with pytest.raises(MusicRNNError, match="--osc-port"):
        serve(load_checkpoint(tiny_grid_model), ServeOptions(midi_in="none", midi_out="none"), seconds=0.1)


def test_an_osc_note_whose_note_off_cannot_be_scheduled_is_refused_whole(tiny_grid_model) -> None:
    """Under an OSC flood the timers of /musicrnn/note can be full (4096 waiting). The note-on
    used to go in before its note-off was refused: the key stayed "held" for good, and
    call-response never answered again. Now the whole note is refused."""
    from musicrnn.live import osc

    class FullTimers:
        sender = ("127.0.0.1", 5555)

        def __init__(self) -> None:
            self.errors: list[str] = []

        def later(self, delay_s, fn):
            raise MusicRNNError("more than 4096 messages wait for their time; try again later")

        def error(self, reason):
            self.errors.append(reason)

    srv, out = server(tiny_grid_model)
    with srv:
        ctx = FullTimers()
        osc.handle(osc.route_for("/musicrnn/note"), srv, ctx, "/musicrnn/note", [60, 90, 0.1])
        assert ctx.errors and "4096" in ctx.errors[0]
        time.sleep(0.1)
        assert srv.status()["notes_in"] == 0
        phrase(srv, (62,))  # and the next call is answered after a beat of silence: no key is held
        assert wait_until(lambda: srv.status()["activity"] == "answering", timeout=5)
    assert not hanging_notes(out.messages())


def test_an_input_thread_works_off_its_own_events_and_the_answer_leaves_from_it(tiny_grid_model) -> None:
    """Inside ``working_here`` (the OSC and MIDI input threads) a note and "answer now" are
    handled, and the answer's first note sent, by the input thread itself, before the block
    returns: no hand-off to the engine or scheduler thread on the way."""
    import threading

    srv, out = server(tiny_grid_model, answer_start="now", silence_beats=64, answer_bars=4)
    inline = 0
    with srv:
        for i in range(5):
            def call() -> None:
                with srv.working_here():
                    srv.note_on(60 + i, 90)
                    srv.note_off(60 + i)
                    srv.end_call()

            sent_before = len(out.messages())
            t = threading.Thread(target=call)
            t.start()
            t.join()
            # the engine thread may be mid-wake-up when the block ends (it then does the work): mostly not
            inline += any(m.type == "note_on" and m.velocity > 0 for m in out.messages()[sent_before:])
            assert wait_until(lambda: srv.status()["activity"] == "answering", timeout=5)
            time.sleep(0.05)
    assert inline >= 3
    assert not hanging_notes(out.messages())


def test_a_player_taking_over_a_model_note_and_releasing_it_leaves_no_key_held(tiny_grid_model) -> None:
    """The player strikes a pitch the model sounds (the model's note ends) and lets go at once:
    that release is the player's, not an echo of the model's note-off, so the key is up again."""
    srv, out = server(tiny_grid_model, mode="duet", tempo=120)
    checked = 0
    with srv:
        for _ in range(40):
            if checked >= 3:
                break
            msgs = out.messages()
            sounding = {m.note for m in msgs if m.type == "note_on" and m.velocity > 0} - \
                {m.note for m in msgs if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0)}
            on = [m.note for m in msgs if m.type == "note_on" and m.velocity > 0 and m.note in sounding]
            if not on:
                time.sleep(0.05)
                continue
            p, before = on[-1], len(msgs)
            srv._on_midi(mido.Message("note_on", note=p, velocity=90))
            time.sleep(0.02)
            srv._on_midi(mido.Message("note_off", note=p))
            time.sleep(0.05)
            ended = any(m.note == p and (m.type == "note_off" or m.velocity == 0) for m in out.messages()[before:])
            assert wait_until(lambda: p not in srv.conductor.held, timeout=2), f"key {p} stays held for the model"
            checked += ended  # the model ended p just before the player's release: the case that matters
    assert checked >= 1
    assert not hanging_notes(out.messages())


def test_no_midi_system_points_to_the_osc_only_mode(tiny_grid_model, monkeypatch) -> None:
    from musicrnn.live import midi_ports

    monkeypatch.setattr(midi_ports, "_probe", lambda api: "not here (test)")
    for args in ([], ["--midi-api", "jack"]):
        result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), *args, "--seconds", "0.1"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "--midi-in none --midi-out none --osc-port 9000" in lines[0], lines[0]


def test_cli_follow_and_velocity_say_what_the_answers_follow(tiny_grid_model) -> None:
    base = ["serve", "--model", str(tiny_grid_model), "--midi-in", "none", "--midi-out", "none", "--osc-port", "0",
            "--seconds", "0.1"]
    cases = {
        (): "follows key, register, velocity, density, motif 0.5, grid, chords;",
        ("--follow", "key,register,velocity=0.5"): "follows key, register, velocity 0.5;",
        ("--follow", "none", "--velocity", "model"): "follows nothing (--follow none);",
        ("--follow", "key", "--velocity", "follow"): "follows key, velocity;",
        ("--velocity", "100"): "follows key, register, density, motif 0.5, grid, chords, velocity fixed at 100;",
        ("--follow", "grid=0.5"): "follows grid 0.5;",
    }
    for args, said in cases.items():
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 0, result.output
        assert said in result.output.splitlines()[0], (args, result.output)
    for args, why in ((("--follow", "keys"), "unknown follower 'keys'"), (("--follow", "key=2"), "0-1"),
                      (("--follow", "key=loud"), "must be a number"), (("--velocity", "200"), "follow, model, or a velocity 1-127"),
                      (("--velocity", "soft"), "follow, model, or a velocity 1-127")):
        result = CliRunner().invoke(cli, [*base, *args])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], (args, result.output)
