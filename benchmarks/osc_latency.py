"""OSC round trip on loopback (issue: OSC control surface). One torch thread, this CPU.

Measures:
1. musicrnn: ``musicrnn serve --midi-in none --midi-out none --osc-port 0 --answer-start now``
   runs as a subprocess (no musical wait: an answer starts at once). A client subscribes, then
   for each message sends one immediate bundle "the player's next note + end of call"
   (``/musicrnn/note_off`` previous, ``/musicrnn/note_on`` new, ``/musicrnn/generate``) and
   times it until the first ``/musicrnn/out/note_on`` of the answer arrives: OSC parse, the
   model hearing the note, deciding the answer's first note (sampling + model steps; a grid
   codec first closes the player's frame, then hands each struck note out the moment its token
   is sampled), OSC send. All of it runs in serve's OSC thread (``Server.working_here``; a note
   due now is sent by the thread that decides it), unless the engine thread is busy at that
   moment (a decision of the answer in progress), which then does the work.
   The new note also stops the previous answer (the player is back). Also timed:
   ``/musicrnn/status`` round trips, the same path without the model's work (parse, queue,
   work-off, reply), so transport and model cost can be told apart.
2. notochord 0.8, if importable: ``/notochord/feed_query`` round trip to a server process with
   random weights (``Notochord()`` defaults: 2x1024 GRU), one torch thread. The server is the
   handler of notochord's own ``app/server.py`` (feed_query, then reply
   ``/return/notochord/query`` with the predicted event) on python-osc, the library musicrnn
   uses, so both sides pay the same transport. Skipped with install hints otherwise.

Run: python benchmarks/osc_latency.py [--model CKPT] [--messages 1000] [--json]
Quick check that it runs: python benchmarks/osc_latency.py --model X.pt --messages 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

NOTOCHORD_HINT = ("pip install --no-deps notochord==0.8.0 && pip install numpy pandas tqdm sf2utils appdirs "
                  "toml-file joblib iipyper  (notochord pins torch < 2.11, hence --no-deps)")


def pct(values_ns) -> dict:
    a = np.asarray(values_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "max": round(float(a.max()), 4)}


def message(address: str, *args) -> OscMessageBuilder:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b


def bundle(*messages: OscMessageBuilder) -> bytes:
    b = OscBundleBuilder(IMMEDIATELY)
    for m in messages:
        b.add_content(m.build())
    return b.build().dgram


def drain(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        pass
    finally:
        sock.setblocking(True)


def wait_for(sock: socket.socket, address: bytes, timeout: float) -> int | None:
    """perf_counter_ns when a message to ``address`` arrives, or None."""
    deadline = time.perf_counter() + timeout
    while (left := deadline - time.perf_counter()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        if data.startswith(address):
            return time.perf_counter_ns()
    return None


# --- 1. musicrnn -------------------------------------------------------------------------------
def start_serve(model: str | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "musicrnn", "serve", "--midi-in", "none", "--midi-out", "none", "--osc-port", "0",
           "--answer-start", "now", "--silence-beats", "64", "--answer-bars", "8"]
    if model:
        cmd += ["--model", model]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()  # type: ignore[union-attr]
    m = re.search(r"OSC on 127\.0\.0\.1:(\d+)", line)
    if not m:
        err = proc.stderr.read() if proc.poll() is not None else ""  # type: ignore[union-attr]
        stop(proc)
        raise RuntimeError(f"musicrnn serve did not start: {line.strip()} {err.strip()}")
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def measure_musicrnn(model: str | None, messages: int, gap_s: float) -> dict:
    proc, port = start_serve(model)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    server = ("127.0.0.1", port)
    try:
        sock.sendto(message("/musicrnn/subscribe").build().dgram, server)
        if wait_for(sock, b"/musicrnn/status", 5.0) is None:
            raise RuntimeError("no reply to /musicrnn/subscribe")
        first_note = b"/musicrnn/out/note_on"
        times, missed, prev = [], 0, None
        for i in range(messages + 10):  # the first 10 warm up
            pitch = 48 + (i * 7) % 36
            msgs = ([message("/musicrnn/note_off", prev)] if prev is not None else []) + \
                [message("/musicrnn/note_on", pitch, 90), message("/musicrnn/generate")]
            data = bundle(*msgs)
            drain(sock)
            t0 = time.perf_counter_ns()
            sock.sendto(data, server)
            t1 = wait_for(sock, first_note, 1.0)
            prev = pitch
            if i >= 10:
                if t1 is None:
                    missed += 1
                else:
                    times.append(t1 - t0)
            time.sleep(gap_s)
        status = []
        for i in range(messages + 10):
            drain(sock)
            t0 = time.perf_counter_ns()
            sock.sendto(message("/musicrnn/status").build().dgram, server)
            t1 = wait_for(sock, b"/musicrnn/status", 1.0)
            if i >= 10 and t1 is not None:
                status.append(t1 - t0)
            time.sleep(gap_s / 4)
        return {"messages": messages, "answered": len(times), "missed": missed, "round_trip": pct(times),
                "status_round_trip": pct(status)}
    finally:
        sock.close()
        stop(proc)


# --- 2. notochord ------------------------------------------------------------------------------
NOTOCHORD_SERVER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from notochord import Notochord
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_message_builder import OscMessageBuilder
    from pythonosc.osc_server import BlockingOSCUDPServer
    noto = Notochord()  # default arguments: the released architecture, random weights
    noto.eval()
    noto.reset()
    def feed_query(client, address, *a):  # notochord app/server.py: feed, query, reply
        with torch.inference_mode():
            r = noto.feed_query(*a)
        b = OscMessageBuilder("/return/notochord/query")
        for k, v in r.items():
            v = v.item() if getattr(v, "ndim", None) == 0 else v
            if isinstance(v, (int, float, str)):
                b.add_arg(k)
                b.add_arg(v)
        server.socket.sendto(b.build().dgram, client)
    d = Dispatcher()
    d.map("/notochord/feed_query", feed_query, needs_reply_address=True)
    server = BlockingOSCUDPServer(("127.0.0.1", 0), d)
    print(server.server_address[1], flush=True)
    server.serve_forever()
""")


