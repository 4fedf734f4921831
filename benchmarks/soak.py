"""Soak: a scripted player against `musicrnn serve` over JACK for --minutes, with mode switches,
model reloads and panics; records memory over time, answer latency and stuck notes.

One `musicrnn serve --answer-start now` subprocess on a private `jackd -d dummy` (real JACK MIDI
ports), with OSC on loopback for model reloads (`/musicrnn/load`; MIDI has no reload control).
Each cycle (about 8 s):
1. call-response: a phrase, end of call (CC 24) -> the time to the first answer note
   ("reaction": the engine's step time plus one JACK period each way), part of the answer,
   then panic (CC 25); 50 ms later nothing may sound;
2. duet (CC 23 = 64): a phrase played along; autoplay (CC 23 = 127): the model plays alone;
3. call-response (CC 23 = 0): a phrase and the answer that follows one beat of silence,
   played out;
4. every other cycle, a model reload over OSC, alternating between two checkpoints (the
   second has another codec unless given), timed until the status reply;
5. the server's RSS.
At the end SIGTERM: every note-on the server sent must have had its note-off, with no second
note-on of a pitch before it ("re-strike without note-off"); checked on the MIDI output (recorded
over JACK) and on the OSC note stream of a subscriber (the scheduler sends both from one thread).

The server's status does not carry its step times (over OSC or MIDI), so the p99 reported is
that of the reaction time measured from outside.

Run: python benchmarks/soak.py --minutes 10 [--model CKPT] [--reload-model CKPT] [--json]
CI runs a 20-second version (tests/test_live_stress.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from live_session import MODE_CC, PANIC_CC, Session, now_ns, pct

TEMPO = 150.0
BEAT_S = 60.0 / TEMPO
SERVE_ARGS = ("--tempo", str(TEMPO), "--silence-beats", "1", "--answer-bars", "1", "--answer-start", "now")


def run_soak(sess: Session, seconds: float, models: list[str], log=None) -> dict:
    """The cycles above, until ``seconds`` have passed; the caller closes the session."""
    serve = sess.serve
    rec = sess.rec
    assert serve is not None and rec is not None
    t_start = time.monotonic()
    rss: list[tuple[float, float]] = [(0.0, round(serve.rss_mb(), 1))]
    reactions: list[int] = []
    silence_answers: list[int] = []
    reloads: list[float] = []
    reload_errors: list[str] = []
    missed = stuck_after_panic = panics = switches = cycles = 0
    model_i = 0
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]

    def panic() -> None:
        nonlocal panics, stuck_after_panic
        sess.cc(PANIC_CC, 127)
        sess.cc(PANIC_CC, 0)
        panics += 1
        time.sleep(0.05)
        stuck_after_panic += bool(rec.sounding())

    def mode(value: int) -> None:
        nonlocal switches
        sess.cc(MODE_CC, value)
        switches += 1

    while time.monotonic() - t_start < seconds:
        c = cycles
        # 1. end of call -> first answer note, then panic mid-answer
        sess.play(pitches[c % 4: c % 4 + 3], dur=0.1, gap=0.03)
        r = sess.answer_latency()
        if r is None:
            missed += 1
        else:
            reactions.append(r)
        time.sleep(0.4)
        panic()
        # 2. duet, then autoplay
        mode(64)
        sess.play(pitches[4:8], dur=0.1, gap=0.05)
        mode(127)
        time.sleep(1.0)
        # 3. call-response: the answer after a beat of silence, played out
        mode(0)
        time.sleep(0.1)
        sess.play([pitches[c % 8], pitches[(c + 2) % 8]], dur=0.1, gap=0.0)
        released = now_ns()
        deadline = time.monotonic() + 4 * BEAT_S + 1.0
        while time.monotonic() < deadline and not rec.note_ons(after=released):
            time.sleep(0.002)
        ons = rec.note_ons(after=released)
        if ons:
            silence_answers.append(ons[0] - released)
        else:
            missed += 1
        time.sleep(4 * BEAT_S + 0.2)  # the one-bar answer plays out
        # 4. a model reload every other cycle
        if sess.osc is not None and len(models) > 1 and c % 2 == 1:
            model_i = (model_i + 1) % len(models)
            t0 = time.monotonic()
            reply = sess.osc.request("/musicrnn/load", models[model_i], timeout=30)
            if reply and reply[0] == "/musicrnn/status" and reply[1][3] == models[model_i]:
                reloads.append(time.monotonic() - t0)
            else:
                reload_errors.append(str(reply))
        # 5. memory
        rss.append((round(time.monotonic() - t_start, 1), round(serve.rss_mb(), 1)))
        cycles += 1
        if log:
            log(f"cycle {cycles}: {rss[-1][0]:.0f} s, RSS {rss[-1][1]} MB, reaction p99 {pct(reactions).get('p99')} ms, "
                f"reloads {len(reloads)}, missed {missed}, stuck after panic {stuck_after_panic}")
        if serve.proc.poll() is not None:
            break
    values = [m for _, m in rss]
    half = len(values) // 2
    return {
        "seconds": round(time.monotonic() - t_start, 1), "cycles": cycles, "alive": serve.proc.poll() is None,
        "rss_mb": {"start": values[0], "end": values[-1], "max": max(values),
                   "growth_second_half": round(max(values[half:]) - max(values[:half] or values[:1]), 1)},
        "rss_samples": rss,
        "reaction_ms": pct(reactions),
        "silence_answer_ms": pct(silence_answers), "silence_s": BEAT_S,
        "missed_answers": missed,
        "panics": panics, "stuck_after_panic": stuck_after_panic, "mode_switches": switches,
        "reloads": len(reloads) if sess.osc is not None else "unavailable (serve has no --osc-port)",
        "reload_ms": pct([x * 1e9 for x in reloads]) if reloads else None, "reload_errors": reload_errors,
    }


def finish(sess: Session, result: dict) -> dict:
    """Stop the server; what its MIDI output (recorded over JACK) and its OSC note stream (the
    same notes, from the same thread) carried: every note-on must have had its note-off."""
    rc = sess.close()
    time.sleep(0.1)
    result.update(exit_status=rc, notes_out=len(sess.rec.note_ons()), stuck_notes=sorted(sess.rec.sounding()),  # type: ignore[union-attr]
                  restrikes_without_off=sess.rec.restrikes_without_off(), errors=sess.serve.tracebacks())  # type: ignore[union-attr]
    lis = sess.listener
    if lis is not None:
        result["osc_notes"] = {"notes_out": len(lis.note_ons()), "stuck_notes": sorted(lis.sounding()),
                               "restrikes_without_off": lis.restrikes_without_off(), "datagrams_dropped": lis.final_drops}
    return result


def _second_model(model: str, folder: Path) -> str:
    """A small random checkpoint with another codec than ``model``'s, to reload."""
    import torch

    from musicrnn.checkpoint import load_checkpoint, save_checkpoint
    from musicrnn.codec import GridCodec, PerformanceCodec
    from musicrnn.config import ModelConfig
    from musicrnn.model import MusicRNN

    codec = load_checkpoint(model).codec
    other = PerformanceCodec(time_unit="beats") if isinstance(codec, GridCodec) else GridCodec(steps_per_beat=2, mark_restrikes=True)
    torch.manual_seed(0)
    path = folder / "reload.pt"
    save_checkpoint(path, MusicRNN(ModelConfig(other.vocab_size, hidden=64, embedding=32, layers=1)), other)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--reload-model", default=None, help="the checkpoint to alternate with (default: a small random one, other codec)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from musicrnn.checkpoint import default_model_path

    model = str(Path(args.model or default_model_path()).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        other = str(Path(args.reload_model).resolve()) if args.reload_model else _second_model(model, Path(tmp))
        sess = Session(model, *SERVE_ARGS, osc=True)
        result: dict = {}
        try:
            result = run_soak(sess, args.minutes * 60, [model, other], log=lambda s: print(s, file=sys.stderr, flush=True))
        finally:
            result = finish(sess, result)
    if not args.json:
        result.pop("rss_samples", None)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
