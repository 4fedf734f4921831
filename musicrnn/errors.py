"""The project's own exceptions.

Every error a user can cause (a bad file, a bad option, a missing checkpoint) is raised as a
subclass of :class:`MusicRNNError` with a one-line message that names the thing and the fix.
The CLI prints that line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class MusicRNNError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""

    def __init__(self, message: str) -> None:
        # Keep messages to one line so logs and the console stay readable.
        super().__init__(" ".join(str(message).split()))


class MidiError(MusicRNNError):
    """A MIDI file could not be read or written (corrupt, not MIDI, empty, no notes)."""


class CodecError(MusicRNNError):
    """Notes or tokens that a codec cannot represent, or a codec config it does not know."""


class DataError(MusicRNNError):
    """A corpus source or a prepared data folder is missing, malformed or incompatible."""


class CheckpointError(MusicRNNError):
    """A model checkpoint is missing, unsafe, corrupt or from an incompatible version."""
