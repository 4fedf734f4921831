"""Live latency (issue: `musicrnn serve`). One torch thread, this CPU.

Measures:
1. Per generated event for a model, through the live engine (the code `musicrnn serve` runs):
   - token: one generated token as the engine makes it (constraint mask, sample_next, one model
     step, constraint and decoder updates); the issue's "per generated event" figure;
   - decision: one engine decision (a performance event, or a whole grid frame, with the fork
     and mask work around it), and per generated note (decision time / notes in it);
   - feed: one player note (note-on or note-off) heard by the model;
   - one model step right after 20 ms idle against one right after another step (the first
     step of a reaction reads the weights from memory, not from cache).
   for the given model (default: the bundled one), and for a notochord-sized backbone
   (2x1024 GRU, embedding 512, random weights, the same codec). The engine steps these with
   the numpy fast stepper (musicrnn/fast_step.py); the "torch step" rows force ``model.step``
   (the path of int8 models and models with attention) for comparison.
2. notochord 0.8 itself, if importable (random weights; feed, query, query_feed); skipped
   with a message otherwise.
3. Over JACK (needs `jackd`; a private dummy server is started and stopped here):
   - output timing: scheduled vs sent vs received time of notes through the Scheduler;
   - end of call -> first answer note: `musicrnn serve --answer-start now` as a subprocess,
     a player sends the end-of-call CC, a recorder times the first answer note-on.

Run: python benchmarks/latency.py [--model CKPT] [--events 3000] [--answers 100] [--json]
Quick check that it runs: python benchmarks/latency.py --model X.pt --events 300 --answers 3
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from musicrnn.checkpoint import default_model_path, load_checkpoint
from musicrnn.config import ModelConfig
from musicrnn.inference import TorchStepper, quantized
from musicrnn.live.clock import now_ns
from musicrnn.live.engine import Engine, configure_torch_for_live
from musicrnn.model import MusicRNN
from musicrnn.sample import SamplingConfig

from live_session import Jack, Recorder


def pct(values, unit: float = 1e6) -> dict:
    """p50/p99/max of ns values, in ms."""
    a = np.asarray(values, dtype=np.float64) / unit
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "max": round(float(a.max()), 4)}


# --- 1. the engine ------------------------------------------------------------------------------
def make_engine(model: MusicRNN, codec, torch_step: bool = False, seed: int = 0) -> Engine:
    """The engine `musicrnn serve` builds; ``torch_step``: step through ``model.step`` even where
    the numpy fast stepper applies (the path of models with attention, and of int8 models)."""
    return Engine(TorchStepper(model) if torch_step else model, codec, SamplingConfig(), seed=seed)


def token_times(engine: Engine, events: int) -> list[int]:
    """ns per generated token, made the way the engine makes each token of a decision: the
    constraint mask, one draw, one model step with the constraint and decoder updates (the
    engine's own methods, on a fork of its stream)."""
    stream = engine.stream.fork()
    out = []
    with stream.stepper.kernels():
        for _ in range(events):
            t0 = now_ns()
            x = engine._sample(stream, engine._mask(stream, False))
            engine._feed(stream, [x])
            out.append(now_ns() - t0)
    return out


def engine_times(engine: Engine, events: int) -> dict:
    decisions, per_note, tokens = [], [], 0
    t = 0.0
    for _ in range(events):  # autoplay: the model decides, nobody interrupts
        t0 = now_ns()
        steps0 = engine.steps
        t = engine.next_time(t)
        notes = engine.decide()
        dt = now_ns() - t0
        decisions.append(dt)
        tokens += engine.steps - steps0
        ons = sum(1 for n in notes if n.velocity > 0)
        if ons:
            per_note.append(dt / ons)
    feeds = []
    engine.reset()
    for i in range(events):  # a player: notes in, nothing out
        beat = i * 0.25
        for fn in (lambda: engine.human_note_on(beat, 48 + (i * 7) % 36, 80), lambda: engine.human_note_off(beat + 0.2, 48 + (i * 7) % 36)):
            t0 = now_ns()
            fn()
            feeds.append(now_ns() - t0)
    return {"decision": pct(decisions), "per_note": pct(per_note), "feed": pct(feeds),
            "tokens_per_decision": round(tokens / max(1, events), 2)}


def idle_step_times(engine: Engine, n: int = 200, idle_s: float = 0.02) -> dict:
    """One model step right after ``idle_s`` of sleep, and one right after another step: what
    the first step of a reaction costs when the weights have left the caches (on a VM shared
    with other tenants they do within ~1 ms of idling) against a warm one."""
    stepper = engine.stream.stepper.fork()  # the session's state, stepped apart
    cold, warm = [], []
    for _ in range(n):
        time.sleep(idle_s)
        t0 = now_ns()
        engine._step(stepper, 1)
        t1 = now_ns()
        engine._step(stepper, 1)
        warm.append(now_ns() - t1)
        cold.append(t1 - t0)
    return {"idle_s": idle_s, "step_after_idle": pct(cold), "step_after_step": pct(warm)}


def measure_model(name: str, model: MusicRNN, codec, events: int, params: int | None = None,
                  torch_step: bool = False) -> dict:
    model.eval()
    engine = make_engine(model, codec, torch_step)
    token_times(engine, min(200, events))  # warm-up
    return {"model": name, "params": params or model.num_parameters,
            "arch": f"{model.config.layers}x{model.config.hidden} {model.config.arch}",
            "step": engine.stepper.name,
            "token": pct(token_times(engine, events)), **engine_times(engine, events)}


# --- 2. notochord ------------------------------------------------------------------------------
def measure_notochord(events: int) -> dict:
    try:
        from notochord import Notochord  # type: ignore[import-not-found]
    except Exception as exc:  # not installed here: say so, do not fail
        return {"skipped": f"notochord not importable ({type(exc).__name__}: {exc}); "
                           "pip install --no-deps notochord==0.8.0 plus its small deps into this environment"}
    noto = Notochord()  # default arguments: the released architecture, random weights
    noto.eval()
    feeds, queries, both = [], [], []
    with torch.no_grad():
        for i in range(events):
            t0 = now_ns()
            noto.feed(inst=1, pitch=48 + i % 36, time=0.1, vel=64)
            feeds.append(now_ns() - t0)
            t0 = now_ns()
            noto.query()
            queries.append(now_ns() - t0)
            t0 = now_ns()
            noto.query_feed()
            both.append(now_ns() - t0)
    params = sum(p.numel() for p in noto.parameters())
    return {"model": "notochord 0.8", "params": params, "feed": pct(feeds), "query": pct(queries), "query_feed": pct(both)}


# --- 3. over JACK ------------------------------------------------------------------------------
def measure_output_timing(jack: Jack, notes: int, spacing_s: float = 0.02) -> dict:
    from musicrnn.live import midi_ports
    from musicrnn.live.scheduler import Scheduler

    out = midi_ports.open_output("virtual", "jack", "bench")
    arrivals: list[int] = []
    name = midi_ports.virtual_names("bench")[1]
    inp = jack.backend.open_input(f"{name}:{name}",
                                  callback=lambda m: arrivals.append(now_ns()) if m.type == "note_on" and m.velocity else None)
    sched = Scheduler(out, keep_timings=notes + 10).start()
    rng = np.random.default_rng(0)
    t0 = now_ns() + 100_000_000
    due = [t0 + int(i * spacing_s * 1e9 + rng.uniform(0, spacing_s / 2) * 1e9) for i in range(notes)]
    sched.play([x for i, d in enumerate(due) for x in ((d, 60 + i % 12, 90), (d + 5_000_000, 60 + i % 12, 0))])
    time.sleep((due[-1] - now_ns()) / 1e9 + 0.3)
    sched.close()
    inp.close()
    out.close()
    sent = [s - d for d, s in sched.timings]
    received = [a - d for d, a in zip(due, arrivals)]
    med = float(np.median(received)) if received else 0.0
    return {"notes": notes, "received": len(arrivals), "scheduled_to_sent": pct(sent), "scheduled_to_received": pct(received),
            "jitter": pct([abs(r - med) for r in received])}


def measure_answer_latency(jack: Jack, model: str, answers: int) -> dict:
    import mido

    cmd = [sys.executable, "-m", "musicrnn", "serve", "--model", model, "--midi-api", "jack", "--port-name", "bench-serve",
           "--answer-start", "now", "--silence-beats", "64", "--answer-bars", "8"]
    proc = subprocess.Popen(cmd, env=jack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if "Ctrl-C to stop" not in line:
            raise RuntimeError(f"serve did not start: {line} {proc.stderr.read() if proc.poll() is not None else ''}")  # type: ignore[union-attr]
        # the DAW side reads RtMidi's queue and stamps arrivals in JACK's thread (live_session.Recorder):
        # a Python callback would add this process's own GIL waits to the server's latency
        rec = Recorder(jack.backend, "bench-serve out:bench-serve out")
        player = jack.backend.open_output("bench-serve in:bench-serve in")
        latencies = []
        for i in range(answers):
            player.send(mido.Message("note_on", note=60 + i % 12, velocity=90))  # the call (also stops the last answer)
            time.sleep(0.05)
            player.send(mido.Message("note_off", note=60 + i % 12))
            time.sleep(0.05)
            t0 = now_ns()
            player.send(mido.Message("control_change", control=24, value=127))  # end of call
            player.send(mido.Message("control_change", control=24, value=0))
            deadline = time.monotonic() + 1.0
            while not rec.note_ons(after=t0) and time.monotonic() < deadline:
                time.sleep(0.001)
            got = rec.note_ons(after=t0)
            if got:
                latencies.append(got[0] - t0)
            time.sleep(0.1)
        rec.close()
        player.close()
        return {"answers": answers, "answered": len(latencies), "end_of_call_to_first_note": pct(latencies)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--events", type=int, default=3000, help="generated events (and player notes) per model")
    ap.add_argument("--answers", type=int, default=100, help="end-of-call -> answer measurements over JACK")
    ap.add_argument("--notes", type=int, default=1000, help="notes for the JACK output timing")
    ap.add_argument("--no-jack", action="store_true", help="skip the JACK measurements")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    configure_torch_for_live()
    ckpt = load_checkpoint(args.model)
    result: dict = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "codec": repr(ckpt.codec)}
    result["default_model"] = measure_model(Path(args.model).name, ckpt.model, ckpt.codec, args.events)
    result["default_model_idle"] = idle_step_times(make_engine(ckpt.model, ckpt.codec))
    result["default_model_torch_step"] = measure_model(Path(args.model).name + " torch step", ckpt.model, ckpt.codec,
                                                       args.events, torch_step=True)
    big = MusicRNN(ModelConfig(ckpt.codec.vocab_size, arch="gru", layers=2, hidden=1024, embedding=512))
    result["notochord_sized"] = measure_model("2x1024 GRU (random)", big, ckpt.codec, args.events)
    # the fast path (`musicrnn serve --quantize int8`): a step reads a quarter of the weight bytes
    result["default_model_int8"] = measure_model(Path(args.model).name + " int8", quantized(ckpt.model), ckpt.codec,
                                                 args.events, ckpt.model.num_parameters)
    result["notochord_sized_int8"] = measure_model("2x1024 GRU int8 (random)", quantized(big), ckpt.codec, args.events,
                                                   big.num_parameters)
    result["notochord"] = measure_notochord(args.events)
    if args.no_jack:
        result["jack"] = {"skipped": "--no-jack"}
    elif shutil.which("jackd") is None:
        result["jack"] = {"skipped": "jackd not installed (apt-get install jackd2)"}
    else:
        jack = Jack()
        try:
            result["jack"] = {"output": measure_output_timing(jack, args.notes),
                              "answer": measure_answer_latency(jack, args.model, args.answers)}
        finally:
            jack.close()
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"one torch thread, {result['cpu']}, torch {result['torch']}; codec {result['codec']}")
    print(f"{'model':<28}{'params':>11} {'step':>6}  {'token p50/p99':>16}  {'decision p50/p99':>18}  {'per note p50/p99':>18}  {'feed p50/p99':>15}  ms")
    for key in ("default_model", "default_model_torch_step", "default_model_int8", "notochord_sized", "notochord_sized_int8"):
        r = result[key]
        print(f"{r['model'][:27]:<28}{r['params']:>11,} {r['step']:>6}  {r['token']['p50']:>7.3f}/{r['token']['p99']:<7.3f}  "
              f"{r['decision']['p50']:>8.3f}/{r['decision']['p99']:<8.3f}  "
              f"{r['per_note'].get('p50', float('nan')):>8.3f}/{r['per_note'].get('p99', float('nan')):<8.3f}  "
              f"{r['feed']['p50']:>6.3f}/{r['feed']['p99']:<7.3f}")
    idle = result["default_model_idle"]
    print(f"default model, one step after {idle['idle_s'] * 1e3:.0f} ms idle: p50 {idle['step_after_idle']['p50']:.3f} / "
          f"p99 {idle['step_after_idle']['p99']:.3f} ms; right after another step: p50 {idle['step_after_step']['p50']:.3f} / "
          f"p99 {idle['step_after_step']['p99']:.3f} ms")
    n = result["notochord"]
    if "skipped" in n:
        print(f"notochord: skipped: {n['skipped']}")
    else:
        print(f"{'notochord 0.8':<28}{n['params']:>11,}  feed {n['feed']['p50']:.3f}/{n['feed']['p99']:.3f}  "
              f"query {n['query']['p50']:.3f}/{n['query']['p99']:.3f}  query_feed {n['query_feed']['p50']:.3f}/{n['query_feed']['p99']:.3f}")
    j = result["jack"]
    if "skipped" in j:
        print(f"JACK: skipped: {j['skipped']}")
    else:
        o, a = j["output"], j["answer"]
        print(f"JACK output ({o['received']}/{o['notes']} notes): scheduled->sent p99 {o['scheduled_to_sent']['p99']:.3f} ms, "
              f"scheduled->received p50 {o['scheduled_to_received'].get('p50', float('nan')):.3f} ms, "
              f"jitter p99 {o['jitter'].get('p99', float('nan')):.3f} ms")
        e = a["end_of_call_to_first_note"]
        print(f"end of call -> first answer note ({a['answered']}/{a['answers']}): p50 {e.get('p50', float('nan')):.3f} ms, "
              f"p99 {e.get('p99', float('nan')):.3f} ms")


if __name__ == "__main__":
    from musicrnn.errors import MusicRNNError

    try:
        main()
    except MusicRNNError as exc:
        sys.exit(f"error: {exc}")
