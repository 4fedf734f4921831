"""Every example in examples/ runs (at a tiny scale) and says in one line what it is for."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from musicrnn.checkpoint import load_checkpoint
from musicrnn.cli import cli
from musicrnn.live.server import ServeOptions, Server

from helpers.live import RecordingOutput, hanging_notes

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def purpose(path: Path) -> str:
    """The example's one line of purpose: its first comment/docstring line, 'Purpose: ...'."""
    for line in path.read_text().splitlines():
        m = re.match(r'^(?:#+|""")\s*Purpose: (.+)$', line.strip())
        if m:
            return m.group(1)
    return ""


def test_every_example_states_its_purpose_in_one_line() -> None:
    examples = sorted(p for p in EXAMPLES.iterdir() if p.is_file())
    assert {p.name for p in examples} >= {"compose.sh", "train_jsb.sh", "osc_jam.py", "daw_setup.md"}
    for p in examples:
        assert purpose(p), f"{p.name} has no 'Purpose: ...' line"


def _env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)  # the musicrnn command next to this Python
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}


def test_compose_example(tmp_path, tiny_grid_model) -> None:
    out = tmp_path / "pieces"
    result = subprocess.run(["bash", str(EXAMPLES / "compose.sh"), "--model", str(tiny_grid_model), "-n", "2", "--bars", "1"],
                            env={**_env(), "OUT": str(out)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.mid"))) == 2 and len(list(out.glob("*.png"))) == 2


@pytest.mark.slow
def test_train_jsb_example_at_a_tiny_scale(tmp_path, jsb_path) -> None:
    env = {**_env(), "JSB": str(jsb_path), "WORK": str(tmp_path), "MAX_STEPS": "3", "HIDDEN": "16", "LAYERS": "1",
           "EMBEDDING": "8", "BATCH": "4", "SEQ_LEN": "32", "THREADS": "1"}
    result = subprocess.run(["bash", str(EXAMPLES / "train_jsb.sh")], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "runs" / "jsb" / "best.pt").exists()
    assert "frame" in result.stdout.lower()  # the NLL per frame line
    assert len(list((tmp_path / "out" / "jsb").glob("*.mid"))) == 2
    bad = subprocess.run(["bash", str(EXAMPLES / "train_jsb.sh")], env={**env, "JSB": str(tmp_path / "none.mat")},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "not found" in bad.stderr


def test_osc_jam_client_example(tiny_grid_model, one_torch_thread) -> None:
    out = RecordingOutput()
    options = ServeOptions(midi_in="none", midi_out="none", osc_port=0, tempo=240, silence_beats=1)
    with Server(load_checkpoint(tiny_grid_model), options, output=out) as srv:
        result = subprocess.run([sys.executable, str(EXAMPLES / "osc_jam.py"), "--port", str(srv.osc.port), "--rounds", "1",
                                 "--bars", "1", "--listen", "1.5"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "model: note" in result.stdout and "0 left sounding" in result.stdout
        assert srv.status()["notes_in"] == 4
    assert not hanging_notes(out.messages())
    # no server: a clear message, not a hang
    result = subprocess.run([sys.executable, str(EXAMPLES / "osc_jam.py"), "--port", str(srv.osc.port), "--rounds", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no reply" in result.stderr


def test_daw_guide_points_at_the_readme_and_its_commands_parse() -> None:
    guide = (EXAMPLES / "daw_setup.md").read_text()
    readme = (REPO / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    links = re.findall(r"\(\.\./README\.md#([a-z0-9-]+)\)", guide)
    assert "playing-live" in links and set(links) <= anchors, (links, anchors)
    for target in re.findall(r"\(\.\./([^)#]+)\)", guide):
        assert (REPO / target).exists(), target
    commands = [line.strip() for line in guide.splitlines() if line.strip().startswith("musicrnn ")]
    assert commands
    for line in commands:
        args = shlex.split(line.split("#")[0])[1:]
        ctx = cli.make_context("musicrnn", args, resilient_parsing=False)
        sub = cli.get_command(ctx, args[0])
        assert isinstance(sub, click.Command)
        sub.make_context(args[0], args[1:])  # unknown options would raise here
