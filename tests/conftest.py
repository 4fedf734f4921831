"""Shared fixtures: the test material committed under tests/fixtures/ (paths in helpers/paths.py),
a private JACK server, tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.models import tiny_checkpoint
from helpers.paths import EDGE_CASES, JSB, MIDI_CORPUS, NOTE_SEQ, PIANOROLL


def _need(path: Path) -> Path:
    """The fixture's path; a missing one is a broken checkout, so it fails rather than skips."""
    if not path.exists():
        pytest.fail(f"{path} not found: the test material under tests/fixtures/ is part of the repo")
    return path


@pytest.fixture(scope="session")
def pianoroll() -> Path:
    """The folder of the four piano-roll benchmark .mat files."""
    return _need(PIANOROLL)


@pytest.fixture(scope="session")
def midi_corpus() -> Path:
    return _need(MIDI_CORPUS)


@pytest.fixture(scope="session")
def edge_cases() -> Path:
    return _need(EDGE_CASES)


@pytest.fixture(scope="session")
def note_seq() -> Path:
    return _need(NOTE_SEQ)


@pytest.fixture(scope="session")
def jsb_path() -> Path:
    return _need(JSB)


# --- live play: a private JACK server with real MIDI ports ------------------------------------


@pytest.fixture
def jack_server(monkeypatch, tmp_path):
    """A running ``jackd -d dummy`` for one test (benchmarks/live_session.py's ``Jack``: ``name``,
    ``env`` for subprocesses, ``backend`` for clients in the test process, ``port()``); its
    output goes to the test's jackd.log."""
    import os
    import shutil
    import uuid

    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2)")
    import mido.backends.rtmidi as mido_rtmidi

    if "UNIX_JACK" not in mido_rtmidi.get_api_names():
        pytest.skip("python-rtmidi was built without JACK")
    from live_session import Jack  # benchmarks/ is on pytest's pythonpath

    name = f"musicrnn-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)  # Jack sets it too; this puts the old value back
    try:
        jack = Jack(name, log=tmp_path / "jackd.log")
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield jack
    finally:
        jack.close()


@pytest.fixture(scope="session")
def tiny_grid_model(tmp_path_factory) -> Path:
    """A small random checkpoint in the chorales model's codec (grid, 2 steps/beat, re-strikes)."""
    from musicrnn.codec import GridCodec

    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "grid.pt", GridCodec(steps_per_beat=2, mark_restrikes=True))


@pytest.fixture(scope="session")
def tiny_performance_model(tmp_path_factory) -> Path:
    """A small random checkpoint with the beat-time performance codec."""
    from musicrnn.codec import PerformanceCodec

    return tiny_checkpoint(tmp_path_factory.mktemp("models") / "performance.pt", PerformanceCodec(time_unit="beats"))


@pytest.fixture
def one_torch_thread():
    """Live play runs torch single-threaded; so do its tests (and then put things back)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
