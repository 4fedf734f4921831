"""OSC: the one table (dispatcher, argument checks, docs/osc.md), handlers called without a
socket, and the real thing over UDP on 127.0.0.1: malformed packets, time-tagged bundles,
subscribers hearing exactly what MIDI hears, the allow-list and safe model loading."""

from __future__ import annotations

import math
import os
import pickle
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.errors import MusicRNNError
from musicrnn.live import osc
from musicrnn.live.clock import now_ns
from musicrnn.live.control_table import STATUS_ARGS
from musicrnn.live.osc_server import OscServer, note_off_packet, note_on_packet
from musicrnn.live.server import ServeOptions, Server
from musicrnn.sample import SamplingConfig

from helpers.live import RecordingOutput, hanging_notes, wait_until
from helpers.models import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
ISSUE_ADDRESSES = ["note_on", "note_off", "note", "generate", "stop", "panic", "reset", "mode", "temperature", "top_p",
                   "tempo", "key", "range", "length", "load", "subscribe", "unsubscribe", "status"]


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    pass


def message(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def bundle(at: float, *messages: bytes) -> bytes:
    """``at``: wall-clock seconds (OSC time tags are NTP time), or 0 for immediately."""
    b = OscBundleBuilder(at)
    for m in messages:
        b.add_content(OscMessage(m))
    return b.build().dgram


class OscClient:
    """A UDP client on 127.0.0.1 that records what comes back, with arrival times."""

    def __init__(self, port: int) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[tuple[float, str, list]] = []  # (wall time, address, args)
        self.note_on_ns: list[int] = []  # arrival of each generated note-on (the server's clock)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(message(address, *args), self.server)

    def raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return
            m = OscMessage(data)
            self.got.append((time.time(), m.address, m.params))
            if m.address == osc.NOTE_ON_OUT:
                self.note_on_ns.append(now_ns())

    def wait_for(self, cond, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.pump(0.02)
        return bool(cond())

    def of(self, address: str) -> list[list]:
        return [a for _, addr, a in self.got if addr == address]

    def close(self) -> None:
        self.sock.close()


def osc_hanging(got) -> set[int]:
    on: set[int] = set()
    for _, address, args in got:
        if address == osc.NOTE_ON_OUT:
            assert args[0] not in on, f"OSC note {args[0]} struck again without its note-off"
            on.add(args[0])
        elif address == osc.NOTE_OFF_OUT:
            on.discard(args[0])
    return on


@pytest.fixture
def session(tiny_grid_model):
    """A server with OSC on a free port (MIDI: a recording output), and a client for it."""
    made: list = []

    def start(model=tiny_grid_model, **opts) -> tuple[Server, RecordingOutput, OscClient]:
        out = RecordingOutput()
        options = ServeOptions(midi_in="none", midi_out="none", osc_port=0,
                               **{"tempo": 240, "silence_beats": 1, "answer_bars": 1, **opts})
        srv = Server(load_checkpoint(model), options, output=out).start()
        client = OscClient(srv.osc.port)
        made.append((srv, client))
        return srv, out, client

    try:
        yield start
    finally:
        for srv, client in made:
            srv.close()
            client.close()


# --- the table ------------------------------------------------------------------------------------
def test_docs_are_generated_from_the_table_and_up_to_date(tmp_path) -> None:
    doc = (REPO / "docs" / "osc.md").read_text(encoding="utf-8")
    assert doc == osc.render_docs(), "docs/osc.md is stale: python -m musicrnn.live.osc --write-docs"
    for route in osc.ROUTES + osc.REPLIES:  # type: ignore[operator]
        assert f"### `{route.address}`" in doc
    assert osc.main(["--check", str(REPO / "docs" / "osc.md")]) == 0
    stale = tmp_path / "osc.md"
    stale.write_text(doc.replace("Sampling temperature.", "Temperature."), encoding="utf-8")
    assert osc.main(["--check", str(stale)]) == 1
    assert osc.main(["--write-docs", str(stale)]) == 0 and stale.read_text(encoding="utf-8") == doc


def test_the_table_covers_the_address_space_and_is_well_formed() -> None:
    addresses = [r.address for r in osc.ROUTES]
    assert len(addresses) == len(set(addresses))
    assert {f"/musicrnn/{a}" for a in ISSUE_ADDRESSES} <= set(addresses)
    assert {r.address for r in osc.REPLIES} == {"/musicrnn/out/note_on", "/musicrnn/out/note_off", "/musicrnn/status",
                                               "/musicrnn/error"}
    for r in osc.ROUTES:
        assert r.address.startswith("/musicrnn/") and r.help and callable(r.run)
        flags = [a.optional for a in r.args]
        assert flags == sorted(flags), f"{r.address}: optional arguments come last"
        assert all(a.kind in ("int", "float", "str") and a.help for a in r.args)
    status = next(r for r in osc.REPLIES if r.address == osc.STATUS)
    assert [a.name for a in status.args][:4] == ["mode", "tempo", "state", "model"]
    assert len(osc.status_args({"mode": "duet", "tempo": 120, "activity": "waiting for clock", "model": "m.pt",
                                "temperature": 1, "answer_bars": 2, "density": 0})) == len(status.args)


@pytest.mark.parametrize("address,args,expected", [
    ("/musicrnn/note_on", [60.0, 100.0], [60, 100]),  # Pd sends floats
    ("/musicrnn/note_on", [60, 100, 3], [60, 100, 3]),
    ("/musicrnn/temperature", [1], [1.0]),  # an int is fine for a float
    ("/musicrnn/generate", [], []),
    ("/musicrnn/generate", [2], [2.0]),
    ("/musicrnn/mode", ["duet"], ["duet"]),
    ("/musicrnn/range", [48.0, 84.0], [48, 84]),
])
def test_arguments_are_converted(address, args, expected) -> None:
    assert osc.check_args(osc.route_for(address), args) == expected


@pytest.mark.parametrize("address,args,reason", [
    ("/musicrnn/note_on", [60.5, 100], "whole number"),
    ("/musicrnn/note_on", [200, 100], "0-127, not 200"),
    ("/musicrnn/note_on", [-1, 100], "0-127"),
    ("/musicrnn/note_on", ["C4", 100], "must be a number"),
    ("/musicrnn/note_on", [True, 100], "must be a number"),
    ("/musicrnn/note_on", [60], "takes 2-3 arguments"),
    ("/musicrnn/note_on", [60, 100, 1, 1], "takes 2-3 arguments"),
    ("/musicrnn/note_on", [60, 100, 17], "1-16"),
    ("/musicrnn/temperature", [math.nan], "finite"),
    ("/musicrnn/temperature", [math.inf], "finite"),
    ("/musicrnn/temperature", [-0.5], "0-5"),
    ("/musicrnn/temperature", [b"\x00\x01"], "blob"),
    ("/musicrnn/temperature", [[1.0, 2.0]], "array"),
    ("/musicrnn/temperature", [None], "nil"),
    ("/musicrnn/top_p", [0.0], "0.01-1"),
    ("/musicrnn/mode", ["jazz"], "call-response, accompany, duet, autoplay"),
    ("/musicrnn/mode", [1.0], "must be a string"),
    ("/musicrnn/tempo", [1000], "20-400"),
    ("/musicrnn/panic", [1], "takes 0 arguments"),
    ("/musicrnn/load", ["x" * 5000], "longer than"),
])
def test_bad_arguments_are_refused_with_a_reason(address, args, reason) -> None:
    with pytest.raises(osc.OscArgError, match=reason.replace("(", r"\(")):
        osc.check_args(osc.route_for(address), args)


class FakeServer:
    """Records the control API calls a handler makes."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        def call(*args):
            if name == "set_key" and args[0] == "H:major":
                raise MusicRNNError("key 'H:major' not understood")
            self.calls.append((name, *args))
            if name == "request_status":
                args[0]({"mode": "duet", "tempo": 100.0, "activity": "playing", "model": "m.pt", "temperature": 1.0,
                         "answer_bars": 2.0, "density": 0})
        return call


class FakeContext:
    sender = ("127.0.0.1", 5555)

    def __init__(self) -> None:
        self.replies: list[tuple] = []
        self.timers: list[tuple[float, object]] = []
        self.subscribed: list[tuple] = []
        self.jobs: list = []

    def reply(self, address, *args):
        self.replies.append((address, *args))

    def error(self, reason):
        self.replies.append((osc.ERROR, reason))

    def later(self, delay_s, fn):
        self.timers.append((delay_s, fn))

    def subscribe(self, host, port):
        self.subscribed.append(("subscribe", host, port))
        return True

    def unsubscribe(self, host, port):
        self.subscribed.append(("unsubscribe", host, port))
        return 1

    def background(self, name, job):
        self.jobs.append(job)


def test_handlers_are_plain_functions_that_call_the_control_api() -> None:
    srv, ctx = FakeServer(), FakeContext()

    def send(address, *args):
        osc.handle(osc.route_for(address), srv, ctx, address, list(args))

    send("/musicrnn/note_on", 60.0, 90.0)
    send("/musicrnn/note_on", 62, 0)  # velocity 0: a note-off
    send("/musicrnn/note_off", 60, 2)
    send("/musicrnn/note", 64, 80, 0.25)
    assert srv.calls == [("note_on", 60, 90, 0), ("note_off", 62, 0), ("note_off", 60, 1), ("note_on", 64, 80)]
    assert ctx.timers[0][0] == 0.25
    ctx.timers[0][1]()
    assert srv.calls[-1] == ("note_off", 64)
    srv.calls.clear()
    for address, args in [("generate", []), ("generate", [4]), ("stop", []), ("panic", []), ("reset", []), ("mode", ["duet"]),
                          ("temperature", [0.5]), ("top_p", [0.9]), ("density", [3]), ("tempo", [90]), ("key", ["A:minor"]),
                          ("range", [48, 84]), ("length", [4])]:
        send(f"/musicrnn/{address}", *args)
    assert srv.calls == [("generate", None), ("generate", 4.0), ("stop",), ("panic",), ("reset",), ("set_mode", "duet"),
                         ("set_temperature", 0.5), ("set_top_p", 0.9), ("set_density", 3), ("set_tempo", 90.0),
                         ("set_key", "A:minor"), ("set_pitch_range", 48, 84), ("set_answer_bars", 4.0)]
    assert not ctx.replies
    send("/musicrnn/status")
    assert ctx.replies[-1][:5] == (osc.STATUS, "duet", 100.0, "playing", "m.pt")
    send("/musicrnn/subscribe")
    send("/musicrnn/subscribe", "127.0.0.1", 9001.0)
    send("/musicrnn/unsubscribe")
    assert ctx.subscribed == [("subscribe", None, None), ("subscribe", "127.0.0.1", 9001), ("unsubscribe", None, None)]
    send("/musicrnn/load", "/tmp/x.pt")
    assert ctx.jobs and not any(c[0] == "load_model" for c in srv.calls)  # loads run off the OSC thread
    ctx.replies.clear()
    send("/musicrnn/range", 84, 48)
    send("/musicrnn/key", "H:major")
    send("/musicrnn/subscribe", "127.0.0.1")
    assert [r[0] for r in ctx.replies] == [osc.ERROR] * 3
    assert ctx.replies[0][1].startswith("/musicrnn/range: lowest (84) is above")
    assert "not understood" in ctx.replies[1][1] and "both host and port" in ctx.replies[2][1]


def test_note_packets_for_the_scheduler_thread_are_plain_osc() -> None:
    on, off = OscMessage(note_on_packet(60, 100)), OscMessage(note_off_packet(61))
    assert (on.address, on.params) == (osc.NOTE_ON_OUT, [60, 100])
    assert (off.address, off.params) == (osc.NOTE_OFF_OUT, [61])


# --- over UDP -------------------------------------------------------------------------------------
def test_malformed_osc_gets_errors_and_the_server_keeps_serving(session) -> None:
    srv, out, client = session()
    assert srv.osc.host == "127.0.0.1"
    valid = message("/musicrnn/note_on", 60, 100)
    rng = random.Random(0)
    bad = [
        message("/musicrnn/note_on", "sixty", 100),  # wrong type
        message("/musicrnn/mode", 2),
        message("/musicrnn/nope", 1),  # unknown address
        message("/other/app"),
        message("/musicrnn/note_on", 128, 100),  # out of range
        message("/musicrnn/tempo", 5000.0),
        message("/musicrnn/temperature", float("nan")),
        message("/musicrnn/temperature", float("inf")),
        message("/musicrnn/note_on", 60),  # too few
        message("/musicrnn/stop", 1),  # too many
        valid[:-3],  # truncated
        valid[:10],
        bundle(0, valid)[:-6],  # a truncated bundle
        b"#bundle\x00",  # a bundle with no time tag
        b"\x00" * 16,
        b"garbage!",
        *[bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) for _ in range(8)],  # random bytes
        *[b"/" + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) for _ in range(4)],
    ]
    for data in bad:
        client.raw(data)
    assert client.wait_for(lambda: len(client.of(osc.ERROR)) >= len(bad), timeout=5), (len(client.of(osc.ERROR)), client.got)
    reasons = [a[0] for a in client.of(osc.ERROR)]
    assert any("unknown address" in r for r in reasons) and any("malformed OSC packet" in r for r in reasons)
    assert any("finite" in r for r in reasons) and any("0-127, not 128" in r for r in reasons)
    assert srv.running and srv.osc.stats["errors"] >= len(bad)
    client.send("/musicrnn/status")
    assert client.wait_for(lambda: client.of(osc.STATUS))
    status = client.of(osc.STATUS)[-1]
    assert status[:3] == ["call-response", 240.0, "listening"] and len(status) == len(STATUS_ARGS)
    assert status[-1] == "-"  # the grid heard: none (no answer yet)
    assert srv.status()["notes_in"] == 0  # nothing bad reached the model
    client.raw(b"")  # an empty datagram: nothing to parse, nothing breaks
    client.send("/musicrnn/note_on", 60.0, 100.0)  # Pd-style floats
    assert wait_until(lambda: srv.status()["notes_in"] == 1)


def test_subscribers_hear_what_midi_plays_with_every_note_closed(session) -> None:
    srv, out, client = session(mode="autoplay")
    client.send("/musicrnn/subscribe")
    assert client.wait_for(lambda: client.of(osc.STATUS))
    assert client.wait_for(lambda: len(client.of(osc.NOTE_ON_OUT)) >= 6, timeout=10), "no notes for the subscriber"
    n_status = len(client.of(osc.STATUS))
    client.send("/musicrnn/unsubscribe")  # notes sounding now get their note-off first
    client.send("/musicrnn/status")  # answered (to the sender: it has no subscription now) after that
    assert client.wait_for(lambda: len(client.of(osc.STATUS)) > n_status)
    mark = len(out.sent)
    reply_at = max(i for i, g in enumerate(client.got) if g[1] == osc.STATUS)
    client.pump(0.3)
    assert not osc_hanging(client.got)
    after = [g for g in client.got[reply_at:] if g[1].startswith("/musicrnn/out/")]
    assert not after and len(out.sent) > mark, "no more notes after unsubscribing, while MIDI carries on"
    # the subscriber heard the MIDI output's notes, in the same order, at the same moment (loosely: busy CI)
    midi = [(t, m.note) for t, m in list(out.sent) if m.type == "note_on" and m.velocity > 0]
    heard = [args[0] for args in client.of(osc.NOTE_ON_OUT)]
    start = next(i for i in range(len(midi)) if [p for _, p in midi[i:i + len(heard)]] == heard)
    gaps = [(arrived - sent) / 1e6 for (sent, _), arrived in zip(midi[start:], client.note_on_ns)]
    assert max(gaps) < 50 and min(gaps) > -1, gaps

    count = len(heard)
    client.send("/musicrnn/subscribe")  # again, then the server shuts down while notes sound
    assert client.wait_for(lambda: len(client.of(osc.NOTE_ON_OUT)) > count + 2, timeout=10)
    srv.close()
    client.pump(0.3)
    assert not osc_hanging(client.got) and not hanging_notes(out.messages())


def test_status_replies_and_changes_reach_the_subscriber(session) -> None:
    srv, out, client = session()
    listener = OscClient(srv.osc.port)
    try:
        client.send("/musicrnn/subscribe", "127.0.0.1", listener.port)
        client.send("/musicrnn/mode", "duet")
        client.send("/musicrnn/temperature", 0.5)
        client.send("/musicrnn/key", "A:minor")
        client.send("/musicrnn/range", 48, 84)
        client.send("/musicrnn/length", 3)
        client.send("/musicrnn/top_p", 0.9)
        client.send("/musicrnn/status")  # answered after everything above took effect
        assert listener.wait_for(lambda: any(s[0] == "duet" and s[8] == "A:minor" and s[9:11] == [48, 84]
                                             for s in listener.of(osc.STATUS)), timeout=5), listener.got
        last = listener.of(osc.STATUS)[-1]
        assert last[4] == 0.5 and abs(last[5] - 0.9) < 1e-6 and last[6] == 3.0
        client.pump(0.1)
        assert not client.of(osc.STATUS), "replies go to the subscribed address, not twice"
        n = len(listener.of(osc.STATUS))
        client.send("/musicrnn/subscribe", "127.0.0.1", listener.port)  # clients re-subscribe now and then
        listener.pump(0.2)
        assert len(listener.of(osc.STATUS)) == n, "only a new subscription is answered"
        client.send("/musicrnn/key", "H:major")
        client.send("/musicrnn/range", 61, 61)  # no A minor pitch there
        client.send("/musicrnn/tempo", 90)
        assert listener.wait_for(lambda: len(listener.of(osc.ERROR)) == 2 and listener.of(osc.STATUS)[-1][1] == 90.0)
        assert srv.status()["pitch_range"] == (48, 84)
        client.send("/musicrnn/unsubscribe")
        client.send("/musicrnn/status")
        assert client.wait_for(lambda: client.of(osc.STATUS)), "with no subscription, replies go to the sender"
    finally:
        listener.close()


def test_a_bundle_with_a_future_time_tag_runs_at_its_time_not_early(session) -> None:
    srv, out, client = session(mode="duet")
    sent = time.time()
    at = sent + 0.4
    client.raw(bundle(at, message("/musicrnn/note_on", 60, 100), message("/musicrnn/status")))
    client.raw(bundle(0, message("/musicrnn/mode", "autoplay"), message("/musicrnn/mode", "call-response")))  # in order
    time.sleep(0.2)
    assert srv.status()["notes_in"] == 0, "played early"
    assert client.wait_for(lambda: client.of(osc.STATUS), timeout=3)
    arrived = next(t for t, a, _ in client.got if a == osc.STATUS)
    assert arrived >= at - 0.002, f"{at - arrived:.4f} s early"
    assert srv.status()["notes_in"] == 1 and srv.status()["mode"] == "call-response"
    client.raw(bundle(time.time() + 3600, message("/musicrnn/panic")))
    assert client.wait_for(lambda: any("ahead" in e[0] for e in client.of(osc.ERROR)))


def test_only_allowed_clients_are_heard_and_subscriptions_point_nowhere_else(tiny_grid_model) -> None:
    srv = Server(load_checkpoint(tiny_grid_model), ServeOptions(midi_in="none", midi_out="none", osc_port=0,
                                                                osc_allow=("192.168.7.0/24",)), output=RecordingOutput())
    with srv:
        o = srv.osc
        o.datagram(message("/musicrnn/note_on", 60, 100), ("10.0.0.9", 4000))  # not allowed: dropped, no reply
        assert o.stats["refused"] == 1 and o.stats["errors"] == 0
        o.datagram(message("/musicrnn/note_on", 60, 100), ("192.168.7.20", 4000))
        assert wait_until(lambda: srv.status()["notes_in"] == 1)
        o.datagram(message("/musicrnn/subscribe", "10.0.0.9", 9001), ("192.168.7.20", 4000))  # a third party
        o.datagram(message("/musicrnn/subscribe", "192.168.7.21", 9001), ("192.168.7.20", 4000))  # allowed
        assert o.notes.destinations() == [("192.168.7.21", 9001)]
        assert o._may_send_to("127.0.0.1", "10.0.0.9")  # a client on this machine may point anywhere
    with pytest.raises(MusicRNNError, match="--osc-allow"):
        OscServer(None, "127.0.0.1", 0, ["not-an-address"])
    with pytest.raises(MusicRNNError, match="IPv4"):
        OscServer(None, "example.org", 0)


def test_load_accepts_only_checkpoints_that_load_safely(session, tmp_path, tiny_performance_model) -> None:
    from musicrnn.codec import PerformanceCodec

    srv, out, client = session(sampling=SamplingConfig(pitch_range=(30, 40)))
    client.send("/musicrnn/subscribe")
    assert client.wait_for(lambda: client.of(osc.STATUS))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil_pickle = tmp_path / "evil.pt"
    evil_pickle.write_bytes(pickle.dumps(Evil()))
    import torch

    evil_zip = tmp_path / "evil_zip.pt"
    torch.save({"format": "musicrnn-checkpoint", "x": Evil()}, evil_zip)
    high = tiny_checkpoint(tmp_path / "high.pt", PerformanceCodec(time_unit="beats", min_pitch=60, max_pitch=72))
    cases = [str(tmp_path / "missing.pt"), str(evil_pickle), str(evil_zip), "/dev/null", str(high)]
    for path in cases:
        client.send("/musicrnn/load", path)
        assert client.wait_for(lambda: len(client.of(osc.ERROR)) >= cases.index(path) + 1, timeout=10), client.got
    errors = [e[0] for e in client.of(osc.ERROR)]
    assert "no such checkpoint" in errors[0]
    assert "refused to load" in errors[1] or "not a checkpoint" in errors[1]
    assert "refused to load" in errors[2]
    assert "not a regular file" in errors[3]
    assert "no pitch satisfies" in errors[4]  # its codec's pitches and the session's range do not meet
    assert not marker.exists(), "nothing in a checkpoint may run"
    assert srv.running and srv.status()["model"].endswith("grid.pt")
    n = len(client.of(osc.STATUS))
    client.send("/musicrnn/load", str(tiny_performance_model))
    assert client.wait_for(lambda: any(s[3] == str(tiny_performance_model) for s in client.of(osc.STATUS)[n:]), timeout=10)
    assert srv.status()["codec"] == "performance"


def test_cli_serves_osc_without_midi_and_osc_mistakes_are_one_line_errors(tiny_grid_model) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-in", "none", "--midi-out", "none",
                                 "--osc-port", "0", "--seconds", "0.3"])
    assert result.exit_code == 0, result.output
    assert "OSC on 127.0.0.1:" in result.output and "MIDI: none" in result.output and "all notes off" in result.output
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        for args, reason in [(["--osc-allow", "10.0.0.1"], "give --osc-port too"),
                             (["--osc-port", "0", "--osc-allow", "nope"], "--osc-allow 'nope'"),
                             (["--osc-port", "0", "--osc-host", "my.box"], "not an IPv4 address"),
                             (["--osc-port", str(busy.getsockname()[1])], "cannot listen for OSC")]:
            result = runner.invoke(cli, ["serve", "--model", str(tiny_grid_model), "--midi-in", "none", "--midi-out", "none",
                                         *args, "--seconds", "0.1"])
            lines = result.output.strip().splitlines()
            assert result.exit_code == 1 and len(lines) == 1 and reason in lines[0], result.output
    finally:
        busy.close()


def test_docs_module_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, "-m", "musicrnn.live.osc", "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


class _NotWeights:
    """A class torch's safe loader refuses (its refusal text carries terminal escapes)."""


def test_load_errors_are_plain_one_line_text_cut_at_a_word(session, tmp_path) -> None:
    import torch

    srv, out, client = session()
    odd = tmp_path / "odd.pt"
    torch.save({"format": "musicrnn-checkpoint", "x": _NotWeights()}, odd)
    client.send("/musicrnn/load", str(odd))
    assert client.wait_for(lambda: client.of(osc.ERROR), timeout=10), client.got
    reason = client.of(osc.ERROR)[0][0]
    assert reason.isprintable() and "\x1b" not in reason, repr(reason)
    assert str(odd) in reason and "refused to load" in reason and "_NotWeights" in reason
    assert "sources you trust" in reason and "weights_only" not in reason, reason  # ours, not torch's advice
    long_path = "/tmp/" + "no such folder/" * 150 + "model.pt"
    full = f"/musicrnn/load: {long_path}: no such checkpoint"
    client.send("/musicrnn/load", long_path)
    assert client.wait_for(lambda: len(client.of(osc.ERROR)) == 2, timeout=10), client.got
    cut = client.of(osc.ERROR)[1][0]
    assert len(cut) <= osc.MAX_REASON and cut.endswith("..."), cut
    assert full.startswith(cut[:-3]) and full[len(cut) - 3] == " ", f"cut mid-word: {cut[-30:]!r}"
    assert srv.running


def test_plain_drops_terminal_escapes_and_cuts_between_words() -> None:
    assert osc.plain("a \x1b[1mbold\x1b[0m\n\tline\x07") == "a bold line"
    assert osc.plain("one two three four five", limit=20) == "one two three..."
    assert osc.plain("x" * 50, limit=10) == "x" * 7 + "..."


def test_load_keeps_the_players_settings_and_sends_one_status(session, tmp_path, tiny_performance_model) -> None:
    from musicrnn.codec import PerformanceCodec

    srv, out, client = session()
    client.send("/musicrnn/subscribe")
    client.send("/musicrnn/key", "A:minor")
    client.send("/musicrnn/range", 48, 84)
    client.send("/musicrnn/temperature", 0.5)
    client.send("/musicrnn/status")
    assert client.wait_for(lambda: any(s[8] == "A:minor" and s[4] == 0.5 for s in client.of(osc.STATUS)))
    client.pump(0.3)
    for model in (tiny_performance_model, tiny_performance_model):  # a new model, then the same one again
        n = len(client.of(osc.STATUS))
        client.send("/musicrnn/load", str(model))
        assert client.wait_for(lambda: len(client.of(osc.STATUS)) > n, timeout=10), client.got
        client.pump(0.5)
        after = client.of(osc.STATUS)[n:]
        assert len(after) == 1, f"one status per load, got {after}"
        mode, _, _, name, temperature, _, _, _, key, lo, hi, *_heard = after[0]
        assert name == str(model) and (key, lo, hi) == ("A:minor", 48, 84) and temperature == 0.5, after[0]
    assert srv.status()["codec"] == "performance" and not client.of(osc.ERROR)
    narrow = tiny_checkpoint(tmp_path / "narrow.pt", PerformanceCodec(time_unit="beats", min_pitch=90, max_pitch=100))
    client.send("/musicrnn/load", str(narrow))  # cannot play in 48-84: refused, and the settings stay
    assert client.wait_for(lambda: client.of(osc.ERROR), timeout=10)
    assert "no pitch satisfies" in client.of(osc.ERROR)[0][0]
    assert srv.status()["pitch_range"] == (48, 84) and srv.status()["model"] == str(tiny_performance_model)
