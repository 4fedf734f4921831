"""Limits that several commands share, kept in one place so that they agree."""

from __future__ import annotations

# No generated note lasts longer than this by default, in compose (--max-note) and serve
# (--max-note-beats): sampling can hold a note for tens of seconds (4-6 % of compose's notes
# lasted over 4 s, the longest 24.5 s of a 30-s piece, against 0.09 % in POP909).
MAX_NOTE_BEATS = 8.0
