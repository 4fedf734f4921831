"""OSC flood: >= 20,000 UDP packets/s on 127.0.0.1 into `musicrnn serve --midi-in none
--midi-out none --osc-port P`, then check that it is still itself.

Steps (one `musicrnn serve` subprocess, no MIDI system at all):
1. baseline: /musicrnn/status round trips (request -> reply), and the answer latency (a note,
   then /musicrnn/generate; serve runs with --answer-start now) measured at a subscriber that
   records every generated note (`/musicrnn/out/note_on|note_off`); then panic;
2. duet mode, so the model plays while it is flooded; the flood, from a process of its own, for
   --seconds at --rate packets/s, a fixed mix: player note-on/note-off pairs (60%),
   `/musicrnn/note` with a duration, bundles of a note-on and its note-off, temperature changes
   (each one a status broadcast to the subscriber), status requests (replies go to the flooder,
   which never reads them), and 20% refused packets (garbage, truncated, unknown addresses,
   out-of-range arguments: each one an error reply and a rate-limited log line). The server's
   RSS is sampled every 0.2 s, and a status request goes out every 0.25 s;
3. after the flood, every key the flood may have left down goes up (a note-off per pitch, as a
   well-behaved client would send; lost UDP note-offs otherwise leave keys "held"), back to
   call-response; status round trips every 50 ms from the end of the flood on (when is service
   back to normal?), the answer latency 1 s after the flood, and an answer that must follow one
   beat of silence by itself;
4. SIGTERM; every note-on the subscriber got must have had its note-off, and no second note-on of
   a pitch before it.

The kernel drops datagrams the server's socket buffer cannot hold; how many is read from
/proc/net/udp (the server's socket, and the subscriber's, which must be 0 for step 4 to count).

Run: python benchmarks/osc_flood.py [--model CKPT] [--seconds 10] [--rate 20000] [--json]
CI runs a 3 s version (tests/test_live_stress.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from live_session import OscClient, Session, now_ns, run_sender, sender_code, udp_drops

SERVE_ARGS = ("--tempo", "120", "--silence-beats", "1", "--answer-bars", "1", "--answer-start", "now")
PITCHES = (36, 96)

_FLOOD_CODE = sender_code(r"""
import random, socket
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
port, rate, seconds, lo, hi = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def msg(address, *args):
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram

def bundle(*messages):
    b = OscBundleBuilder(0)  # 0: immediately
    for m in messages:
        b.add_content(OscMessage(m))
    return b.build().dgram

rng = random.Random(7)
items, kinds = [], {}
def add(kind, data):
    items.append(data)
    kinds[kind] = kinds.get(kind, 0) + 1
for i in range(200):  # 100 packets per round, 2 rounds: 20,000 distinct packet slots per second at most
    for j in range(30):
        p = lo + (i * 31 + j * 7) % (hi - lo)
        add("note_on/off", msg("/musicrnn/note_on", p, 1 + (i + j) % 127))
        add("note_on/off", msg("/musicrnn/note_off", p))
    for j in range(5):
        add("note+duration", msg("/musicrnn/note", lo + (i + j * 11) % (hi - lo), 80, 0.05))
        p = lo + (i * 3 + j * 13) % (hi - lo)
        add("bundle", bundle(msg("/musicrnn/note_on", p, 70), msg("/musicrnn/note_off", p)))
        add("temperature", msg("/musicrnn/temperature", (0.8, 1.0, 1.2)[(i + j) % 3]))
        add("status", msg("/musicrnn/status"))
    for j in range(4):
        add("refused", msg("/musicrnn/note_on", 200, 1))  # out of range
        add("refused", msg("/musicrnn/nope", i))  # unknown address
        add("refused", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 48))))  # garbage
        add("refused", msg("/musicrnn/note_on", 60, 100)[:-3])  # truncated
        add("refused", msg("/musicrnn/temperature", "hot"))  # wrong type
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.setblocking(False)
dest = ("127.0.0.1", port)
errors = 0
def send(data):
    global errors
    try:
        sock.sendto(data, dest)
    except OSError:
        errors += 1
