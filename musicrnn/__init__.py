"""musicrnn: LSTM/GRU note-sequence models for composing and live jamming over MIDI and OSC."""

from __future__ import annotations

__version__ = "0.1.0"

from musicrnn.errors import CheckpointError, CodecError, DataError, MidiError, MusicRNNError

__all__ = [
    "__version__",
    "MusicRNNError",
    "MidiError",
    "CodecError",
    "DataError",
    "CheckpointError",
]
