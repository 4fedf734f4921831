"""End to end over real JACK MIDI ports: ``musicrnn serve`` runs as a subprocess; a "player"
client plays into its input, a "DAW" client records its output.

Musical correctness is asserted with tolerances (on the beat within 15 ms), never latencies:
those are measured by benchmarks/latency.py, not on a busy CI machine.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.live.clock import PPQN, now_ns

from helpers.live import wait_until
from live_session import Recorder, Serve  # RtMidi's queue, not a Python callback: see its docstring

TOLERANCE_S = 0.015
S = 1e9


def assert_every_note_closed(rec: Recorder) -> None:
    """Every note-on the DAW heard has had its note-off, and none was struck again before it."""
    assert rec.restrikes_without_off() == 0 and not rec.sounding(), rec.sounding()


@pytest.fixture
def serve(jack_server):
    started: list[Serve] = []
    clients: list = []

    def start(model: Path, *args: str, port_name: str = "mrtest") -> tuple[Serve, Recorder, mido.ports.BaseOutput]:
        proc = Serve(jack_server, model, port_name, *args)
        started.append(proc)
        proc.wait_ready()
        rec = Recorder(jack_server.backend, jack_server.port("input", f"{port_name} out"))
        player = jack_server.backend.open_output(jack_server.port("output", f"{port_name} in"))
        clients.extend([rec, player])
        return proc, rec, player

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()
        for client in clients:
            client.close()


def play(player, pitches, dur: float = 0.15, gap: float = 0.05) -> int:
    """Play a phrase; return the time of the last release."""
    t = 0
    for p in pitches:
        player.send(mido.Message("note_on", note=p, velocity=90))
        time.sleep(dur)
        player.send(mido.Message("note_off", note=p))
        t = now_ns()
        time.sleep(gap)
    return t


def off_grid_s(t: int, origin: int, step_s: float) -> float:
    x = (t - origin) / S / step_s
    return abs(x - round(x)) * step_s


def assert_clean_exit(proc: Serve, rc: int) -> None:
    assert rc in (0, 143, -15), (rc, proc.err)
    assert not any("Traceback" in line for line in proc.err), "\n".join(proc.err)
    assert any("all notes off" in line for line in proc.out)


@pytest.mark.slow
def test_call_response_answers_on_the_grid_and_sigterm_mid_answer_closes_every_note(serve, jack_server, tiny_grid_model):
    proc, rec, player = serve(tiny_grid_model, "--mode", "call-response", "--tempo", "120", "--silence-beats", "1",
                              "--answer-bars", "1")
    # a DAW loop: our output goes straight back into our input; those echoes must not count as the player
    subprocess.run(["jack_connect", f"{proc.port_name} out:{proc.port_name} out", f"{proc.port_name} in:{proc.port_name} in"],
                   env=jack_server.env, check=True, capture_output=True)
    released = play(player, [60, 64, 67, 72])
    assert wait_until(lambda: rec.note_ons(), timeout=5), "no answer"
    time.sleep(2.3)  # the one-bar answer (2 s at 120 BPM) plays out
    ons = rec.note_ons()
    first = ons[0]
    # after the silence of one beat, on the next beat: 0.5-1.0 s after the release
    assert 0.5 - TOLERANCE_S <= (first - released) / S <= 1.0 + TOLERANCE_S
    step_s = 0.25  # grid codec, 2 steps per beat at 120 BPM
    assert max(off_grid_s(t, first, step_s) for t in ons) <= TOLERANCE_S
    assert all((t - first) / S <= 2.0 + TOLERANCE_S for t in ons)  # one bar long
    assert_every_note_closed(rec)

    # play again; SIGTERM as soon as the answer sounds
    mark = now_ns()
    play(player, [62, 65])
    assert wait_until(lambda: rec.note_ons(after=mark + 1), timeout=5), "no second answer"
    rc = proc.terminate()
    time.sleep(0.1)
    assert_clean_exit(proc, rc)
    assert_every_note_closed(rec)
    assert any("stopped: 6 notes in" in line for line in proc.out), proc.out  # the loop's echoes were not heard


@pytest.mark.slow
def test_follows_midi_clock_and_stops_when_the_player_comes_back(serve, tiny_performance_model):
    proc, rec, player = serve(tiny_performance_model, "--clock", "midi", "--tempo", "90", "--silence-beats", "1",
                              "--answer-bars", "2")
    bpm = 120.0
    period = 60.0 / (bpm * PPQN)
    first_pulse: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def clock() -> None:  # the DAW's transport: start, then 24 pulses per beat
        with lock:
            player.send(mido.Message("start"))
        t0 = time.perf_counter() + 0.01
        i = 0
        while not stop.is_set():
            target = t0 + i * period
            while (left := target - time.perf_counter()) > 0:
                time.sleep(min(left, 0.002))
            with lock:
                player.send(mido.Message("clock"))
            if i == 0:
                first_pulse.append(now_ns())
            i += 1

    ticker = threading.Thread(target=clock, daemon=True)
    ticker.start()
    try:
        time.sleep(1.0)  # two beats to learn the tempo
        released = 0
        for p in (60, 63, 67):
            with lock:
                player.send(mido.Message("note_on", note=p, velocity=90))
            time.sleep(0.15)
            with lock:
                player.send(mido.Message("note_off", note=p))
            released = now_ns()
            time.sleep(0.05)
        assert wait_until(lambda: rec.note_ons(), timeout=5), "no answer"
        beat_s = 60.0 / bpm
        origin = first_pulse[0]
        first = rec.note_ons()[0]
        # the answer starts on one of the DAW's beats, the first after one beat of silence
        assert off_grid_s(first, origin, beat_s) <= TOLERANCE_S
        assert beat_s - TOLERANCE_S <= (first - released) / S <= 2 * beat_s + TOLERANCE_S
        # the player comes back: the answer stops at once and no new answer note follows
        time.sleep(0.4)
        with lock:
            player.send(mido.Message("note_on", note=70, velocity=90))
        back = now_ns()
        time.sleep(0.6)
        assert not rec.note_ons(after=back + int(0.05 * S))
        assert_every_note_closed(rec)
        with lock:
            player.send(mido.Message("note_off", note=70))
    finally:
        stop.set()
        ticker.join(5)
    rc = proc.terminate()
    assert_clean_exit(proc, rc)


@pytest.mark.slow
def test_mixed_session_with_mode_switches_panic_and_sigterm_leaves_no_note_hanging(serve, jack_server, tiny_grid_model):
    proc, rec, player = serve(tiny_grid_model, "--tempo", "150", "--silence-beats", "1", "--answer-bars", "1")
    subprocess.run(["jack_connect", f"{proc.port_name} out:{proc.port_name} out", f"{proc.port_name} in:{proc.port_name} in"],
                   env=jack_server.env, check=True, capture_output=True)

    def cc(control: int, value: int) -> None:
        player.send(mido.Message("control_change", control=control, value=value))

    play(player, [60, 62, 64], dur=0.1)
    time.sleep(1.0)  # an answer starts
    cc(23, 64)  # duet
    play(player, [65, 67], dur=0.1)
    time.sleep(0.7)
    cc(23, 127)  # autoplay
    player.send(mido.Message("note_on", note=48, velocity=80))  # held across the switches
    time.sleep(0.8)
    cc(25, 127)  # panic
    cc(25, 0)
    time.sleep(0.3)
    cc(26, 127)  # reset
    cc(26, 0)
    time.sleep(0.4)
    cc(23, 0)  # back to call-response
    player.send(mido.Message("note_off", note=48))
    play(player, [72, 71], dur=0.1)
    mark = now_ns()
    cc(24, 127)  # end of call: answer on the next beat
    assert wait_until(lambda: rec.note_ons(after=mark), timeout=3), "no answer after the end-of-call control"
    rc = proc.terminate()
    time.sleep(0.1)
    assert_clean_exit(proc, rc)
    assert_every_note_closed(rec)
    with rec.lock:
        assert any(m.type == "control_change" and m.control == 123 for _, m in rec.messages)  # the panic
    assert len(rec.note_ons()) > 5


@pytest.mark.slow
def test_a_call_in_f_sharp_major_is_answered_in_f_sharp_major(serve, jack_server):
    """The partner listens (issue 15): a 2-bar F# major call (arpeggio, scale run) played into
    the bundled model's serve over JACK; after the end-of-call control its answer is in F#
    major, though the model learnt its music in C, and every note it struck is closed."""
    import numpy as np
    from listening import make_call, notes_from

    from musicrnn.checkpoint import default_model_path
    from musicrnn.tonality import Key, estimate_key, in_scale_ratio

    tempo, f_sharp = 200.0, Key(6, "major")
    spb = 60.0 / tempo
    proc, rec, player = serve(default_model_path(), "--tempo", f"{tempo:g}", "--answer-start", "now",
                              "--answer-bars", "2", "--silence-beats", "16", "--seed", "0")
    call = make_call(f_sharp, "sparse", 66, 90, np.random.default_rng(0))
    events = sorted([(n.onset, 1, n.pitch) for n in call] + [(n.onset + n.dur, 0, n.pitch) for n in call])
    t0 = now_ns() + int(0.05 * S)
    for beat, on, pitch in events:
        while now_ns() < t0 + beat * spb * S:
            time.sleep(0.001)
        player.send(mido.Message("note_on", note=pitch, velocity=90) if on else mido.Message("note_off", note=pitch))
    t_end = now_ns()
    player.send(mido.Message("control_change", control=24, value=127))  # end of call: answer now
    player.send(mido.Message("control_change", control=24, value=0))
    assert wait_until(lambda: rec.note_ons(after=t_end), timeout=5), "no answer"
    time.sleep(2 * 4 * spb + 0.5)  # the 2-bar answer plays out
    with rec.lock:
        msgs = [(t, m) for t, m in rec.messages if t >= t_end]
    answer, unclosed = notes_from(msgs, t_end, spb)
    pitches = [n.pitch for n in answer]
    key = estimate_key(pitches, [n.dur for n in answer])
    assert len(answer) >= 8, answer
    assert key == f_sharp or in_scale_ratio(pitches, f_sharp) >= 0.9, (key.name, in_scale_ratio(pitches, f_sharp), pitches)
    assert unclosed == 0
    assert_every_note_closed(rec)
    rc = proc.terminate()
    assert_clean_exit(proc, rc)
    assert any(f"stopped: {len(call)} notes in" in line for line in proc.out), proc.out


@pytest.mark.slow
def test_a_melody_played_into_accompany_mode_gets_a_closed_on_grid_accompaniment_in_its_key(serve, jack_server):
    """Issue 17: a DAW sends MIDI clock and plays a 4-bar tune in Eb major into ``serve --mode
    accompany`` with the bundled accompaniment model (which learnt its music in C); the
    accompaniment it records is on the frame grid (each onset a few ms after its frame's beat
    position, at most 15), every note of it closed (by itself, a bar after the tune), and in the
    tune's key."""
    from accompany_live import COUNT_IN_BEATS, Daw, lateness_ns, record_notes, tune

    from musicrnn.tonality import Key, estimate_key, in_scale_ratio

    bpm, e_flat = 100.0, Key(3, "major")
    proc, rec, player = serve(Path("accompany"), "--mode", "accompany", "--clock", "midi", "--tempo", f"{bpm:g}",
                              "--answer-bars", "1", "--seed", "0")
    notes = tune(e_flat.tonic, e_flat.mode, bars=4)
    daw = Daw(player, bpm, notes, tail_beats=6).start()
    assert daw.done.wait(60), "the DAW did not finish"
    frame_ns = 60e9 / bpm / 4
    with rec.lock:
        msgs = list(rec.messages)
    assert_every_note_closed(rec)  # closed by the model itself: it rests a bar after the tune
    pitches, lengths, onsets = record_notes(msgs, 0)
    assert len(onsets) >= 16, msgs
    late = lateness_ns(onsets, daw.origin, frame_ns)
    assert min(late) >= -0.003 * S and max(late) <= TOLERANCE_S * S, sorted(late)
    first = daw.beat_ns(COUNT_IN_BEATS)  # the tune's first note: nothing before it, nothing a bar after its end
    end = daw.beat_ns(COUNT_IN_BEATS + max(n.beat + n.beats for n in notes) + 4)
    assert first - 0.003 * S <= min(onsets) and max(onsets) <= end + TOLERANCE_S * S
    key = estimate_key(pitches, lengths)
    assert key == e_flat or in_scale_ratio(pitches, e_flat) >= 0.8, (key.name, in_scale_ratio(pitches, e_flat), pitches)
    rc = proc.terminate()
    assert_clean_exit(proc, rc)
    assert_every_note_closed(rec)