""", r"""
sock.close()
share = {k: round(v / n, 3) for k, v in sorted(kinds.items())}
print(json.dumps({"packets": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed), "send_errors": errors, "mix": share}))
""")


def flood(port: int, rate: float, seconds: float, pitches: tuple[int, int] = PITCHES) -> dict:
    """From a process of its own (its own GIL): the packet mix above to 127.0.0.1:``port`` at
    ``rate`` packets per second for ``seconds``. Returns what was sent."""
    return run_sender(_FLOOD_CODE, [str(port), str(rate), str(seconds), str(pitches[0]), str(pitches[1])], seconds,
                      "OSC flood sender")


def status_rtt(client: OscClient, timeout: float = 0.5) -> float | None:
    """One /musicrnn/status round trip in ms (None: no status reply in time, or a refusal)."""
    t0 = now_ns()
    reply = client.request("/musicrnn/status", timeout=timeout)
    if reply is None or reply[0] != "/musicrnn/status":
        return None
    return (now_ns() - t0) / 1e6


def answer_latency(sess: Session, pitch: int, timeout: float = 2.0) -> float | None:
    """A call (one note), then /musicrnn/generate -> the first generated note at the subscriber, in ms."""
    osc, lis = sess.osc, sess.listener
    assert osc is not None and lis is not None
    osc.send("/musicrnn/note_on", pitch, 90)
    time.sleep(0.05)
    osc.send("/musicrnn/note_off", pitch)
    t0 = now_ns()
    osc.send("/musicrnn/generate")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ons = lis.note_ons(after=t0)
        if ons:
            return round((ons[0] - t0) / 1e6, 2)
        time.sleep(0.001)
    return None


def run_osc_flood(sess: Session, seconds: float, rate: float) -> dict:
    """Steps 1-3 above on a running OSC-only session; the caller closes it (step 4)."""
    serve, osc, lis = sess.serve, sess.osc, sess.listener
    assert serve is not None and osc is not None and lis is not None and serve.osc_port
    port = serve.osc_port
    before = [r for r in (status_rtt(osc) for _ in range(20)) if r is not None]
    answer_before = answer_latency(sess, 60)
    time.sleep(0.3)
    osc.send("/musicrnn/panic")
    time.sleep(0.3)
    rss_before = serve.rss_mb()
    drops_before = udp_drops(port) or 0
    samples: list[tuple[float, float]] = []
    during: list[float | None] = []
    stop = threading.Event()
    prober = OscClient(port)

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 2), round(serve.rss_mb(), 1)))
            stop.wait(0.2)

    def probe() -> None:
        while not stop.is_set():
            during.append(status_rtt(prober, timeout=0.25))
            stop.wait(0.25)

    osc.send("/musicrnn/mode", "duet")  # the model plays along with the flood
    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=probe, daemon=True)]
    for t in threads:
        t.start()
    try:
        sent = flood(port, rate, seconds)
    finally:
        flood_end = time.monotonic()
        stop.set()
        for t in threads:
            t.join(5)
        prober.close()
    # every key up (UDP may have lost some of the flood's note-offs), gently, then call-response again
    for p in range(*PITCHES):
        osc.send("/musicrnn/note_off", p)
        time.sleep(0.0002)
    osc.send("/musicrnn/mode", "call-response")
    after: list[tuple[float, float | None]] = []  # (s after the flood, round trip ms)
    while time.monotonic() - flood_end < 1.5:
        after.append((round(time.monotonic() - flood_end, 3), status_rtt(osc, timeout=0.5)))
        time.sleep(0.05)
    drops_flood = (udp_drops(port) or 0) - drops_before
    p50_before = statistics.median(before) if before else None
    normal = None if p50_before is None else max(3 * p50_before, p50_before + 10.0)
    back_at = next((t for t, r in after if r is not None and normal is not None and r <= normal
                    and all(r2 is not None and r2 <= normal for t2, r2 in after if t2 >= t)), None)
    at_1s = [r for t, r in after if t >= 1.0]
    time.sleep(max(0.0, flood_end + 1.6 - time.monotonic()))
    answer_after = answer_latency(sess, 62)
    answer_after_at = round(time.monotonic() - flood_end, 2)
    time.sleep(0.3)
    osc.send("/musicrnn/panic")
    time.sleep(0.1)
    # an answer that comes by itself after a beat of silence: no key is left "held"
    osc.send("/musicrnn/note_on", 64, 90)
    time.sleep(0.08)
    osc.send("/musicrnn/note_off", 64)
    released = now_ns()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not lis.note_ons(after=released):
        time.sleep(0.002)
    ons = lis.note_ons(after=released)
    time.sleep(0.3)
    rss = [r for _, r in samples]
    third = max(1, len(rss) // 3)
    answered = [r for r in during if r is not None]
    return {
        "flood": sent,
        "server_socket": {"dropped_by_kernel": drops_flood, "read": sent["packets"] - drops_flood,
                          "read_share": round(1 - drops_flood / max(1, sent["packets"]), 3)},
        "rss_mb": {"before": round(rss_before, 1), "peak": max(rss, default=rss_before), "after": round(serve.rss_mb(), 1),
                   "first_third_max": max(rss[:third], default=rss_before), "last_third_max": max(rss[-third:], default=rss_before)},
        "rss_samples": samples,
        "status_rtt_ms": {
            "before_p50": p50_before and round(p50_before, 2), "before_max": max(before, default=None) and round(max(before), 2),
            "during": {"asked": len(during), "answered": len(answered),
                       "p50": round(statistics.median(answered), 2) if answered else None,
                       "max": round(max(answered), 2) if answered else None},
            "normal_is_at_most": normal and round(normal, 2),
            "back_to_normal_s_after_flood": back_at,
            "from_1s_after": {"n": len(at_1s), "answered": sum(r is not None for r in at_1s),
                              "max": round(max((r for r in at_1s if r is not None), default=float("nan")), 2)},
            "after_samples": after,
        },
        "answer_latency_ms": {"before": answer_before, "after": answer_after, "after_measured_at_s": answer_after_at},
        "silence_answer_ms_after": round((ons[0] - released) / 1e6, 1) if ons else None,
        "alive": serve.proc.poll() is None,
    }


def finish(sess: Session, result: dict) -> dict:
    """Step 4: stop the server; what the subscriber got, and the server's last words."""
    rc = sess.close()
    lis = sess.listener
    serve = sess.serve
    # refusals are logged on purpose ("OSC from ADDR: why", at most 20 a second): not errors
    errors = [line for line in serve.tracebacks() if not line.startswith("OSC from ")] if serve else ["serve did not start"]
    result.update(exit_status=rc, server_notes_in=serve.notes_in() if serve else None, errors=errors,
                  server_log_lines=len(serve.err) if serve else None)
    if lis is not None:
        result.update(notes_out=len(lis.note_ons()), stuck_notes=sorted(lis.sounding()),
                      restrikes_without_off=lis.restrikes_without_off(), subscriber_datagrams_dropped=lis.final_drops)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20000.0, help="packets per second")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from musicrnn.checkpoint import default_model_path

    sess = Session(args.model or default_model_path(), *SERVE_ARGS, osc=True, midi=False)
    result: dict = {}
    try:
        result = run_osc_flood(sess, args.seconds, args.rate)
    finally:
        result = finish(sess, result)
    if not args.json:
        result.pop("rss_samples", None)
        result.get("status_rtt_ms", {}).pop("after_samples", None)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
