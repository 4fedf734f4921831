"""Shared fixtures: where the read-only test material lives (../shared from the repo root)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
MIDI_CORPUS = SHARED / "midi-corpus"
EDGE_CASES = MIDI_CORPUS / "edge-cases"
NOTE_SEQ = MIDI_CORPUS / "note-seq"
PIANOROLL = SHARED / "datasets" / "polyphonic-pianoroll"
JSB = PIANOROLL / "JSB_Chorales.mat"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found (the shared test material is not checked out next to the repo)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


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


class JackServer:
    """A running ``jackd -d dummy`` for one test: ``name``, ``env`` for subprocesses, and
    ``backend`` (mido, rtmidi UNIX_JACK) for clients in the test process."""

    def __init__(self, name: str, env: dict[str, str], backend) -> None:
        self.name, self.env, self.backend = name, env, backend

    def port(self, kind: str, part: str) -> str:
        """The full name of the input/output port whose name contains ``part``."""
        names = self.backend.get_input_names() if kind == "input" else self.backend.get_output_names()
        found = [n for n in names if part in n]
        assert len(found) == 1, f"{kind} port {part!r} among {names}"
        return found[0]


@pytest.fixture
def jack_server(monkeypatch, tmp_path):
    import os
    import shutil
    import subprocess
    import time
    import uuid

    jackd = shutil.which("jackd")
    if jackd is None:
        pytest.skip("jackd not installed (apt-get install --no-install-recommends jackd2)")
    import mido
    import mido.backends.rtmidi as mido_rtmidi

    if "UNIX_JACK" not in mido_rtmidi.get_api_names():
        pytest.skip("python-rtmidi was built without JACK")
    from musicrnn.live.midi_ports import _probe

    name = f"musicrnn-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": name, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "jackd.log", "w")
    proc = subprocess.Popen([jackd, "-n", name, "-d", "dummy", "-r", "48000", "-p", "64"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
        deadline = time.monotonic() + 10
        while _probe("jack") is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jackd did not start: {(tmp_path / 'jackd.log').read_text()[-500:]}")
            time.sleep(0.05)
        yield JackServer(name, env, mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True))
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _tiny_checkpoint(path: Path, codec) -> Path:
    import torch

    from musicrnn.model import ModelConfig, MusicRNN, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, MusicRNN(ModelConfig(codec.vocab_size, hidden=32, embedding=16, layers=1)), codec)
    return path


@pytest.fixture(scope="session")
def tiny_grid_model(tmp_path_factory) -> Path:
    """A small random checkpoint in the default model's codec (grid, 2 steps/beat, re-strikes)."""
    from musicrnn.codec import GridCodec

    return _tiny_checkpoint(tmp_path_factory.mktemp("models") / "grid.pt", GridCodec(steps_per_beat=2, mark_restrikes=True))


@pytest.fixture(scope="session")
def tiny_performance_model(tmp_path_factory) -> Path:
    """A small random checkpoint with the beat-time performance codec."""
    from musicrnn.codec import PerformanceCodec

    return _tiny_checkpoint(tmp_path_factory.mktemp("models") / "performance.pt", PerformanceCodec(time_unit="beats"))


@pytest.fixture
def one_torch_thread():
    """Live play runs torch single-threaded; so do its tests (and then put things back)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
