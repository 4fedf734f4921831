"""Accompany mode, live (issue 17): the player plays a melody, the model its accompaniment, frame
by frame. Driven with made-up times (the conductor over a tiny model with roles and a fake
scheduler), then through the server, OSC and the CLI. The real thing over JACK, with the bundled
model, is in tests/test_live_jack.py; the timing numbers in benchmarks/accompany_live.py."""

from __future__ import annotations

import copy
from pathlib import Path

import mido
import pytest
from click.testing import CliRunner

from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.codecs import AccompanyCodec
from musicrnn.errors import MusicRNNError
from musicrnn.listening import Follow, Listener
from musicrnn.live.accompany import ACCOMPANY_LATE_S, MELODY_WAIT_S, AccompanyEngine
from musicrnn.live.clock import InternalClock
from musicrnn.live.engine import Engine
from musicrnn.live.modes import Conductor, Settings
from musicrnn.live.play_modes import MODES
from musicrnn.live.server import ServeOptions, Server
from musicrnn.sample import SamplingConfig, parse_key

from helpers.live import FakeScheduler, RecordingOutput, hanging_notes, run, wait_until
from helpers.models import tiny_checkpoint

S = 1_000_000_000
MS = 1_000_000
BEAT = S // 2  # 120 BPM
FRAME = BEAT // 4  # 4 frames a beat: 125 ms


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


@pytest.fixture(scope="module")
def roles_model(tmp_path_factory) -> Path:
    """A tiny random model in the accompany codec (melody and accompaniment roles)."""
    codec = AccompanyCodec(steps_per_beat=4, min_pitch=36, max_pitch=84)
    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "acc.pt", codec, {"key_normalised": True})


class TimedScheduler(FakeScheduler):
    """Also records when (the conductor's time) each note was handed over."""

    def __init__(self) -> None:
        super().__init__()
        self.cond: Conductor | None = None
        self.handed: list[tuple[int, int, int, int]] = []  # (handed at, time, pitch, velocity)

    def play(self, notes) -> None:
        notes = list(notes)
        super().play(notes)
        self.handed += [(self.cond.at_ns, t, p, v) for t, p, v in notes]  # type: ignore[union-attr]


def make(model: Path, follow: str = "none", key=None, **settings):
    ckpt = load_checkpoint(model)
    engine = AccompanyEngine(ckpt.model, ckpt.codec, SamplingConfig(key=key), seed=3)
    sched = TimedScheduler()
    cond = Conductor(engine, sched, InternalClock(120, start_ns=0), Settings(mode="accompany", **settings), t_ns=0,
                     listener=Listener(Follow.parse(follow)))
    sched.cond = cond
    return cond, engine, sched


def perform(cond: Conductor, notes, until: int) -> None:
    """Play ``notes`` ((on ns, off ns, pitch, velocity)) into ``cond``, ticking as the engine
    thread would, up to ``until``."""
    events = sorted([(on, p, v) for on, off, p, v in notes] + [(off, p, 0) for on, off, p, v in notes])
    t = 0
    for at, p, v in events:
        run(cond, at, start_ns=t)
        cond.tick(at)
        cond.human_note(at, p, v)
        t = at
    run(cond, until, start_ns=t)


def hold(cond: Conductor, pitch: int, at: int, until: int) -> None:
    """Tick up to ``at``, strike ``pitch`` there and keep it held, tick on up to ``until``."""
    run(cond, at)
    cond.tick(at)
    cond.human_note(at, pitch, 90)
    run(cond, until, start_ns=at)


def frames(codec: AccompanyCodec, tokens) -> list[tuple[list[str], list[str]]]:
    """The model's stream as frames: (melody part, accompaniment part) token names."""
    out, cur = [], []
    for x in tokens:
        if x == codec.step_token:
            i = cur.index(codec.acc_token)
            out.append((codec.names(cur[:i]), codec.names(cur[i + 1:])))
            cur = []
        else:
            cur.append(x)
    return out


def check_closed(notes) -> None:
    on: set[int] = set()
    for _, p, v in notes:
        if v:
            assert p not in on, f"{p} struck again while sounding"
            on.add(p)
        else:
            on.discard(p)
    assert not on, f"model notes left on: {on}"


