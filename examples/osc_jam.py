"""Purpose: jam with `musicrnn serve` over OSC from Python: play a phrase, ask for an answer, print it.

Start the server first (no MIDI needed), then run this script:

    musicrnn serve --midi-in none --midi-out none --osc-port 9000
    python examples/osc_jam.py --port 9000 --rounds 2

It uses python-osc only. One UDP socket both sends and receives: `/musicrnn/subscribe` with no
arguments subscribes the socket the message came from, so the answers come straight back here.
Every address is described in docs/osc.md.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder


class Jam:
    def __init__(self, host: str, port: int) -> None:
        self.server = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1" if host in ("127.0.0.1", "localhost") else "0.0.0.0", 0))
        self.sounding: set[int] = set()

    def send(self, address: str, *args) -> None:
        msg = OscMessageBuilder(address)
        for a in args:
            msg.add_arg(a)
        self.sock.sendto(msg.build().dgram, self.server)

    def listen(self, seconds: float, until: str | None = None) -> list[tuple[str, list]]:
        """Print and return what the server sends for ``seconds`` (or until a message to ``until``)."""
        got: list[tuple[str, list]] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not (until and any(a == until for a, _ in got)):
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                break
            msg = OscMessage(data)
            got.append((msg.address, msg.params))
            if msg.address == "/musicrnn/out/note_on":
                self.sounding.add(msg.params[0])
                print(f"  model: note {msg.params[0]} on (velocity {msg.params[1]})")
            elif msg.address == "/musicrnn/out/note_off":
                self.sounding.discard(msg.params[0])
                print(f"  model: note {msg.params[0]} off")
            elif msg.address == "/musicrnn/error":
                print(f"  error: {msg.params[0]}", file=sys.stderr)
            elif msg.address == "/musicrnn/status":
                print(f"  status: {' '.join(str(p) for p in msg.params[:4])}")
        return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--rounds", type=int, default=2, help="phrases to play, each followed by the model's answer")
    ap.add_argument("--bars", type=float, default=1.0, help="answer length in bars")
    ap.add_argument("--listen", type=float, default=3.0, help="seconds to listen to each answer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    jam = Jam(args.host, args.port)
    jam.send("/musicrnn/subscribe")  # answers come back to this socket
    jam.send("/musicrnn/mode", "call-response")
    if not any(a == "/musicrnn/status" for a, _ in jam.listen(1.0, until="/musicrnn/status")):
        print(f"no reply from {args.host}:{args.port}; is `musicrnn serve --osc-port {args.port}` running?", file=sys.stderr)
        return 1
    notes_heard = 0
    for r in range(args.rounds):
        phrase = [60 + rng.choice([0, 2, 4, 5, 7, 9, 11, 12]) for _ in range(4)]
        print(f"round {r + 1}: you play {phrase}")
        for pitch in phrase:
            jam.send("/musicrnn/note", pitch, 90, 0.2)  # on now, off after 0.2 s
            time.sleep(0.25)
        jam.send("/musicrnn/generate", args.bars)
        notes_heard += sum(a == "/musicrnn/out/note_on" for a, _ in jam.listen(args.listen))
    jam.send("/musicrnn/unsubscribe")  # any note still sounding gets its note-off first
    jam.listen(0.3)
    print(f"the model played {notes_heard} notes; {len(jam.sounding)} left sounding")
    return 0 if not jam.sounding else 1


if __name__ == "__main__":
    sys.exit(main())
