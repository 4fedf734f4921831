"""Where the test material lives: the small real files committed under tests/fixtures/ (see its
README.md for sources and licences), so a fresh clone needs nothing next to it."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
MIDI_CORPUS = FIXTURES / "midi-corpus"
EDGE_CASES = MIDI_CORPUS / "edge-cases"
NOTE_SEQ = MIDI_CORPUS / "note-seq"
PIANOROLL = FIXTURES / "pianoroll"
JSB = PIANOROLL / "JSB_Chorales.mat"
BENCHMARKS = REPO / "benchmarks"
