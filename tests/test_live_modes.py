"""Call-response, duet and autoplay, driven with made-up times (no threads, no ports): when the
answer starts and ends, that it lands on the beat grid, and that every change ends the model's
notes."""

from __future__ import annotations

import pytest

from musicrnn.checkpoint import load_checkpoint
from musicrnn.codecs import KIND_SHIFT
from musicrnn.listening import Follow, Listener
from musicrnn.live.clock import PPQN, InternalClock, MidiClock
from musicrnn.live.engine import Engine
from musicrnn.live.modes import Conductor, Settings
from musicrnn.sample import SamplingConfig

from helpers.live import FakeScheduler, run

S = 1_000_000_000
BEAT = S // 2  # 120 BPM


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


@pytest.fixture(params=["grid", "perf"])
def ckpt(request, tiny_grid_model, tiny_performance_model):
    return load_checkpoint(tiny_grid_model if request.param == "grid" else tiny_performance_model)


def make(ckpt, clock=None, follow: str = "none", **settings):
    """A conductor over a tiny model; its followers off unless asked (these tests check timing and
    note bookkeeping in the model's own pitches; tests/test_listening.py checks the followers)."""
    clock = clock or InternalClock(120, start_ns=0)
    sched = FakeScheduler()
    engine = Engine(ckpt.model, ckpt.codec, SamplingConfig(temperature=1.2), seed=2)
    return Conductor(engine, sched, clock, Settings(**settings), t_ns=0, listener=Listener(Follow.parse(follow))), sched


