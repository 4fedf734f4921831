"""Fault injection: processes killed with SIGKILL at random points (and at the worst points, by
tests/fault_child.py) lose no work and leave nothing half-written.

- ``musicrnn train`` killed, then continued with ``--resume``, ends at the same valid NLL as an
  uninterrupted run with the same seed (and, single-threaded on a CPU, the same weights); every
  ``*.pt`` in the run folder loads at every moment, and no temporary file outlives the next run.
- ``musicrnn data prepare`` killed, then run again, writes the identical manifest (and identical
  token files); meanwhile the output folder is the old complete one or absent, never partial.

Kill times are random; the seed is printed with every kill so a failure can be replayed with
MUSICRNN_FAULT_SEED=<seed>.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.codec import GridCodec
from musicrnn.corpus import TokenData, prepare, read_manifest
from musicrnn.midi import write_midi
from musicrnn.notes import Piece, make_notes

CHILD = Path(__file__).with_name("fault_child.py")
MAX_STEPS = 300
SEED = int(os.environ.get("MUSICRNN_FAULT_SEED", str(time.time_ns() % 100_000)))
TRAIN_ARGS = ["--hidden", "16", "--embedding", "8", "--layers", "1", "--batch-size", "4", "--seq-len", "16",
              "--max-steps", str(MAX_STEPS), "--eval-every", "10", "--device", "cpu", "--threads", "1", "--warmup-steps", "1",
              "--dropout", "0.2", "--augment-transpose", "2", "--seed", "5"]
PREPARE_ARGS = ["--codec", "grid", "--steps", "2", "--workers", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _start(args: list[str], fault: str = "") -> subprocess.Popen:
    """The CLI (through fault_child.py) in its own process group, so a kill takes its workers too."""
    return subprocess.Popen([sys.executable, str(CHILD), *args], env={**_env(), "MUSICRNN_TEST_FAULT": fault},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise
    return proc.returncode, err.decode(errors="replace")


def _run(args: list[str], fault: str = "", timeout: float = 300) -> tuple[int, str]:
    return _finish(_start(args, fault), timeout)


@pytest.fixture
def procs():
    """Every process a test starts is killed at its end, whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            _kill(p)


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory) -> Path:
    """300 small synthetic MIDI files (no shared test material needed)."""
    folder = tmp_path_factory.mktemp("midi")
    rng = np.random.default_rng(7)
    for i in range(300):
        n = int(rng.integers(8, 40))
        starts = np.cumsum(rng.choice([0.0, 0.5, 0.5, 1.0], n))
        rows = [(int(rng.integers(40, 90)), int(rng.integers(30, 120)), float(s), float(s + rng.choice([0.5, 1.0, 1.5])))
                for s in starts]
        write_midi(Piece(make_notes(rows)), folder / f"song{i:03d}.mid")
    return folder


@pytest.fixture(scope="module")
def reference_data(midi_folder: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "data"
    prepare([str(midi_folder)], out, GridCodec(steps_per_beat=2), workers=1)
    return out


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _timed_run(args: list[str], started: Path, done: Path, procs) -> float:
    """Run to the end; seconds from ``started`` appearing to ``done`` appearing (the span to kill in)."""
    proc = _start(args)
    procs.append(proc)
    t0 = t1 = None
    while proc.poll() is None:
        now = time.monotonic()
        if t0 is None and started.exists():
            t0 = now
        if t0 is not None and t1 is None and done.exists():
            t1 = now
        time.sleep(0.002)
    rc, err = _finish(proc)
    assert rc == 0, err
    end = time.monotonic()
    return max(0.01, (t1 or end) - (t0 or end))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)


def _assert_complete_or_absent(out: Path, reference: Path) -> str:
    if not out.exists():
        return "absent"
    assert _folder_bytes(out) == _folder_bytes(reference), "the output folder is partial or different"
    for split in ("train", "valid", "test"):
        TokenData(out, split)
    return "complete"


# ============================================================================================
# data prepare
# ============================================================================================