def test_ports_lists_jack_ports_and_a_wrong_name_lists_the_real_ones(jack_server, tiny_grid_model, one_torch_thread):
    port = jack_server.backend.open_output("probe-port", client_name="probe-port")
    try:
        result = CliRunner().invoke(cli, ["ports", "--midi-api", "jack"])
        assert result.exit_code == 0, result.output
        assert "JACK" in result.output and "probe-port" in result.output
        result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-api", "jack",
                                          "--midi-in", "keystation", "--midi-out", "none"])
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "'keystation' not found" in lines[0] and "probe-port" in lines[0], result.output
        # a part of a real port's name is enough
        result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-api", "jack",
                                          "--midi-in", "PROBE", "--midi-out", "none", "--seconds", "0.2"])
        assert result.exit_code == 0, result.output
        assert "in 'probe-port:probe-port'" in result.output and "all notes off" in result.output
    finally:
        port.close()


def test_jack_requested_without_a_server_is_a_one_line_error(monkeypatch, tiny_grid_model):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "musicrnn-no-such-server")
    result = CliRunner().invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-api", "jack"])
    assert result.exit_code == 1
    assert "no JACK server running" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ports_shows_each_name_once_and_marks_a_serves_own_ports(jack_server):
    import rtmidi

    from musicrnn.live.midi_ports import open_input, open_output

    ours_out = open_output("virtual", "jack", "mrtest")  # what a running `musicrnn serve --port-name mrtest` opens
    ours_in = open_input("virtual", "jack", "mrtest", lambda *a: None)
    keys = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="Keystation")
    keys.open_virtual_port("Keystation MIDI 1")
    daws = []
    for client in ("Ardour", "Bitwig"):  # two programs with the same port name
        daw = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=client)
        daw.open_virtual_port("MIDI in")
        daws.append(daw)
    try:
        result = CliRunner().invoke(cli, ["ports", "--midi-api", "jack"])
        assert result.exit_code == 0, result.output
        out = result.output
        assert "mrtest out:mrtest out" not in out and "Keystation:Keystation" not in out, out
        lines = [line.strip() for line in out.splitlines()]
        inputs, outputs = lines.index("inputs (--midi-in):"), lines.index("outputs (--midi-out):")
        assert "'mrtest out'  (musicrnn serve's own virtual port)" in lines[inputs:outputs]
        assert "'Keystation MIDI 1'" in lines[inputs:outputs]
        assert "'mrtest in'  (musicrnn serve's own virtual port)" in lines[outputs:]
        assert "'Ardour:MIDI in'" in lines[outputs:] and "'Bitwig:MIDI in'" in lines[outputs:]  # 'MIDI in' alone: both
        # what it shows is what --midi-in takes
        from musicrnn.live.midi_ports import _resolve

        names = jack_server.backend.get_input_names()
        assert _resolve("Keystation MIDI 1", names, "input", "jack") == "Keystation:Keystation MIDI 1"
        assert _resolve("mrtest out", names, "input", "jack") == "mrtest out:mrtest out"
    finally:
        ours_in.close()
        ours_out.close()
        keys.delete()
        for daw in daws:
            daw.delete()


def test_readable_alsa_names_drop_the_repeated_client_and_the_numbers():
    from musicrnn.live.midi_ports import readable_ports

    names = ["Midi Through:Midi Through Port-0 14:0", "musicrnn out:musicrnn out 128:0",
             "USB Keys:USB Keys MIDI 1 20:0", "USB Keys:USB Keys MIDI 2 20:1", "Synth:Port 1 24:0"]
    shown = readable_ports(names, "alsa", "input")
    assert [p.short for p in shown] == ["Midi Through Port-0", "musicrnn out", "USB Keys MIDI 1", "USB Keys MIDI 2",
                                        "Port 1"]
    assert [p.ours for p in shown] == [False, True, False, False, False]
    assert shown[4].client == "Synth" and shown[0].client is None
    assert [p.short for p in readable_ports(["IAC Driver Bus 1"], "coremidi", "input")] == ["IAC Driver Bus 1"]
