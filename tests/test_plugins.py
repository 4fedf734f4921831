"""The plugins against real hosts: ``musicrnn serve`` runs as a subprocess with OSC only; the Pure
Data example patch runs in a headless ``pd`` and SuperCollider's class in a headless ``sclang``,
each plays a phrase and must get the model's answer back. The Max patch (no Max here) is checked
structurally: valid JSON, and every address it uses is in the OSC table."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from musicrnn.live import osc

from live_session import Serve

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
PD_ERRORS = ("couldn't create", "error:", "bad arguments", "no method", "stack overflow")


def _read(stream, dest: list[str]) -> None:
    for line in stream:
        dest.append(line.rstrip("\n"))


@pytest.fixture
def serve_osc():
    """``musicrnn serve`` with OSC on a free port and no MIDI (its OSC port: ``.osc_port``); always ended."""
    started: list[Serve] = []

    def start(model: Path, *args: str) -> Serve:
        proc = Serve(None, model, "plugin", *args, osc=True)
        started.append(proc)
        proc.wait_ready()
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


class Host:
    """A plugin host (pd, sclang) as a subprocess whose output lines are collected; always ended."""

    def __init__(self, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=_read, args=(self.proc.stdout, self.lines), daemon=True)
        self._reader.start()

    def wait_for(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if cond():
                return True
            time.sleep(0.02)
        time.sleep(0.05)
        return bool(cond())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def host():
    started: list[Host] = []

    def start(cmd: list[str], **kw) -> Host:
        h = Host(cmd, **kw)
        started.append(h)
        return h

    try:
        yield start
    finally:
        for h in started:
            h.stop()


def note_lines(lines: list[str], tag: str) -> list[tuple[int, int]]:
    """``tag: PITCH VELOCITY`` lines (Pd's [print]) or ``tag PITCH VELOCITY`` (sclang) -> notes."""
    out = []
    for line in lines:
        m = re.match(rf"{re.escape(tag)}:? (\d+) (\d+)$", line.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return out


def hanging(notes: list[tuple[int, int]]) -> set[int]:
    on: set[int] = set()
    for pitch, vel in notes:
        if vel:
            assert pitch not in on, f"note {pitch} struck again without its note-off"
            on.add(pitch)
        else:
            on.discard(pitch)
    return on


# --- Pure Data ------------------------------------------------------------------------------------
def _pd() -> str:
    pd = shutil.which("pd") or shutil.which("puredata")
    if pd is None:
        pytest.skip("Pure Data not installed (apt-get install --no-install-recommends puredata-core)")
    return pd


@pytest.mark.slow
def test_pd_example_patch_plays_a_phrase_and_the_answer_comes_back_into_pd(serve_osc, host, tiny_grid_model) -> None:
    pd = _pd()
    server = serve_osc(tiny_grid_model, "--tempo", "240")
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    reply_port = probe.getsockname()[1]
    probe.close()
    patch = host([pd, "-nogui", "-noaudio", "-nomidi", "-stderr", "-path", str(PLUGINS / "puredata"),
                  "-open", str(PLUGINS / "puredata" / "musicrnn-example.pd"),
                  "-send", f"musicrnn-example server 127.0.0.1 {server.osc_port}",
                  "-send", f"musicrnn-example listen {reply_port}"])  # replies through [netreceive -u -b]
    # a second after opening, the patch plays 4 notes and asks for a one-bar answer (1 s at 240 BPM)
    assert patch.wait_for(lambda: sum(v > 0 for _, v in note_lines(patch.lines, "musicrnn-note")) >= 2, timeout=20), \
        "\n".join(patch.lines[-30:] + server.err[-10:])
    time.sleep(0.3)
    rc = server.terminate()  # every note the model started gets its note-off, in Pd too
    assert rc in (0, 143, -15), server.err
    assert patch.wait_for(lambda: not hanging(note_lines(patch.lines, "musicrnn-note")), timeout=5), patch.lines[-20:]
    patch.stop()
    assert any("stopped: 4 notes in" in line for line in server.out), server.out  # the phrase reached the model
    status = [line for line in patch.lines if line.startswith("musicrnn: status")]
    assert status and "answering" in " ".join(status), patch.lines
    assert not [line for line in patch.lines if any(e in line for e in PD_ERRORS)], patch.lines
    assert not any("Traceback" in line for line in server.err), server.err


@pytest.mark.parametrize("name", ["musicrnn.pd", "musicrnn-help.pd", "musicrnn-example.pd"])
def test_pd_patches_open_headless_without_errors(name, host) -> None:
    pd = _pd()
    patch = host([pd, "-nogui", "-noaudio", "-nomidi", "-stderr", "-path", str(PLUGINS / "puredata"),
                  "-open", str(PLUGINS / "puredata" / name), "-send", "pd quit"])
    patch.proc.wait(20)
    patch.stop()
    assert patch.proc.returncode == 0, patch.lines
    assert not [line for line in patch.lines if any(e in line.lower() for e in PD_ERRORS)], patch.lines


def test_pd_patches_use_vanilla_osc_objects_and_known_addresses() -> None:
    text = (PLUGINS / "puredata" / "musicrnn.pd").read_text()
    for obj in ("oscformat", "oscparse", "netsend -u -b", "netreceive -u -b"):
        assert f" {obj}" in text
    known = {r.address.split("/")[-1] for r in osc.ROUTES}
    help_text = (PLUGINS / "puredata" / "musicrnn-help.pd").read_text() + (PLUGINS / "puredata" / "musicrnn-example.pd").read_text()
    controls = re.findall(r"#X msg \d+ \d+ ([a-z_]+)(?: [^;]*)?;", help_text)
    local = {"server", "listen", "bang"}
    assert controls and not [c for c in controls if c not in known | local], controls


# --- SuperCollider --------------------------------------------------------------------------------
SC_SCRIPT = """
(
var m = MusicRNN(%(port)d), ons = 0;
m.onNote = { |pitch, vel| if(vel > 0) { ons = ons + 1 }; ("musicrnn-sc-note" + pitch + vel).postln };
m.onStatus = { |s| ("musicrnn-sc-status" + s[0] + s[2]).postln };
m.onError = { |e| ("musicrnn-sc-error" + e).postln };
fork {
	0.3.wait;
	m.set(\\temperature, 0.9);
	[60, 64, 67, 72].do { |p| m.note(p, 90, 0.15); 0.25.wait };
	m.generate(1);
	40.do { if(ons < 2) { 0.25.wait } };
	m.status;
	0.3.wait;
	("musicrnn-sc-done" + ons).postln;
	m.free;
	0.3.wait;
	0.exit;
};
)
"""


@pytest.mark.slow
def test_supercollider_class_plays_a_phrase_and_gets_the_answer(serve_osc, host, tiny_grid_model, tmp_path) -> None:
    sclang = shutil.which("sclang")
    if sclang is None:
        pytest.skip("SuperCollider not installed (apt-get install --no-install-recommends supercollider-language)")
    server = serve_osc(tiny_grid_model, "--tempo", "240")
    conf = tmp_path / "sclang_conf.yaml"
    conf.write_text(f"includePaths:\n    - {PLUGINS / 'supercollider'}\nexcludePaths: []\npostInlineWarnings: false\n")
    script = tmp_path / "jam.scd"
    script.write_text(SC_SCRIPT % {"port": server.osc_port})
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    lang_port = probe.getsockname()[1]
    probe.close()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QTWEBENGINE_DISABLE_SANDBOX": "1", "XDG_RUNTIME_DIR": str(runtime),
           "HOME": str(tmp_path)}
    sc = host([sclang, "-u", str(lang_port), "-l", str(conf), str(script)], env=env, cwd=tmp_path)
    assert sc.wait_for(lambda: any(line.startswith("musicrnn-sc-done") for line in sc.lines), timeout=40), sc.lines[-30:]
    sc.proc.wait(10)
    sc.stop()
    notes = note_lines(sc.lines, "musicrnn-sc-note")
    assert sum(v > 0 for _, v in notes) >= 2, sc.lines[-30:]
    assert any(line.startswith("musicrnn-sc-status call-response answering") for line in sc.lines), sc.lines
    assert not any(line.startswith("musicrnn-sc-error") for line in sc.lines), sc.lines
    assert not any("ERROR" in line for line in sc.lines), sc.lines
    rc = server.terminate()
    assert rc in (0, 143, -15) and any("stopped: 4 notes in" in line for line in server.out), server.out + server.err


# --- Max ------------------------------------------------------------------------------------------
def test_max_patch_is_valid_json_wired_to_udp_and_uses_only_known_addresses() -> None:
    patch = json.loads((PLUGINS / "max" / "musicrnn.maxpat").read_text())["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patch["boxes"]}
    texts = [b.get("text", "") for b in boxes.values() if b["maxclass"] != "comment"]
    send = [i for i, b in boxes.items() if b.get("text", "").startswith("udpsend ")]
    recv = [i for i, b in boxes.items() if b.get("text", "").startswith("udpreceive ")]
    assert len(send) == 1 and len(recv) == 1
    lines = [(ln["patchline"]["source"], ln["patchline"]["destination"]) for ln in patch["lines"]]
    for (src, outlet), (dst, inlet) in lines:
        assert src in boxes and dst in boxes
        assert outlet < boxes[src]["numoutlets"] and inlet < boxes[dst]["numinlets"]
    known = {r.address for r in osc.ROUTES} | {r.address for r in osc.REPLIES}
    used = {a for t in texts for a in re.findall(r"/musicrnn/[a-z_/]+", t)}
    assert used and not used - known, used - known
    into_send = {src for (src, _), (dst, _) in lines if dst == send[0]}
    sent = {a for i in into_send for a in re.findall(r"/musicrnn/[a-z_/]+", boxes[i].get("text", ""))}
    assert {"/musicrnn/subscribe", "/musicrnn/note_on", "/musicrnn/generate"} <= sent
    route = next(b for b in boxes.values() if b.get("text", "").startswith("route /musicrnn/out/note_on"))
    assert any(src == recv[0] and dst == route["id"] for (src, _), (dst, _) in lines)


def test_every_plugin_has_a_readme_with_a_sketch_and_setup() -> None:
    for folder in ("puredata", "supercollider", "max"):
        text = (PLUGINS / folder / "README.md").read_text()
        assert "## Setup" in text and "```" in text and "musicrnn serve" in text and "--osc-port" in text
