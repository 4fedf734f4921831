"""Accompany mode, live (issue 17): how late the accompaniment sounds after the beat position it
belongs to, over JACK, and the model's work per frame. One torch thread, this CPU.

1. Model time per frame, in process, through the engine ``musicrnn serve --mode accompany``
   runs (:class:`~musicrnn.live.accompany.AccompanyEngine`): a tune is played into it frame by
   frame, its notes struck exactly on their beats.
   - unprepared: each frame's whole work at its deadline (melody part, then the accompaniment
     sampled until STEP);
   - after the deadline, prepared ahead: as the server runs it, each frame worked ahead in idle
     time (``prepare_ahead``) before its melody notes arrive, so a frame whose melody is held as
     prepared costs nothing and one with a new note (struck on the beat, after the preparation)
     is sampled then;
   and the tokens per frame and the time of one model step.
2. Over JACK (needs ``jackd``; a private dummy server is started and stopped here): ``musicrnn
   serve --mode accompany --clock midi`` as a subprocess; a "DAW" client sends MIDI clock
   (start, 24 pulses a beat) and plays the tune into its input on the clock's beats; a recorder
   stamps the accompaniment's note-ons in JACK's thread. Lateness of a note = its arrival minus
   the frame position it belongs to (the DAW's grid: first pulse = beat 0); the goal is p99 at
   most 15 ms. Also: every note-on got its note-off (with the rest after the tune, before the
   server stops), and the Krumhansl key of the accompaniment against the tune's.

The tune and the DAW are shared with tests/test_live_jack.py (pytest puts benchmarks/ on the path).

Run: python benchmarks/accompany_live.py [--model accompany] [--bars 16] [--tempo 100] [--key Eb:major] [--json]
Quick check that it runs: python benchmarks/accompany_live.py --model X.pt --bars 2
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass

import mido
import numpy as np

from musicrnn.live.clock import PPQN

from live_session import Session, now_ns, sounding

S = 1e9
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 11)  # harmonic minor
# scale degrees (0 = tonic) and beats per note, one 4/4 bar per chord: I, IV, V, I
PHRASE = (
    ((0, 1), (2, 1), (4, 1), (2, 1)),
    ((3, 1), (5, 0.5), (4, 0.5), (3, 1), (5, 1)),
    ((4, 1), (6, 0.5), (8, 0.5), (6, 1), (4, 1)),
    ((7, 2), (4, 1), (2, 1)),
)
GATE = 0.9  # a tune note sounds for this share of its length
COUNT_IN_BEATS = 4  # the clock runs a bar before the tune


def pct(values_ns) -> dict:
    """n, p50, p99, max of nanosecond values, in ms."""
    a = np.asarray(list(values_ns), dtype=np.float64) / 1e6
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


@dataclass(frozen=True)
class TuneNote:
    beat: float  # onset, beats from the tune's start
    beats: float  # length
    pitch: int
    velocity: int


def tune(tonic: int, mode: str = "major", bars: int = 4, octave: int = 5, velocity: int = 90) -> list[TuneNote]:
    """A simple tune in the key of ``tonic`` (pitch class) and ``mode``, ``bars`` 4/4 bars long
    (a four-bar phrase over I-IV-V-I, repeated), around octave ``octave`` (5: C5..)."""
    scale = MAJOR if mode == "major" else MINOR
    base = 12 * octave + tonic
    notes, t = [], 0.0
    for b in range(bars):
        for degree, beats in PHRASE[b % len(PHRASE)]:
            pitch = base + 12 * (degree // 7) + scale[degree % 7]
            notes.append(TuneNote(t, beats * GATE, pitch, velocity))
            t += beats
    return notes


class Daw:
    """The DAW in front of ``musicrnn serve --clock midi``: from its own thread, MIDI clock (start,
    then 24 pulses a beat at ``bpm``) and the tune's notes on the clock's beats (after a count-in
    of ``COUNT_IN_BEATS``), in one time-ordered stream on ``port``. ``origin``: when its first pulse
    (beat 0) was sent; :meth:`beat_ns` gives any beat's time."""

    def __init__(self, port, bpm: float, notes: list[TuneNote], tail_beats: float = 8.0) -> None:
        self.port, self.bpm, self.notes = port, bpm, notes
        self.beat_s = 60.0 / bpm
        end = max((n.beat + n.beats for n in notes), default=0.0) + COUNT_IN_BEATS + tail_beats
        self.pulses = int(end * PPQN) + 1
        self.origin: int | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daw", daemon=True)

    def start(self) -> Daw:
        self._thread.start()
        return self

    def beat_ns(self, beat: float) -> int:
        assert self.origin is not None
        return self.origin + int(round(beat * self.beat_s * S))

    def tune_beat(self, beat: float) -> float:
        """The clock's beat of a beat of the tune."""
        return beat + COUNT_IN_BEATS

    def _events(self) -> list[tuple[float, int, mido.Message]]:
        """(seconds after the first pulse, order, message): pulses first at the same time, then offs, then ons."""
        ev = [(i * self.beat_s / PPQN, 0, mido.Message("clock")) for i in range(self.pulses)]
        for n in self.notes:
            on = self.tune_beat(n.beat) * self.beat_s
            ev.append((on, 2, mido.Message("note_on", note=n.pitch, velocity=n.velocity)))
            ev.append((on + n.beats * self.beat_s, 1, mido.Message("note_off", note=n.pitch)))
        return sorted(ev, key=lambda e: (e[0], e[1]))

    def _run(self) -> None:
        events = self._events()
        self.port.send(mido.Message("start"))
        t0 = time.perf_counter() + 0.01
        try:
            for at, _, msg in events:
                if self._stop.is_set():
                    break
                target = t0 + at
                while (left := target - time.perf_counter()) > 0:
                    time.sleep(min(left, 0.002) if left > 0.0005 else 0)
                self.port.send(msg)
                if self.origin is None:
                    self.origin = now_ns()
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def lateness_ns(onsets: list[int], origin: int, frame_ns: float) -> list[float]:
    """Each onset's time after the nearest frame position of the grid from ``origin`` (ns;
    negative: early)."""
    x = (np.asarray(onsets, np.float64) - origin) / frame_ns
    return list((x - np.round(x)) * frame_ns)