def measure_notochord(messages: int, gap_s: float) -> dict:
    try:
        import notochord  # type: ignore[import-not-found]  # noqa: F401
    except Exception as exc:
        return {"skipped": f"notochord not importable ({type(exc).__name__}: {exc}); {NOTOCHORD_HINT}"}
    proc = subprocess.Popen([sys.executable, "-c", NOTOCHORD_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            raise RuntimeError(f"notochord server did not start: {line} {proc.stderr.read() if proc.poll() is not None else ''}")  # type: ignore[union-attr]
        server = ("127.0.0.1", int(line))
        times, missed = [], 0
        for i in range(messages + 10):
            data = message("/notochord/feed_query", 1, 48 + (i * 7) % 36, 0.1, 64.0).build().dgram
            drain(sock)
            t0 = time.perf_counter_ns()
            sock.sendto(data, server)
            t1 = wait_for(sock, b"/return/notochord/query", 2.0)
            if i >= 10:
                if t1 is None:
                    missed += 1
                else:
                    times.append(t1 - t0)
            time.sleep(gap_s)
        return {"model": "notochord 0.8 (random weights)", "messages": messages, "answered": len(times), "missed": missed,
                "round_trip": pct(times)}
    finally:
        sock.close()
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--messages", type=int, default=1000, help="round trips per system (after 10 warm-up ones)")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between round trips")
    ap.add_argument("--no-notochord", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    result: dict = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    result["musicrnn"] = measure_musicrnn(args.model, args.messages, args.gap)
    result["notochord"] = {"skipped": "--no-notochord"} if args.no_notochord else measure_notochord(args.messages, args.gap)
    ours, theirs = result["musicrnn"]["round_trip"], result["notochord"].get("round_trip", {})
    if ours.get("n") and theirs.get("n"):
        result["p99_ratio"] = round(ours["p99"] / theirs["p99"], 3)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    m = result["musicrnn"]
    print(f"{result['cpu']}, Python {result['python']}; note in -> first generated note out, loopback UDP, ms")
    print(f"musicrnn  ({m['answered']}/{m['messages']}): p50 {ours.get('p50', float('nan')):.3f}  "
          f"p99 {ours.get('p99', float('nan')):.3f}  max {ours.get('max', float('nan')):.3f}")
    st = m["status_round_trip"]
    print(f"musicrnn /musicrnn/status (no model work): p50 {st.get('p50', float('nan')):.3f}  "
          f"p99 {st.get('p99', float('nan')):.3f}  max {st.get('max', float('nan')):.3f}")
    n = result["notochord"]
    if "skipped" in n:
        print(f"notochord: skipped: {n['skipped']}")
    else:
        print(f"notochord /notochord/feed_query ({n['answered']}/{n['messages']}): p50 {theirs['p50']:.3f}  "
              f"p99 {theirs['p99']:.3f}  max {theirs['max']:.3f}")
        print(f"p99 ratio musicrnn / notochord: {result['p99_ratio']:.3f} (goal <= 0.5; goal p99 <= 1 ms)")


if __name__ == "__main__":
    main()
