"""MIDI input flood over JACK: >= 10,000 messages/s into `musicrnn serve`, then check that it
is still itself.

Steps (one `musicrnn serve` subprocess on a private `jackd -d dummy`):
1. a phrase, then at once end of call (CC 24; serve runs with --answer-start now): the baseline
   answer latency (end of call -> first answer note), then panic;
2. duet mode (CC 23), so the model plays while it is flooded; the flood: note-on/note-off pairs
   (and some CCs that drive nothing) at --rate messages/s for --seconds; the server's RSS is
   sampled every 0.2 s;
3. back to call-response; 1 s after the flood ended: one note, end of call, and the answer
   latency again (it must be back to normal); then a phrase and the answer that must follow
   one beat of silence by itself (the flood left no key "held");
4. SIGTERM; every note-on the server sent must have had its note-off.

Run: python benchmarks/flood.py [--model CKPT] [--seconds 10] [--rate 10500] [--json]
CI runs a 3 s version (tests/test_live_stress.py).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from live_session import MODE_CC, PANIC_CC, Session, flood, now_ns

SERVE_ARGS = ("--tempo", "120", "--silence-beats", "1", "--answer-bars", "1", "--answer-start", "now")


def run_flood(sess: Session, seconds: float, rate: float) -> dict:
    """Steps 1-3 above on a running session; the caller closes it (step 4) and checks its notes."""
    serve = sess.serve
    assert serve is not None
    sess.play([60, 64, 67])
    before = sess.answer_latency()
    time.sleep(0.3)
    sess.cc(PANIC_CC, 127)
    sess.cc(PANIC_CC, 0)
    time.sleep(0.3)
    rss_before = serve.rss_mb()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 2), round(serve.rss_mb(), 1)))
            stop.wait(0.2)

    sess.cc(MODE_CC, 64)  # duet: the model plays along with the flood
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sent = flood(sess.jack, sess.player_port, rate, seconds)
    finally:
        stop.set()
        sampler.join(5)
    flood_end = time.monotonic()
    sess.cc(MODE_CC, 0)  # call-response again (a mode switch ends the model's notes)
    time.sleep(max(0.0, flood_end + 1.0 - time.monotonic()))
    sess.play([62], dur=0.05, gap=0.0)  # a call, so that end of call has something to answer
    after = sess.answer_latency()
    after_at = time.monotonic() - flood_end
    time.sleep(0.3)
    sess.cc(PANIC_CC, 127)
    sess.cc(PANIC_CC, 0)
    # and an answer that comes by itself after a beat of silence: the flood left no key "held"
    sess.play([64, 65], dur=0.08, gap=0.0)
    released = now_ns()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not sess.rec.note_ons(after=released):  # type: ignore[union-attr]
        time.sleep(0.002)
    ons = sess.rec.note_ons(after=released)  # type: ignore[union-attr]
    silence_answer = (ons[0] - released) / 1e6 if ons else None
    time.sleep(0.3)
    rss = [r for _, r in samples]
    third = max(1, len(rss) // 3)
    return {
        "flood": sent,
        "rss_mb": {"before": round(rss_before, 1), "peak": max(rss, default=rss_before), "after": round(serve.rss_mb(), 1),
                   "first_third_max": max(rss[:third], default=rss_before), "last_third_max": max(rss[-third:], default=rss_before)},
        "rss_samples": samples,
        "answer_latency_ms": {"before": before and round(before / 1e6, 2), "after": after and round(after / 1e6, 2),
                              "after_measured_at_s": round(after_at, 2)},
        "silence_answer_ms_after": silence_answer and round(silence_answer, 1),  # one beat (500 ms) of silence, then the answer
        "alive": serve.proc.poll() is None,
    }


def finish(sess: Session, result: dict) -> dict:
    """Step 4: stop the server; what it sent and left sounding."""
    rc = sess.close()
    time.sleep(0.1)
    result.update(exit_status=rc, server_notes_in=sess.serve.notes_in(), notes_out=len(sess.rec.note_ons()),  # type: ignore[union-attr]
                  stuck_notes=sorted(sess.rec.sounding()), restrikes_without_off=sess.rec.restrikes_without_off(),  # type: ignore[union-attr]
                  errors=sess.serve.tracebacks())  # type: ignore[union-attr]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=10500.0, help="messages per second")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from musicrnn.checkpoint import default_model_path

    sess = Session(args.model or default_model_path(), *SERVE_ARGS)
    try:
        result = run_flood(sess, args.seconds, args.rate)
    finally:
        result = finish(sess, locals().get("result", {}))
    result.pop("rss_samples") if not args.json else None
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