def record_notes(messages, t_from: int) -> tuple[list[int], list[float], list[int]]:
    """(pitches, lengths in ns, onsets) of the notes in ``messages`` ((time, message)) from ``t_from``."""
    open_: dict[int, int] = {}
    pitches, lengths, onsets = [], [], []
    for t, m in messages:
        if t < t_from:
            continue
        if m.type == "note_on" and m.velocity > 0:
            open_[m.note] = t
            onsets.append(t)
        elif m.type in ("note_on", "note_off") and m.note in open_:
            pitches.append(m.note)
            lengths.append(t - open_.pop(m.note))
    return pitches, lengths, onsets


# --- 1. in process --------------------------------------------------------------------------------
def frame_times(model: str, notes: list[TuneNote], spb_tune_reps: int = 4, seed: int = 0) -> dict:
    """The engine's work per frame, unprepared and prepared ahead (see the module docstring)."""
    from musicrnn.checkpoint import load_checkpoint
    from musicrnn.live.accompany import AccompanyEngine
    from musicrnn.live.engine import configure_torch_for_live

    configure_torch_for_live()
    ckpt = load_checkpoint(model)
    codec = ckpt.codec
    spb = int(codec.steps_per_unit)
    length = max(n.beat + n.beats for n in notes)
    out = {}
    for name, prepared in (("unprepared", False), ("prepared_ahead", True)):
        engine = AccompanyEngine(ckpt.model, codec, seed=seed)
        events = sorted([(n.beat, 1, n.pitch, n.velocity) for n in notes] + [(n.beat + n.beats, 0, n.pitch, 0) for n in notes])
        tokens, work, steps0 = [], [], engine.steps
        for rep in range(spb_tune_reps):
            offset = rep * (length + 1)
            i = 0
            for k in range(int(round(offset * spb)), int(round((offset + length + 1) * spb))):
                t = k / spb
                if prepared:
                    engine.prepare_ahead()  # idle time before the frame's notes arrive
                while i < len(events) and events[i][0] + offset <= t + 1e-9:
                    at, on, pitch, vel = events[i]
                    (engine.human_note_on(at + offset, pitch, vel) if on else engine.human_note_off(at + offset, pitch))
                    i += 1
                before, t0 = engine.steps, now_ns()
                engine.next_time(t)
                engine.decide()
                work.append(now_ns() - t0)
                tokens.append(engine.steps - before)
        out[name] = {"frames": len(tokens), "after_deadline_ms": pct(work),
                     "steps_per_frame": round((engine.steps - steps0) / max(1, len(tokens)), 2),
                     "steps_after_deadline_per_frame": round(float(np.mean(tokens)), 2)}
        med, _ = engine.step_ms()
        out["step_ms_p50"] = round(med, 4)
    out["model"] = model
    out["params"] = ckpt.model.num_parameters
    return out


