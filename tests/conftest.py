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
