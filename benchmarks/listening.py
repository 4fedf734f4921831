"""Does the partner listen? A scripted player against the real ``musicrnn serve`` (issue 15).

``musicrnn serve --midi-in none --midi-out none --osc-port 0 --answer-start now`` runs as a
subprocess (live_session.Session, OSC only); the player talks to it over OSC on 127.0.0.1 and a
subscriber (live_session.NoteListener) records ``/musicrnn/out/note_on``/``note_off`` with their
arrival times. Each trial: ``/musicrnn/reset``; a 2-bar call played in real time with
``/musicrnn/note_on``/``note_off`` (an arpeggio 1-3-5-8-5-3-1, then a scale run up and down;
minor: the run goes up with the raised 7th and down with the natural 7th); at the end of its 2nd
bar ``/musicrnn/generate 4``; the answer is recorded for 4 bars and a margin.

Trials: all 24 keys, each as a sparse call (random quarters and eighths) and a busy one (mostly
sixteenths), centred on C2, C3, C4, C5, C6 and at velocity 30, 60, 90, 120 in turn (5 and 4 are
coprime: every 20 trials cover every register with every level); 48 trials, in a seeded order.
Each call has a feel, in turn straight, swing or triplet (3 is coprime with 4 and 5 too): a swung
call's eighths are long-short (2/3 + 1/3 of the beat; busy: mostly swung eighths), a triplet
call's are triplet eighths (busy: mostly triplets); quarters fill the rest. ``--quick``: 4 keys,
each sparse and busy in every feel (24 trials).

Measures (aggregated over trials):
(a) the answer's key (Krumhansl-Schmuckler, duration weighted: musicrnn.tonality.estimate_key)
    equals the call's: share of the 24 keys whose every trial's answer is in it, share of trials;
(b) share of all answer notes in the call's scale (minor: natural minor plus the raised 7th);
(c) |mean answer pitch - mean call pitch|, averaged per register; the worst register;
(d) |mean answer velocity - mean call velocity|, averaged; and per level, the worst level;
(e) answer notes per beat / call notes per beat, for sparse and busy calls;
(f) motif: overlap (histogram intersection, 0-1) of onset positions within the bar on a 16th
    grid (call: from its first note; answer: from the generate message, where its grid starts)
    and of interval 2-grams of the top line (the highest note at each onset), between each
    answer and its own call, and between the same answer and another trial's call of the same
    density (a seeded derangement): the answer should be closer to its own call;
(g) grid: share of the answer's onsets (a chord counts once) within 1/24 beat of the call's grid
    (straight: sixteenths; swing: the beat and 2/3 of it; triplet: thirds of the beat), counted
    from the generate message (the call's beat 9), per feel.

Configurations: the model with every follower on (serve's default), the model with the
followers off (``--follow none --velocity model``), and a baseline computed here: a partner
blind to key, register and dynamics (random notes of C major in 48-84 at velocity 80, onsets at
random sixteenths, at the call's note rate).

Run: python benchmarks/listening.py [--model CKPT] [--tempo 200] [--seed 0] [--json PATH]
Quick check that it runs: python benchmarks/listening.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from musicrnn.tonality import ALL_KEYS, Key, estimate_key, in_scale_ratio

from live_session import Session, now_ns  # benchmarks/ is the script's own folder (and on pytest's pythonpath)

CENTRES = {"C2": 36, "C3": 48, "C4": 60, "C5": 72, "C6": 84}
LEVELS = (30, 60, 90, 120)
CALL_BEATS = 8.0  # 2 bars of 4/4
ANSWER_BARS = 4
BEATS_PER_BAR = 4
MARGIN_S = 0.6  # after the answer's last beat: its note-offs arrive
GATE = 0.85  # a call note sounds for this share of its length
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11, 12)
MINOR_UP = (0, 2, 3, 5, 7, 8, 11, 12)  # harmonic minor going up (the raised 7th)
MINOR_DOWN = (12, 10, 8, 7, 5, 3, 2, 0)  # natural minor coming down
ARPEGGIO = (0, 2, 4, 7, 4, 2, 0)  # scale indices of 1-3-5-8-5-3-1
CONFIGS = {"on": (), "off": ("--follow", "none", "--velocity", "model")}
FEELS = ("straight", "swing", "triplet")
SWING = 2 / 3  # a swung call's off-beat eighth, in beats after its beat
GRIDS = {"straight": (0.0, 0.25, 0.5, 0.75), "swing": (0.0, SWING), "triplet": (0.0, 1 / 3, 2 / 3)}
ON_GRID = 1 / 24  # beats: an answer onset this close to a point of the call's grid is on it
LABELS = {"on": "model, followers on", "off": "model, followers off", "baseline": "baseline (blind)"}


@dataclass
class Note:
    onset: float  # beats from the start of the call (or of the answer)
    dur: float  # beats
    pitch: int
    velocity: int


@dataclass
class Trial:
    key: Key
    density: str  # sparse | busy
    register: str  # C2 .. C6
    level: int
    feel: str = "straight"  # straight | swing | triplet
    call: list[Note] = field(default_factory=list)


# --- the calls ----------------------------------------------------------------------------------
def call_rhythm(density: str, rng: np.random.Generator, feel: str = "straight") -> list[float]:
    """Durations (beats) filling 2 bars: sparse = quarters and eighths, busy = mostly sixteenths;
    swing and triplet feels: a beat is a quarter, a swung pair of eighths (long-short) or three
    triplet eighths (sparse: 60 % of beats, busy: 85 %)."""
    if feel != "straight":
        split = {"swing": [SWING, 1 - SWING], "triplet": [1 / 3] * 3}[feel]
        share = 0.6 if density == "sparse" else 0.85
        return [d for _ in range(int(CALL_BEATS)) for d in (split if rng.random() < share else [1.0])]
    durs: list[float] = []
    for _ in range(int(CALL_BEATS // BEATS_PER_BAR)):
        left = float(BEATS_PER_BAR)
        while left > 1e-9:
            if density == "sparse":
                d = 1.0 if left >= 1 and rng.random() < 0.4 else 0.5
            else:
                d = 0.5 if left >= 0.5 and rng.random() < 0.15 else 0.25
            durs.append(d)
            left -= d
    return durs


def melody_offsets(mode: str, n: int) -> list[int]:
    """Semitones above the tonic: the arpeggio, then the scale up and down, as long as needed."""
    up = MAJOR_STEPS if mode == "major" else MINOR_UP
    down = tuple(reversed(MAJOR_STEPS)) if mode == "major" else MINOR_DOWN
    line = [up[i] for i in ARPEGGIO] + list(up[1:]) + list(down[1:])
    return [line[i % len(line)] for i in range(n)]


def make_call(key: Key, density: str, centre: int, level: int, rng: np.random.Generator,
              feel: str = "straight") -> list[Note]:
    """A 2-bar call in ``key`` whose mean pitch is within a tritone of ``centre``."""
    durs = call_rhythm(density, rng, feel)
    offsets = melody_offsets(key.mode, len(durs))
    mean = float(np.mean(offsets))
    tonic = min((p for p in range(128) if p % 12 == key.tonic), key=lambda p: abs(p + mean - centre))
    notes, t = [], 0.0
    for d, off in zip(durs, offsets):
        notes.append(Note(t, d * GATE, tonic + off, level))
        t += d
    return notes


def make_trials(quick: bool, seed: int) -> list[Trial]:
    rng = np.random.default_rng(seed)
    keys = list(ALL_KEYS)
    if quick:  # 4 keys (2 major, 2 minor, far apart), both densities, every feel
        keys = [Key(0, "major"), Key(6, "major"), Key(9, "minor"), Key(3, "minor")]
    pairs = [(k, d, f) for k in keys for d in ("sparse", "busy") for f in (FEELS if quick else (None,))]
    order = rng.permutation(len(pairs))
    trials = []
    for i, j in enumerate(order):
        key, density, feel = pairs[j]
        feel = feel or FEELS[i % len(FEELS)]
        reg = list(CENTRES)[i % len(CENTRES)]
        level = LEVELS[i % len(LEVELS)]
        trials.append(Trial(key, density, reg, level, feel, make_call(key, density, CENTRES[reg], level, rng, feel)))
    return trials


def derangement(trials: list[Trial], rng: np.random.Generator) -> list[int]:
    """partner[i] != i: the "shuffled call" each answer is also compared with, another call of
    the same density (else a busy call's many onsets would decide the comparison, not the motif)."""
    partner = list(range(len(trials)))
    for density in ("sparse", "busy"):
        group = [i for i, t in enumerate(trials) if t.density == density]
        if len(group) < 2:
            continue
        order = [group[k] for k in rng.permutation(len(group))]
        for k, i in enumerate(order):
            partner[i] = order[(k + 1) % len(order)]
    return partner


# --- playing through the server ------------------------------------------------------------------
def _sleep_until(t_ns: int) -> int:
    """Sleep until ``t_ns`` (monotonic); returns how late we woke, in ns."""
    while True:
        left = t_ns - now_ns()
        if left <= 0:
            return -left
        time.sleep(min(left / 1e9, 0.002) if left > 3e6 else 0)


def play_trial(sess: Session, trial: Trial, tempo: float) -> dict:
    """Reset, play the call in real time, ask for the answer, record it (in beats from the generate)."""
    osc, rec = sess.osc, sess.listener
    assert osc is not None and rec is not None
    spb = 60.0 / tempo
    osc.send("/musicrnn/reset")
    osc.request("/musicrnn/status")  # every earlier message has taken effect
    time.sleep(0.2)
    events = sorted([(n.onset, 1, n.pitch, n.velocity) for n in trial.call] +
                    [(n.onset + n.dur, 0, n.pitch, 0) for n in trial.call])  # offs first at equal times
    t0 = now_ns() + int(0.05e9)
    late = 0
    for beat, on, pitch, vel in events:
        late = max(late, _sleep_until(t0 + int(beat * spb * 1e9)))
        if on:
            osc.send("/musicrnn/note_on", pitch, vel)
        else:
            osc.send("/musicrnn/note_off", pitch)
    t_gen = t0 + int(CALL_BEATS * spb * 1e9)
    late = max(late, _sleep_until(t_gen))
    t_gen = now_ns()
    osc.send("/musicrnn/generate", float(ANSWER_BARS))
    _sleep_until(t_gen + int((ANSWER_BARS * BEATS_PER_BAR * spb + MARGIN_S) * 1e9))
    reply = osc.request("/musicrnn/status")
    args = reply[1] if reply and reply[0] == "/musicrnn/status" else []
    heard = (args[11], args[12]) if len(args) > 12 else ("?", 0)
    with rec.lock:
        msgs = [(t, m) for t, m in rec.messages if t >= t_gen]
    answer, unclosed = notes_from(msgs, t_gen, spb)
    return {"answer": answer, "unclosed": unclosed, "late_ms": round(late / 1e6, 2), "heard_key": heard[0],
            "heard_level": heard[1], "heard_grid": args[13] if len(args) > 13 else "?"}


def notes_from(msgs, t_gen: int, spb: float) -> tuple[list[Note], int]:
    """Pair note-ons and note-offs into notes (beats from ``t_gen``); notes never closed end at the last message."""
    open_: dict[int, tuple[int, int]] = {}
    notes: list[Note] = []
    beat = lambda t: (t - t_gen) / 1e9 / spb  # noqa: E731
    for t, m in msgs:
        if m.type == "note_on" and m.velocity > 0:
            if m.note in open_:  # a re-strike without an off: the first note ends here
                t_on, v = open_.pop(m.note)
                notes.append(Note(beat(t_on), beat(t) - beat(t_on), m.note, v))
            open_[m.note] = (t, m.velocity)
        elif m.type in ("note_on", "note_off") and m.note in open_:
            t_on, v = open_.pop(m.note)
            notes.append(Note(beat(t_on), beat(t) - beat(t_on), m.note, v))
    end = msgs[-1][0] if msgs else t_gen
    for p, (t_on, v) in open_.items():
        notes.append(Note(beat(t_on), max(beat(end) - beat(t_on), 0.25), p, v))
    return sorted(notes, key=lambda n: (n.onset, n.pitch)), len(open_)


def run_config(model: str, name: str, trials: list[Trial], tempo: float, seed: int, echo) -> list[dict]:
    args = ("--answer-start", "now", "--tempo", f"{tempo:g}", "--silence-beats", "64",
            "--answer-bars", str(ANSWER_BARS), "--seed", str(seed), *CONFIGS[name])
    sess = Session(model, *args, osc=True, midi=False)
    out = []
    try:
        for i, trial in enumerate(trials):
            r = play_trial(sess, trial, tempo)
            out.append(r)
            ans = r["answer"]
            k = estimate_key([n.pitch for n in ans], [n.dur for n in ans]).name if ans else "-"
            echo(f"  [{name}] {i + 1}/{len(trials)} {trial.key.name:9} {trial.density:6} {trial.feel:8} {trial.register} "
                 f"v{trial.level:<3} -> {len(ans):3} notes, key {k:9}, {on_grid(ans, trial.feel):4.0%} on the grid "
                 f"(server heard {r['heard_key']}, level {r['heard_level']}, grid {r['heard_grid']})")
    finally:
        sess.close()
        errors = sess.serve.tracebacks() if sess.serve is not None else []
        if errors:
            echo("  serve reported: " + " | ".join(errors[-5:]))
    return out


# --- the baseline --------------------------------------------------------------------------------
def baseline_answer(trial: Trial, rng: np.random.Generator) -> list[Note]:
    """Blind to key, register and dynamics: random C major notes in 48-84 at velocity 80,
    at the call's note rate, onsets on random sixteenths."""
    beats = ANSWER_BARS * BEATS_PER_BAR
    n = int(round(len(trial.call) / CALL_BEATS * beats))
    slots = np.sort(rng.choice(beats * 4, size=min(n, beats * 4), replace=False)) / 4.0
    pitches = [p for p in range(48, 85) if p % 12 in (0, 2, 4, 5, 7, 9, 11)]
    ends = list(slots[1:]) + [float(beats)]
    return [Note(float(s), float(e - s), int(rng.choice(pitches)), 80) for s, e in zip(slots, ends)]


# --- measures ------------------------------------------------------------------------------------
def onset_positions(notes: list[Note]) -> Counter:
    """Onsets per position within the bar, on a 16th grid (a chord counts once)."""
    starts = sorted({int(round(n.onset * 4)) for n in notes})
    return Counter(s % (BEATS_PER_BAR * 4) for s in starts)


def interval_bigrams(notes: list[Note]) -> Counter:
    """2-grams of successive intervals of the top line (the highest note at each onset)."""
    top: dict[int, int] = {}
    for n in notes:
        slot = int(round(n.onset * 4))
        top[slot] = max(top.get(slot, -1), n.pitch)
    line = [top[s] for s in sorted(top)]
    steps = [b - a for a, b in zip(line, line[1:])]
    return Counter(zip(steps, steps[1:]))


def on_grid(notes: list[Note], feel: str) -> float:
    """Share of the answer's onsets (a chord counts once) within ``ON_GRID`` beats of the call's grid."""
    starts = sorted({round(n.onset, 4) for n in notes})
    if not starts:
        return 0.0
    rel = np.asarray(starts)[:, None] % 1.0 - np.asarray(GRIDS[feel] + (1.0,))[None, :]
    return float(np.mean(np.abs(rel).min(1) <= ON_GRID))


def overlap(a: Counter, b: Counter) -> float:
    """Histogram intersection of two normalised counts (0: nothing shared, 1: the same)."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0
    return float(sum(min(a[k] / na, b[k] / nb) for k in a.keys() & b.keys()))


def relation(answer: Key, call: Key) -> str:
    """How an answer's key relates to the call's (for the report)."""
    if answer == call:
        return "same"
    if answer.tonic == call.tonic:
        return "parallel"
    if (answer.mode, call.mode) == ("major", "minor") and answer.tonic == (call.tonic + 3) % 12 or \
            (answer.mode, call.mode) == ("minor", "major") and answer.tonic == (call.tonic + 9) % 12:
        return "relative"
    if answer.mode == call.mode and (answer.tonic - call.tonic) % 12 in (5, 7):
        return "fifth"
    return "other"


def measure(trials: list[Trial], answers: list[list[Note]], partner: list[int]) -> dict:
    per = []
    for i, (trial, ans) in enumerate(zip(trials, answers)):
        call = trial.call
        row: dict = {"key": trial.key.name, "density": trial.density, "register": trial.register, "level": trial.level,
                     "feel": trial.feel, "notes": len(ans), "on_grid": on_grid(ans, trial.feel)}
        if ans:
            k = estimate_key([n.pitch for n in ans], [n.dur for n in ans])
            row.update(answer_key=k.name, key_ok=k == trial.key, relation=relation(k, trial.key),
                       in_scale=in_scale_ratio([n.pitch for n in ans], trial.key),
                       in_scale_notes=round(in_scale_ratio([n.pitch for n in ans], trial.key) * len(ans)),
                       pitch_gap=float(np.mean([n.pitch for n in ans]) - np.mean([n.pitch for n in call])),
                       velocity_gap=float(np.mean([n.velocity for n in ans]) - np.mean([n.velocity for n in call])))
        else:
            row.update(answer_key="-", key_ok=False, relation="silent", in_scale=0.0, in_scale_notes=0)
        rate_call = len(call) / CALL_BEATS
        row["density_ratio"] = len(ans) / (ANSWER_BARS * BEATS_PER_BAR) / rate_call
        other = trials[partner[i]].call
        row["onset_own"] = overlap(onset_positions(ans), onset_positions(call))
        row["onset_shuffled"] = overlap(onset_positions(ans), onset_positions(other))
        row["interval_own"] = overlap(interval_bigrams(ans), interval_bigrams(call))
        row["interval_shuffled"] = overlap(interval_bigrams(ans), interval_bigrams(other))
        per.append(row)
    return summarise(per)


def summarise(per: list[dict]) -> dict:
    keys = sorted({r["key"] for r in per})
    keys_ok = [k for k in keys if all(r["key_ok"] for r in per if r["key"] == k)]
    sounded = [r for r in per if r["notes"]]
    by_reg = {reg: float(np.mean([abs(r["pitch_gap"]) for r in sounded if r["register"] == reg]))
              for reg in CENTRES if any(r["register"] == reg for r in sounded)}
    by_level = {str(lv): float(np.mean([abs(r["velocity_gap"]) for r in sounded if r["level"] == lv]))
                for lv in LEVELS if any(r["level"] == lv for r in sounded)}
    dens = {d: float(np.mean([r["density_ratio"] for r in per if r["density"] == d]))
            for d in ("sparse", "busy") if any(r["density"] == d for r in per)}
    mean = lambda name: float(np.mean([r[name] for r in per]))  # noqa: E731
    return {
        "trials": len(per), "silent_answers": len(per) - len(sounded),
        "keys_ok": len(keys_ok), "keys": len(keys), "keys_ok_pct": 100.0 * len(keys_ok) / max(len(keys), 1),
        "trials_key_ok_pct": 100.0 * sum(r["key_ok"] for r in per) / max(len(per), 1),
        "in_scale_pct": 100.0 * sum(r["in_scale_notes"] for r in per) / max(sum(r["notes"] for r in per), 1),
        "key_relations": dict(Counter(r["relation"] for r in per)),
        "answer_keys": dict(Counter(r["answer_key"] for r in per).most_common()),
        "register_gap": {k: round(v, 2) for k, v in by_reg.items()},
        "register_gap_worst": max(by_reg.values()) if by_reg else float("nan"),
        "register_signed": {reg: round(float(np.mean([r["pitch_gap"] for r in sounded if r["register"] == reg])), 2)
                            for reg in by_reg},
        "velocity_gap": float(np.mean([abs(r["velocity_gap"]) for r in sounded])) if sounded else float("nan"),
        "velocity_gap_by_level": {k: round(v, 2) for k, v in by_level.items()},
        "velocity_gap_worst": max(by_level.values()) if by_level else float("nan"),
        "density_ratio": {k: round(v, 3) for k, v in dens.items()},
        "onset_own": mean("onset_own"), "onset_shuffled": mean("onset_shuffled"),
        "onset_own_wins_pct": 100.0 * sum(r["onset_own"] > r["onset_shuffled"] for r in per) / len(per),
        "interval_own": mean("interval_own"), "interval_shuffled": mean("interval_shuffled"),
        "interval_own_wins_pct": 100.0 * sum(r["interval_own"] > r["interval_shuffled"] for r in per) / len(per),
        "on_grid_pct": {f: 100.0 * float(np.mean([r["on_grid"] for r in per if r["feel"] == f]))
                        for f in FEELS if any(r["feel"] == f for r in per)},
        "per_trial": per,
    }


# --- the report ----------------------------------------------------------------------------------
ROWS = (
    ("answer key = call key, keys", "≥ 90 %", lambda s: f"{s['keys_ok_pct']:.0f} % ({s['keys_ok']}/{s['keys']})"),
    ("answer key = call key, trials", "≥ 90 %", lambda s: f"{s['trials_key_ok_pct']:.0f} %"),
    ("answer notes in the call's scale", "≥ 90 %", lambda s: f"{s['in_scale_pct']:.0f} %"),
    ("pitch gap, worst register (semitones)", "≤ 7", lambda s: f"{s['register_gap_worst']:.1f}"),
    ("velocity gap, mean (worst level)", "≤ 20", lambda s: f"{s['velocity_gap']:.1f} ({s['velocity_gap_worst']:.1f})"),
    ("density ratio, sparse calls", "0.67–1.5", lambda s: f"{s['density_ratio'].get('sparse', float('nan')):.2f}"),
    ("density ratio, busy calls", "0.67–1.5", lambda s: f"{s['density_ratio'].get('busy', float('nan')):.2f}"),
    ("onset-pattern overlap, own / shuffled call", "own > shuffled",
     lambda s: f"{s['onset_own']:.2f} / {s['onset_shuffled']:.2f}"),
    ("interval 2-gram overlap, own / shuffled call", "own > shuffled",
     lambda s: f"{s['interval_own']:.2f} / {s['interval_shuffled']:.2f}"),
    ("answer onsets on the call's grid, straight calls", "on ≥ off", lambda s: _grid_cell(s, "straight")),
    ("answer onsets on the call's grid, swung calls", "on ≥ off", lambda s: _grid_cell(s, "swing")),
    ("answer onsets on the call's grid, triplet calls", "on ≥ off", lambda s: _grid_cell(s, "triplet")),
    ("answers with no notes", "0", lambda s: str(s["silent_answers"])),
)


def _grid_cell(s: dict, feel: str) -> str:
    share = s["on_grid_pct"].get(feel)
    return "-" if share is None else f"{share:.0f} %"


def table(results: dict) -> str:
    names = list(results)
    lines = ["| measure | goal | " + " | ".join(LABELS[n] for n in names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for label, goal, fmt in ROWS:
        lines.append(f"| {label} | {goal} | " + " | ".join(fmt(results[n]) for n in names) + " |")
    return "\n".join(lines)


def details(results: dict) -> str:
    out = []
    for n, s in results.items():
        regs = ", ".join(f"{k} {v:+.1f}" for k, v in s["register_signed"].items())
        levels = ", ".join(f"{k}: {v:.1f}" for k, v in s["velocity_gap_by_level"].items())
        rel = ", ".join(f"{k} {v}" for k, v in sorted(s["key_relations"].items(), key=lambda kv: -kv[1]))
        top = ", ".join(f"{k} {v}" for k, v in list(s["answer_keys"].items())[:4])
        out.append(f"- {LABELS[n]}: answer - call pitch per register {regs}; |velocity gap| per level {levels}; "
                   f"answer key vs call key: {rel} (commonest answer keys: {top}); own call closer than the "
                   f"shuffled one in {s['onset_own_wins_pct']:.0f} % of trials (onsets), "
                   f"{s['interval_own_wins_pct']:.0f} % (intervals)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--tempo", type=float, default=200.0, help="BPM of the server's clock and of the player")
    ap.add_argument("--seed", type=int, default=0, help="calls' rhythms, trial order, shuffles, baseline, serve --seed")
    ap.add_argument("--quick", action="store_true", help="24 trials (4 keys x sparse/busy x straight/swing/triplet)")
    ap.add_argument("--configs", default="on,off", help="model configurations to run: on, off or on,off")
    ap.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    from musicrnn.checkpoint import default_model_path

    model = str(args.model or default_model_path())
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        sys.exit(f"error: unknown configuration {bad[0]!r} — choose on, off or on,off")
    trials = make_trials(args.quick, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    partner = derangement(trials, rng)
    echo = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    results, runs = {}, {}
    t_start = time.monotonic()
    for name in configs:
        echo(f"{LABELS[name]}: {len(trials)} trials at {args.tempo:g} BPM")
        runs[name] = run_config(model, name, trials, args.tempo, args.seed, echo)
        results[name] = measure(trials, [r["answer"] for r in runs[name]], partner)
        results[name]["unclosed_notes"] = sum(r["unclosed"] for r in runs[name])
        results[name]["player_late_ms_max"] = max(r["late_ms"] for r in runs[name])
        results[name]["server_heard"] = [(r["heard_key"], r["heard_level"]) for r in runs[name]]
        results[name]["server_heard_grid"] = [r["heard_grid"] for r in runs[name]]
    results["baseline"] = measure(trials, [baseline_answer(t, rng) for t in trials], partner)
    print(table(results))
    print()
    print(details(results))
    for name in configs:
        s = results[name]
        heard_ok = sum(h == t.key.name for (h, _), t in zip(s["server_heard"], trials))
        grids = Counter(f"{t.feel}->{g.split()[0]}" for g, t in zip(s["server_heard_grid"], trials))
        print(f"- {LABELS[name]}: the server heard the call's key in {heard_ok}/{len(trials)} trials; the grid "
              f"(call feel -> heard): {', '.join(f'{k} {v}' for k, v in sorted(grids.items()))}; "
              f"notes left open at the end of an answer: {s['unclosed_notes']}; player's worst lateness "
              f"{s['player_late_ms_max']:.1f} ms")
    if args.json_path:
        doc = {"machine": platform.platform(), "cpu": platform.processor() or platform.machine(),
               "python": platform.python_version(), "model": model, "tempo": args.tempo, "seed": args.seed,
               "quick": args.quick, "seconds": round(time.monotonic() - t_start, 1),
               "trials": [{"key": t.key.name, "density": t.density, "register": t.register, "level": t.level,
                           "feel": t.feel, "call": [asdict(n) for n in t.call]} for t in trials],
               "results": results,
               "answers": {n: [[asdict(x) for x in r["answer"]] for r in runs[n]] for n in runs}}
        args.json_path.write_text(json.dumps(doc, indent=1, default=float))
        echo(f"wrote {args.json_path}")


if __name__ == "__main__":
    main()