@pytest.mark.slow
def test_prepare_killed_at_random_points_then_rerun_gives_the_identical_folder(midi_folder, reference_data, tmp_path, procs):
    rng = random.Random(SEED)
    out = tmp_path / "data"
    partial = tmp_path / ".data.partial"
    args = ["data", "prepare", str(midi_folder), "-o", str(out), *PREPARE_ARGS]
    span = _timed_run(args, partial, out, procs)  # how long the partial folder exists
    shutil.rmtree(out)
    states = []
    for attempt in range(6):  # attempts 0-2: no output yet; 3-5: replacing a complete output
        if attempt == 3:
            rc, err = _run(args)
            assert rc == 0, err
        proc = _start(args)
        procs.append(proc)
        _wait_for(partial, proc)
        delay = rng.uniform(0, span)
        time.sleep(delay)
        mid_run = proc.poll() is None and partial.exists()
        _kill(proc)
        # a run that finished between the check and the kill (a loaded machine) was not killed mid-run
        mid_run = mid_run and proc.returncode != 0
        state = _assert_complete_or_absent(out, reference_data)
        states.append((mid_run, state))
        print(f"seed {SEED}: kill {attempt} {delay:.3f} s of {span:.3f} s after the partial folder appeared "
              f"(mid-run: {mid_run}) -> output {state}")
        if attempt < 3 and mid_run:
            assert state == "absent"
    assert any(mid for mid, _ in states), "no kill landed mid-run: the test proved nothing"
    rc, err = _run(args)
    assert rc == 0, err
    assert _assert_complete_or_absent(out, reference_data) == "complete"
    assert read_manifest(out) == read_manifest(reference_data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "a temporary folder was left behind"


@pytest.mark.slow
def test_prepare_killed_while_swapping_in_the_new_folder(midi_folder, reference_data, tmp_path):
    out = tmp_path / "data"
    args = ["data", "prepare", str(midi_folder), "-o", str(out), *PREPARE_ARGS]
    for existing in (False, True):
        if existing:
            rc, err = _run(args)
            assert rc == 0, err
        rc, err = _run(args, fault="prepare-swap")
        assert rc == -signal.SIGKILL, err
        assert not out.exists()  # the old folder was moved aside whole; the new one not yet in place
        assert (tmp_path / ".data.old").exists() == existing
        rc, err = _run(args)
        assert rc == 0, err
        assert _assert_complete_or_absent(out, reference_data) == "complete"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ============================================================================================
# train
# ============================================================================================


@pytest.fixture(scope="module")
def train_data(reference_data) -> Path:
    return reference_data


@pytest.fixture(scope="module")
def straight(train_data, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted run, and how long its training loop took (from its first log line)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    started: list[subprocess.Popen] = []
    try:
        span = _timed_run(["train", str(train_data), "-o", str(run), *TRAIN_ARGS], run / "metrics.jsonl",
                          run / "no-such-file", started)
    finally:
        for p in started:
            if p.poll() is None:
                _kill(p)
    return run, span


def _final_valid_nll(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if "valid_nll" in r and r["step"] == MAX_STEPS]
    assert final, "the run did not reach its last evaluation"
    return final[-1]["valid_nll"]


def _assert_every_checkpoint_loads(run: Path) -> list[str]:
    names = []
    for pt in sorted(run.glob("*.pt")):
        load_checkpoint(pt)  # CheckpointError would mean a half-written file
        names.append(pt.name)
    return names


def _resume_until_done(train_data: Path, run: Path) -> None:
    args = ["train", str(train_data), "-o", str(run), *TRAIN_ARGS]
    rc, err = _run(args + (["--resume"] if (run / "last.pt").exists() else ["--overwrite"]))  # a kill before the first checkpoint leaves metrics.jsonl
    assert rc == 0, err
    assert "Traceback" not in err
    assert not list(run.glob(".*.tmp")), "temporary checkpoint files were left behind"


def _assert_same_result(run: Path, straight_run: Path) -> None:
    nll, expected = _final_valid_nll(run), _final_valid_nll(straight_run)
    print(f"final valid NLL {nll:.6f} (uninterrupted: {expected:.6f})")
    assert abs(nll - expected) <= 1e-4
    a = torch.load(straight_run / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_killed_at_random_points_resumes_to_the_same_result(train_data, straight, tmp_path, procs):
    straight_run, span = straight
    rng = random.Random(SEED)
    run = tmp_path / "run"
    args = ["train", str(train_data), "-o", str(run), *TRAIN_ARGS]
    steps = []
    for attempt in range(4):
        resume = (run / "last.pt").exists()
        metrics = run / "metrics.jsonl"
        size = metrics.stat().st_size if resume and metrics.exists() else 0
        proc = _start(args + (["--resume"] if resume else ["--overwrite"]))
        procs.append(proc)
        # wait for the training loop (a new metrics line, after torch's import), then kill at a random moment
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and (metrics.stat().st_size if metrics.exists() else 0) <= size:
            time.sleep(0.002)
        delay = rng.uniform(0, span / 2)
        time.sleep(delay)
        _kill(proc)
        step = torch.load(run / "last.pt", weights_only=True)["trainer"]["step"] if (run / "last.pt").exists() else None
        steps.append(step)
        print(f"seed {SEED}: kill {attempt} {delay:.3f} s into the loop (resumed: {resume}); last.pt at step {step}; "
              f"checkpoints {_assert_every_checkpoint_loads(run)}")
    assert any(s is not None and s < MAX_STEPS for s in steps), "no kill landed mid-run: the test proved nothing"
    _resume_until_done(train_data, run)
    _assert_every_checkpoint_loads(run)
    _assert_same_result(run, straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2, 5])
def test_train_killed_while_writing_a_checkpoint_resumes_to_the_same_result(nth, train_data, straight, tmp_path):
    """The nth checkpoint write is cut after a random number of bytes: the temporary file is
    half-written, the .pt files are intact, and the resumed run ends where the straight one did."""
    rng = random.Random(SEED + nth)
    run = tmp_path / "run"
    nbytes = rng.randrange(1, 6000)  # a checkpoint of this tiny model is ~10-20 kB
    rc, err = _run(["train", str(train_data), "-o", str(run), *TRAIN_ARGS], fault=f"ckpt-write:{nth}:{nbytes}")
    print(f"seed {SEED}: write {nth} cut after {nbytes} bytes; rc {rc}")
    assert rc == -signal.SIGKILL, err
    leftovers = list(run.glob(".*.pt.*.tmp"))
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size <= nbytes  # the cut write
    _assert_every_checkpoint_loads(run)
    _resume_until_done(train_data, run)
    _assert_every_checkpoint_loads(run)
    _assert_same_result(run, straight[0])