def play_phrase(cond: Conductor, start_ns: int, pitches=(60, 64, 67, 72), dur=BEAT // 2) -> int:
    t = start_ns
    for p in pitches:
        cond.tick(t)
        cond.human_note(t, p, 90)
        cond.tick(t + dur)
        cond.human_note(t + dur, p, 0)
        t += BEAT
    return t - BEAT + dur  # the last release


def check_closed(notes) -> None:
    on: set[int] = set()
    for _, p, v in sorted(notes, key=lambda n: (n[0], n[2] > 0)):
        if v:
            on.add(p)
        else:
            on.discard(p)
    assert not on, f"model notes left on: {on}"


def test_call_response_answers_after_the_silence_on_the_next_beat_for_the_answer_length(ckpt) -> None:
    cond, sched = make(ckpt, silence_beats=2, answer_bars=1)
    last = play_phrase(cond, int(0.1 * S))  # released at 1.85 s = beat 3.7
    run(cond, last + 2 * BEAT - 20_000_000, start_ns=last)
    assert cond.activity == "listening" and not sched.notes()  # not before the silence is over
    run(cond, 6 * S, start_ns=last + 2 * BEAT - 20_000_000)
    notes = sched.notes()
    start = 6 * BEAT  # silence ends at beat 5.7: the answer starts on beat 6
    end = start + 4 * BEAT
    ons = [t for t, _, v in notes if v]
    assert ons and min(ons) == start  # begins with a note, on the beat
    assert all(start <= t <= end for t, _, _ in notes)
    if ckpt.codec.name == "grid":
        assert all((t - start) % (BEAT // 2) == 0 for t in ons)  # on the grid steps
    check_closed(notes)
    assert cond.activity == "listening" and not cond.engine.model_notes


def test_player_coming_back_stops_the_answer_at_once(ckpt) -> None:
    cond, sched = make(ckpt, silence_beats=1, answer_bars=4)
    last = play_phrase(cond, 0)
    run(cond, last + 3 * BEAT, start_ns=last)
    assert cond.activity == "answering"
    mark = len(sched.log)
    back = last + 3 * BEAT + 1000
    cond.human_note(back, 62, 100)
    assert sched.log[mark] == ("stop",)
    assert cond.activity == "listening" and not cond.engine.model_notes
    run(cond, back + BEAT // 2, start_ns=back)
    assert not [n for n in sched.notes(mark) if n[2]]  # no new model notes while the player plays


def test_end_of_call_control_answers_on_the_next_beat_or_at_once(ckpt) -> None:
    cond, sched = make(ckpt, silence_beats=8)
    cond.human_note(0, 60, 90)
    t = int(1.3 * BEAT)
    cond.end_call(t)  # the key is still held: the control decides
    run(cond, 3 * BEAT, start_ns=t)
    assert min(t for t, _, v in sched.notes() if v) == 2 * BEAT

    cond, sched = make(ckpt, silence_beats=8, answer_start="now")
    cond.human_note(0, 60, 90)
    t = int(1.3 * BEAT)
    cond.end_call(t)
    cond.tick(t)
    assert min(t for t, _, v in sched.notes() if v) == pytest.approx(t, abs=1000)


def test_duet_plays_along_hearing_the_player_and_autoplay_does_not_listen(ckpt) -> None:
    cond, sched = make(ckpt, mode="duet")
    run(cond, 2 * S)
    cond.human_note(2 * S, 60, 90)
    assert 60 in cond.engine.human_notes
    run(cond, 4 * S, start_ns=2 * S)
    assert cond.activity == "playing"
    mark = len(sched.log)
    cond.set_mode("autoplay", 4 * S)
    assert sched.log[mark] == ("stop",) and not cond.engine.model_notes and not cond.engine.human_notes
    cond.human_note(4 * S + 1, 62, 90)
    assert 62 not in cond.engine.human_notes
    run(cond, 8 * S, start_ns=4 * S)
    if ckpt.codec.name == "grid":
        assert [n for n in sched.notes(mark) if n[2]], "autoplay plays on its own"
    cond.panic(8 * S)
    assert sched.log[-1] == ("panic",) and not cond.engine.model_notes
    cond.reset(8 * S)
    assert cond.activity == "playing"


def test_stopped_midi_clock_silences_the_model_and_it_resumes_on_start(ckpt) -> None:
    clock = MidiClock(120)
    cond, sched = make(ckpt, clock=clock, mode="autoplay")
    run(cond, S)
    assert cond.activity == "waiting for clock" and not sched.notes()
    period = S // (2 * PPQN)
    clock.feed("start", S)
    t = S
    for _ in range(4 * PPQN):  # two seconds of clock, ticking the conductor as pulses arrive
        clock.feed("clock", t)
        cond.tick(t)
        t += period
    assert cond.activity == "playing"
    clock.feed("stop", t)
    cond.tick(t + 1000)
    assert cond.activity == "waiting for clock" and not cond.engine.model_notes
    if ckpt.codec.name == "grid":
        assert [n for n in sched.notes() if n[2]], "played while the clock ran"
        assert ("stop",) in sched.log


def test_stop_silences_every_mode_until_generate_which_answers_for_the_bars_given(ckpt) -> None:
    cond, sched = make(ckpt, mode="autoplay")
    run(cond, 2 * S)
    mark = len(sched.log)
    cond.stop(2 * S)
    assert sched.log[mark] == ("stop",) and not cond.engine.model_notes and cond.activity == "stopped"
    run(cond, 4 * S, start_ns=2 * S)
    assert not [n for n in sched.notes(mark) if n[2]], "silent after stop"
    cond.generate(4 * S)
    run(cond, 8 * S, start_ns=4 * S)
    assert cond.activity == "playing"
    if ckpt.codec.name == "grid":
        assert [n for n in sched.notes(mark) if n[2]], "plays again after generate"

    cond, sched = make(ckpt, silence_beats=1, answer_start="now")
    cond.stop(0)
    last = play_phrase(cond, 0)
    run(cond, last + 4 * BEAT, start_ns=last)
    assert cond.activity == "stopped" and not sched.notes(), "no answer while stopped"
    t = last + 4 * BEAT
    cond.generate(t, bars=0.5)  # two beats
    run(cond, t + 4 * BEAT, start_ns=t)
    notes = sched.notes()
    assert notes and min(n[0] for n in notes if n[2]) == pytest.approx(t, abs=1000)
    assert max(n[0] for n in notes) <= t + 2 * BEAT + 1000
    check_closed(notes)
    assert cond.activity == "listening"


def test_grid_answer_note_reaches_the_scheduler_while_its_frame_is_still_being_decided(tiny_grid_model) -> None:
    ckpt = load_checkpoint(tiny_grid_model)
    cond, sched = make(ckpt, answer_start="now", answer_bars=2)
    engine = cond.engine
    in_decide = {"now": False}
    seen: list[bool] = []
    decide = engine.decide

    def spy(*args, **kwargs):
        in_decide["now"] = True
        try:
            return decide(*args, **kwargs)
        finally:
            in_decide["now"] = False

    engine.decide = spy
    play = sched.play
    sched.play = lambda notes: (seen.extend(in_decide["now"] for _, _, v in notes if v > 0), play(notes))
    last = play_phrase(cond, 0)
    cond.end_call(last + 1000)
    run(cond, last + 4 * S, start_ns=last + 1000)
    notes = sched.notes()
    assert seen and seen[0]  # the answer's first note went out from inside the frame's decision
    assert any(seen)
    ons = [(t, p) for t, p, v in notes if v]
    assert len(ons) == len(set(ons))  # no note handed twice
    check_closed(notes + [(last + 10 * S, p, 0) for p in cond.engine.model_notes])
    assert cond.notes_out == len(ons)


def test_grid_frame_decided_ahead_waits_for_player_events_but_not_past_its_time(tiny_grid_model) -> None:
    ckpt = load_checkpoint(tiny_grid_model)
    cond, sched = make(ckpt, mode="autoplay")
    cond.interrupt = lambda: True  # an event is always waiting
    cond.tick(0)
    assert cond.decisions == 1  # the frame due now is decided regardless
    step_ns = BEAT // ckpt.codec.steps_per_beat
    t = step_ns - int(0.4 * step_ns)  # the next frame's lookahead: decided ahead, so it gives way
    cond.tick(t)
    assert cond.decisions == 1 and cond.next_wakeup() == t
    cond.tick(step_ns - 1_000_000)  # 1 ms before its time: decided, waiting events or not
    assert cond.decisions == 2
    cond.interrupt = None
    run(cond, 3 * S, start_ns=step_ns)
    check_closed(sched.notes() + [(10 * S, p, 0) for p in cond.engine.model_notes])


def test_event_model_answering_now_starts_from_the_shifts_stepped_in_idle_time(tiny_performance_model) -> None:
    """answer_start="now", event codec: in idle time (:meth:`Conductor.prepare`) the engine steps
    the shifts to the step an answer would start on, and the conductor wakes when that step
    comes to move them on; the end of the call then plays the very notes a session that never
    prepared plays, its first note with no shift stepped after the call's end."""
    ckpt = load_checkpoint(tiny_performance_model)
    step_ns = int(BEAT / ckpt.codec.steps_per_unit)
    sessions = [make(ckpt, silence_beats=8, answer_start="now") for _ in range(2)]
    (plain, plain_sched), (ready, ready_sched) = sessions
    stepped: list[int] = []
    step = ready.engine._step
    ready.engine._step = lambda stepper, tok: (stepped.append(int(tok)), step(stepper, tok))[1]
    first_at: list[int] = []
    play = ready_sched.play
    ready_sched.play = lambda notes: (first_at.append(len(stepped)) if any(v for _, _, v in notes) else None, play(notes))
    for cond in (plain, ready):
        last = play_phrase(cond, 0)
    t = last + step_ns // 3
    for _ in range(4):  # idle: tick, prepare, wake at the answer's step (it moves on)
        ready.tick(t)
        assert ready.prepare()
        edge = ready.next_wakeup()
        assert edge == ready.timebase.to_ns(ready.play.answer_step(ready)) and t < edge <= t + step_ns
        t = edge + 1000
    t_end = t + step_ns // 2  # the call ends within the step after the one prepared for last
    mark = len(stepped)
    for cond in (plain, ready):
        cond.end_call(t_end)
        cond.tick(t_end)
    c = ready.engine.codec
    assert first_at and all(c.token_kind[x] != KIND_SHIFT for x in stepped[mark:first_at[0]])
    for cond in (plain, ready):
        run(cond, t_end + 4 * BEAT, start_ns=t_end)
    assert ready_sched.notes() == plain_sched.notes()
    assert min(n[0] for n in ready_sched.notes() if n[2]) == pytest.approx(t_end, abs=1000)