def test_each_frame_feeds_the_melody_played_then_samples_the_accompaniment_on_the_frames_beat(roles_model) -> None:
    cond, engine, sched = make(roles_model, answer_bars=1)
    codec = engine.codec
    melody = [
        (2 * S - 20 * MS, 2 * S + 450 * MS, 60, 90),  # struck 20 ms early: belongs to frame 16 (2.0 s)
        (2500 * MS + 3 * MS, 2900 * MS, 62, 90),  # 3 ms late, within the wait: frame 20
        (3 * S + 40 * MS, 3400 * MS, 64, 90),  # 40 ms late: frame 24 is decided already, so frame 25
    ]
    perform(cond, melody, 7 * S)
    fr = frames(codec, engine.history)
    assert all(m == [] and a == [] for m, a in fr[:16]), "no accompaniment before the melody"
    assert fr[16][0] == ["M_ON(60 C4)"] and all(fr[k][0] == ["M_HOLD(60 C4)"] for k in (17, 18, 19))
    assert fr[20][0] == ["M_ON(62 D4)"] and all(fr[k][0] == ["M_HOLD(62 D4)"] for k in (21, 22, 23))
    assert fr[24][0] == [] and fr[25][0] == ["M_ON(64 E4)"] and fr[26][0] == ["M_HOLD(64 E4)"]
    # the accompaniment of each frame is the grammar's: an optional VEL, ascending pitches
    for _, acc in fr[16:28]:
        pitches = [int(n.split("(")[1].split()[0]) for n in acc if n.startswith("A_")]
        assert pitches == sorted(set(pitches)) and all(n.startswith(("VEL", "A_")) for n in acc)
    # what the model sampled is what sounds, on the beat of its frame, handed over 5-15 ms after it
    ons = [(t, p) for t, p, v in sched.notes() if v > 0]
    assert ons and ons[0][0] == 2 * S
    assert all(t % FRAME == 0 for t, _, _ in sched.notes())
    struck = {(16 + i, int(n.split("(")[1].split()[0])) for i, (_, acc) in enumerate(fr[16:]) for n in acc
              if n.startswith("A_ON")}
    assert {(t // FRAME, p) for t, p in ons} == struck
    lag = [at - t for at, t, p, v in sched.handed if v > 0]
    assert min(lag) >= MELODY_WAIT_S * S - 1 and max(lag) <= 15 * MS
    # one bar after the melody's last note the accompaniment rests: every note closed, nothing new
    assert max(t for t, _ in ons) < 3400 * MS + 4 * BEAT and cond.activity == "listening"
    check_closed(sched.notes())
    assert fr[-1] == ([], []) and not engine.model_notes


def test_a_frame_prepared_ahead_costs_no_model_step_after_its_beat_unless_the_melody_changed(roles_model) -> None:
    cond, engine, sched = make(roles_model)
    hold(cond, 60, 2 * S, 2 * S + 10 * MS)  # frame 16 decided
    assert cond.activity == "accompanying"
    assert cond.prepare() and not cond.prepare()  # frame 17 worked ahead once (nothing changed since)
    steps = engine.steps
    run(cond, 2 * S + FRAME + 10 * MS, start_ns=2 * S + 10 * MS)
    assert engine.steps == steps, "the melody held as prepared: frame 17 adopted, no step"
    cond.prepare()
    cond.tick(2 * S + 2 * FRAME - 10 * MS)
    cond.human_note(2 * S + 2 * FRAME - 10 * MS, 67, 90)  # a new melody note for frame 18
    steps = engine.steps
    run(cond, 2 * S + 2 * FRAME + 10 * MS, start_ns=2 * S + 2 * FRAME - 10 * MS)
    assert engine.steps > steps and frames(engine.codec, engine.history)[18][0] == ["M_HOLD(60 C4)", "M_ON(67 G4)"]


def test_a_frame_decided_too_late_holds_the_accompaniment_instead_of_playing_late(roles_model) -> None:
    cond, engine, sched = make(roles_model)
    hold(cond, 60, 2 * S, 2 * S + 10 * MS)
    sounding = set(engine.model_notes)
    since = len(sched.log)
    late = 2 * S + FRAME + int(ACCOMPANY_LATE_S * S) + 5 * MS  # the engine thread stalled past frame 17's limit
    run(cond, 2 * S + 2 * FRAME + 10 * MS, start_ns=late)
    assert engine.held_frames == 1
    codec = engine.codec
    assert frames(codec, engine.history)[17][1] == [codec.token_name(codec.a_hold0 + p - codec.min_pitch)
                                                    for p in sorted(sounding)]
    assert not [n for n in sched.notes(since) if n[2] > 0 and n[0] < 2 * S + 2 * FRAME], "nothing struck late for frame 17"


def test_a_frame_still_sampling_at_its_deadline_ends_there_holding_what_sounds(roles_model) -> None:
    cond, engine, sched = make(roles_model)
    hold(cond, 60, 2 * S, 2 * S + 10 * MS)  # frame 16 decided
    sounding = sorted(engine.model_notes)
    assert sounding
    engine.next_time(17 / 4)
    out = engine.decide(deadline_ns=0)  # frame 17 out of time before its first token
    codec = engine.codec
    assert engine.cut_frames == 1 and out == [] and sorted(engine.model_notes) == sounding
    assert frames(codec, engine.history)[17] == (["M_HOLD(60 C4)"], [codec.token_name(codec.a_hold0 + p - codec.min_pitch)
                                                                      for p in sounding])


def test_the_melody_is_heard_in_c_and_the_accompaniment_sounds_in_the_players_key(roles_model) -> None:
    cond, engine, sched = make(roles_model, follow="key,register")
    d_major = [74, 78, 81, 83, 81, 78, 76, 74, 79, 83, 81, 78]  # high: duet's register follower would move an octave
    melody = [(2 * S + i * BEAT, 2 * S + i * BEAT + BEAT - 50 * MS, p, 90) for i, p in enumerate(d_major)]
    perform(cond, melody, 2 * S + 13 * BEAT)
    # D moves to C; no octave: the accompaniment keeps its place under the melody
    assert cond.listener.key.name == "D:major" and cond.transpose == 2
    # it comes in when a key is heard (the third note), not in its home key before
    assert min(t for t, p, v in sched.notes() if v > 0) == 2 * S + 2 * BEAT
    fr = frames(engine.codec, engine.history)
    last = 16 + 11 * 4  # the frame of the last melody note (F#5), heard a tone lower
    assert fr[last][0] == ["M_ON(76 E5)"]
    model_ons = {(last + i, int(n.split("(")[1].split()[0])) for i, (_, acc) in enumerate(fr[last:]) for n in acc
                 if n.startswith("A_ON")}
    heard_ons = {(t // FRAME, p) for t, p, v in sched.notes() if v > 0 and t >= last * FRAME}
    assert model_ons and heard_ons == {(k, p + 2) for k, p in model_ons}
    # and the key prior leans its new notes towards the key's scale (C major as the model hears it)
    bias, on = engine.logit_bias, engine.codec.a_on0 - engine.codec.min_pitch
    assert bias is not None and bias[on + 61] < bias[on + 60] - 1 and bias[on + 66] < bias[on + 67] - 1


def test_a_fixed_key_and_range_win_and_velocities_follow_the_melodys_level(roles_model) -> None:
    e_major = parse_key("E:major")
    cond, engine, sched = make(roles_model, follow="velocity", key=e_major, answer_bars=1)
    cond.set_key(e_major, 4)
    cond.set_pitch_range((48, 72))
    soft = [(2 * S + i * BEAT, 2 * S + i * BEAT + 400 * MS, 64 + (i % 3), 30) for i in range(8)]
    loud = [(6 * S + i * BEAT, 6 * S + i * BEAT + 400 * MS, 64 + (i % 3), 120) for i in range(8)]
    perform(cond, soft + loud, 13 * S)  # a bar after the melody it rests
    ons = [(t, p, v) for t, p, v in sched.notes() if v > 0]
    assert ons and all(p % 12 in e_major and 48 <= p <= 72 for _, p, _ in ons)
    mean = lambda a, b: sum(v for t, _, v in ons if a <= t < b) / max(1, sum(1 for t, _, _ in ons if a <= t < b))  # noqa: E731
    assert mean(8500 * MS, 10 * S) > mean(3 * S, 6 * S) + 40  # the accompaniment follows the player's dynamics
    check_closed(sched.notes())


def test_a_long_accompaniment_keeps_the_listeners_memory_bounded() -> None:
    """An accompaniment never ends (no answer restarts the listener's count): 100,000 notes of it
    leave nothing in the listener that grows with them (each note's pitch was kept in a list)."""
    li = Listener()
    li.note_on(0.0, 60, 90)
    li.start_answer(1.0)
    for i in range(100_000):
        li.answered(60 + i % 12, 60 + i % 12, 80)
    sizes = [len(v) for v in vars(li).values() if isinstance(v, (list, dict, set, tuple))]
    assert max(sizes) <= 64 and li.register_tilt(0) != 0.0


def test_stop_panic_and_reset_end_every_note_and_the_model_hears_it(roles_model) -> None:
    cond, engine, sched = make(roles_model)
    hold(cond, 60, 2 * S, 3 * S)
    assert engine.model_notes
    cond.stop(3 * S)
    assert not engine.model_notes and sched.log[-1] == ("stop",) and cond.activity == "stopped"
    assert not engine.stream.decoder.voices[1].sounding and not engine.stream.cons.a_prev.any()
    since = len(sched.log)
    run(cond, 4 * S, start_ns=3 * S)
    assert not sched.notes(since), "silent until generate"
    cond.generate(4 * S)
    run(cond, 5 * S, start_ns=4 * S)
    assert [n for n in sched.notes(since) if n[2] > 0]
    cond.panic(5 * S)
    assert not engine.model_notes and ("panic",) in sched.log and not engine.stream.cons.a_prev.any()
    cond.reset(5 * S)
    assert not engine.history and not engine.model_notes


def test_a_copy_of_the_accompaniment_decoder_shares_no_voice(roles_model) -> None:
    """The engine samples ahead on copies of its stream: a copy's frames must not end the notes
    the stream itself holds (its voices were shared before)."""
    codec = load_checkpoint(roles_model).codec
    dec = codec.stream_decoder(roles=(1,))
    for x in codec.melody_frame_tokens([60], [60]) + [codec.a_on0 + 48 - codec.min_pitch, codec.step_token]:
        dec.feed(x)
    fork = copy.copy(dec)
    assert fork.feed(codec.acc_token) == [] and [e.pitch for e in fork.feed(codec.step_token)] == [48]  # ended there
    assert dec.sounding == {48} and fork.sounding == set()


def test_a_model_with_roles_plays_accompany_only_and_accompany_needs_one(roles_model, tiny_grid_model) -> None:
    roles, grid = load_checkpoint(roles_model), load_checkpoint(tiny_grid_model)
    with pytest.raises(MusicRNNError, match="roles .*accompany mode"):
        Engine(roles.model, roles.codec)
    with pytest.raises(MusicRNNError, match="no melody and accompaniment roles"):
        AccompanyEngine(grid.model, grid.codec)
    with pytest.raises(MusicRNNError, match="mode accompany needs a model with melody and accompaniment roles"):
        Conductor(Engine(grid.model, grid.codec), FakeScheduler(), InternalClock(120, start_ns=0),
                  Settings(mode="accompany"), 0)
    cond, _, _ = make(roles_model)
    for mode in MODES:
        if mode != "accompany":
            with pytest.raises(MusicRNNError, match=f"plays mode accompany only, not {mode}"):
                cond.set_mode(mode, 0)
    assert cond.mode == "accompany"


# --- through the server: OSC, the mode CC, model loads, the CLI --------------------------------------
def _osc_session(model: Path, **opts):
    from test_live_osc import OscClient

    out = RecordingOutput()
    srv = Server(load_checkpoint(model), ServeOptions(midi_in="none", midi_out="none", osc_port=0, tempo=240, **opts),
                 output=out).start()
    return srv, out, OscClient(srv.osc.port)


def test_osc_mode_accompany_with_a_model_without_roles_is_an_error_reply_and_the_session_plays_on(
        tiny_grid_model, roles_model) -> None:
    from musicrnn.live import osc

    srv, out, client = _osc_session(tiny_grid_model, mode="duet")
    try:
        client.send("/musicrnn/subscribe")
        client.send("/musicrnn/mode", "accompany")
        assert client.wait_for(lambda: client.of(osc.ERROR))
        reason = client.of(osc.ERROR)[0][0]
        assert reason.startswith("/musicrnn/mode: mode accompany needs a model with melody and accompaniment roles")
        for value in range(32, 64):  # a knob swept through the mode CC's accompany range: refused, told once
            srv._on_midi(mido.Message("control_change", control=23, value=value))
        assert wait_until(lambda: any("refused: mode accompany" in e for e in srv.events))
        assert sum("refused: mode accompany" in e for e in srv.events) == 1
        assert srv.running and srv.error is None and srv.status()["mode"] == "duet"
        assert wait_until(lambda: srv.status()["notes_out"] > 0), "duet plays on"
        # loading a model with roles moves the session to accompany; a model without moves it back
        client.send("/musicrnn/load", str(roles_model))
        assert wait_until(lambda: srv.status()["mode"] == "accompany", timeout=10)
        assert any("mode accompany: the only mode acc.pt plays" in e for e in srv.events)
        client.send("/musicrnn/mode", "duet")
        assert client.wait_for(lambda: len(client.of(osc.ERROR)) == 2)
        assert "plays mode accompany only, not duet" in client.of(osc.ERROR)[1][0]
        before = len(client.of(osc.NOTE_ON_OUT))
        for p in (60, 64, 67):  # a key is heard by the third note: the accompaniment comes in
            srv.note_on(p, 90)
        assert client.wait_for(lambda: len(client.of(osc.NOTE_ON_OUT)) > before), "the accompaniment plays"
        assert srv.status()["activity"] == "accompanying" and srv.status()["heard_key"] == "C:major"
        for p in (60, 64, 67):
            srv.note_off(p)
        client.send("/musicrnn/load", str(tiny_grid_model))
        assert wait_until(lambda: srv.status()["mode"] == MODES[0], timeout=10)
    finally:
        srv.close()
        client.close()
    assert srv.error is None and not hanging_notes(out.messages())


def test_serve_picks_accompany_for_a_model_with_roles_and_refuses_a_mode_the_model_cannot_play(
        roles_model, tiny_grid_model) -> None:
    base = ["serve", "--midi-in", "none", "--midi-out", "none", "--osc-port", "0"]
    result = CliRunner().invoke(cli, [*base, "--model", str(roles_model), "--seconds", "0.3"])
    assert result.exit_code == 0, result.output
    assert "; accompany;" in result.output and "all notes off" in result.output
    for args, message in (([str(tiny_grid_model), "--mode", "accompany"], "error: mode accompany needs a model with "
                                                                           "melody and accompaniment roles"),
                          ([str(roles_model), "--mode", "duet"], "plays mode accompany only, not duet")):
        result = CliRunner().invoke(cli, [*base, "--model", *args, "--seconds", "0.3"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
            result.output


def test_a_swung_melody_off_the_clocks_beat_leaves_the_accompaniment_on_the_beat(roles_model) -> None:
    """The grid follower is for answers to a call: in accompany mode a swung melody played a fifth
    of a beat off the clock once moved every frame onto the player's "beat" (30 ms late over JACK)
    and would delay off-beat eighths; the accompaniment's frames stay the clock's."""
    cond, engine, sched = make(roles_model, follow="grid", answer_bars=1)
    off = BEAT // 5
    melody = []
    for phrase in (0, 16):  # two phrases, a rest between (the accompaniment starts again, the grid heard)
        for i in range(16):  # swung eighths: on the beat and 2/3 of the way through it
            start = 2 * S + off + (phrase + i // 2) * BEAT + (i % 2) * (2 * BEAT // 3)
            melody.append((start, start + BEAT // 4, 60 + (i % 5), 90))
    perform(cond, melody, 2 * S + 32 * BEAT)
    assert cond.listener.hear_grid() is not None, "the grid was heard"
    played = sched.notes()
    assert [n for n in played if n[2] > 0], "the model accompanied"
    assert all(t % FRAME == 0 for t, _, _ in played), "every note on a frame of the clock"
    check_closed(played)


def test_the_chords_follower_leans_new_notes_to_the_chord_the_melody_sounds_in_the_beat(roles_model) -> None:
    from musicrnn.harmony import CHORD_BIAS

    cond, engine, sched = make(roles_model, follow="chords")
    on = engine.codec.a_on0 - engine.codec.min_pitch  # + pitch: that pitch's A_ON token
    c_then_f = [(60, 0), (64, 1), (67, 2), (72, 3), (65, 4), (69, 5)]  # C E G C (C major heard), then F A
    melody = [(2 * S + b * BEAT, 2 * S + b * BEAT + BEAT - 20 * MS, p, 90) for p, b in c_then_f]
    perform(cond, melody[:4], 2 * S + 3 * BEAT + FRAME)
    bias = engine.logit_bias  # C major under C E G C
    assert bias is not None and bias[on + 64] - bias[on + 65] == pytest.approx(CHORD_BIAS, abs=1e-3)
    perform(cond, melody[4:], 2 * S + 5 * BEAT + FRAME)  # the beat of A: F major covers it (F before it)
    bias = engine.logit_bias
    assert bias[on + 65] - bias[on + 64] == pytest.approx(CHORD_BIAS, abs=1e-3) and bias[on + 69] == bias[on + 60]
    # switched off (live: /musicrnn/follow chords 0), no nudge at all
    cond.listener.follow.set("chords", 0.0)
    run(cond, 2 * S + 5 * BEAT + 2 * FRAME, start_ns=2 * S + 5 * BEAT + FRAME)
    assert engine.logit_bias is None