# --- 2. over JACK ---------------------------------------------------------------------------------
def jack_session(model: str, notes: list[TuneNote], bpm: float, rest_bars: float, seed: int, key) -> dict:
    """Play the tune into ``serve --mode accompany --clock midi`` over JACK; time the accompaniment."""
    from musicrnn.checkpoint import load_checkpoint
    from musicrnn.tonality import estimate_key, in_scale_ratio

    spb = int(load_checkpoint(model).codec.steps_per_unit)
    sess = Session(model, "--mode", "accompany", "--clock", "midi", "--tempo", f"{bpm:g}", "--answer-bars",
                   f"{rest_bars:g}", "--seed", str(seed))
    rec = sess.rec
    try:
        tail = rest_bars * 4 + 2
        daw = Daw(sess.player, bpm, notes, tail_beats=tail).start()
        daw.done.wait(max(n.beat + n.beats for n in notes) * 60 / bpm + (COUNT_IN_BEATS + tail) * 60 / bpm + 30)
        with rec.lock:  # type: ignore[union-attr]
            left_on = sorted(sounding(m for _, m in rec.messages))  # type: ignore[union-attr]  # closed by itself?
    finally:
        sess.close()
    with rec.lock:  # type: ignore[union-attr]
        after = list(rec.messages)  # type: ignore[union-attr]
    pitches, lengths, onsets = record_notes(after, 0)
    late = lateness_ns(onsets, daw.origin or 0, 60e9 / bpm / spb)
    tune_key, key = key, (estimate_key(pitches, lengths) if pitches else None)
    return {"tempo": bpm, "frames_per_beat": spb, "notes": len(onsets), "lateness": pct(late),
            "within_15ms": round(float(np.mean(np.abs(late) <= 15e6)) if late else 0.0, 4),
            "early_over_2ms": int(np.sum(np.asarray(late) < -2e6)) if late else 0,
            "left_on_before_exit": left_on, "left_on_after_exit": sorted(sounding(m for _, m in after)),
            "accompaniment_key": key.name if key else "-", "in_scale": round(in_scale_ratio(pitches, tune_key), 3)}


def main() -> None:
    from musicrnn.tonality import parse_key

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="accompany")
    ap.add_argument("--bars", type=int, default=16, help="bars of the tune")
    ap.add_argument("--tempo", type=float, default=100.0)
    ap.add_argument("--key", default="Eb:major", help="the tune's key")
    ap.add_argument("--rest-bars", type=float, default=1.0, help="serve --answer-bars: the rest after the tune")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-jack", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    key = parse_key(args.key)
    notes = tune(key.tonic, key.mode, args.bars)
    result: dict = {"cpu": platform.processor() or platform.machine(), "tune": f"{args.bars} bars in {key.name}",
                    "in_process": frame_times(args.model, notes, seed=args.seed)}
    if args.no_jack:
        result["jack"] = {"skipped": "--no-jack"}
    elif shutil.which("jackd") is None:
        result["jack"] = {"skipped": "jackd not installed (apt-get install jackd2)"}
    else:
        result["jack"] = jack_session(args.model, notes, args.tempo, args.rest_bars, args.seed, key)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    p = result["in_process"]
    print(f"one torch thread, {result['cpu']}; {p['model']} ({p['params']:,} parameters), one model step p50 "
          f"{p['step_ms_p50']:.3f} ms; tune: {result['tune']}")
    for name in ("unprepared", "prepared_ahead"):
        r = p[name]
        w = r["after_deadline_ms"]
        print(f"  {name:<15} model work after the deadline p50 {w['p50']:.3f} / p99 {w['p99']:.3f} / max {w['max']:.3f} ms; "
              f"steps per frame {r['steps_per_frame']} ({r['steps_after_deadline_per_frame']} after the deadline)")
    j = result["jack"]
    if "skipped" in j:
        print(f"JACK: skipped: {j['skipped']}")
        return
    late = j["lateness"]
    print(f"JACK, {j['tempo']:g} BPM, MIDI clock: {j['notes']} accompaniment notes, sounding after their beat position "
          f"p50 {late.get('p50', float('nan')):.2f} / p99 {late.get('p99', float('nan')):.2f} / max "
          f"{late.get('max', float('nan')):.2f} ms (goal p99 <= 15); within 15 ms {j['within_15ms']:.1%}; "
          f"left on before exit {j['left_on_before_exit']}, after {j['left_on_after_exit']}; accompaniment key "
          f"{j['accompaniment_key']}, {j['in_scale']:.0%} of its notes in the tune's scale")


if __name__ == "__main__":
    from musicrnn.errors import MusicRNNError

    try:
        main()
    except MusicRNNError as exc:
        sys.exit(f"error: {exc}")
