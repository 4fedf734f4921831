"""Piano-roll pictures (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicrnn.midi import Piece

PRIMER_COLOUR = "#4c72b0"
CONTINUATION_COLOUR = "#dd8452"


def piano_roll_png(piece: Piece, path: Path, split_beat: float | None = None, beats_per_bar: float = 4.0,
                   title: str | None = None) -> Path:
    """Draw notes as bars over time (beats), primer (before ``split_beat``) and continuation in
    different colours, with bar lines; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    notes = piece.notes
    end = max(piece.duration_beats, beats_per_bar)
    fig, ax = plt.subplots(figsize=(min(24, 4 + end / 4), 4), dpi=100)
    is_primer = notes["start"] < split_beat - 1e-9 if split_beat is not None else np.zeros(len(notes), bool)
    for primer in (True, False):
        sel = notes[is_primer == primer]
        if len(sel):
            ax.barh(sel["pitch"], sel["end"] - sel["start"], left=sel["start"], height=0.8,
                    color=PRIMER_COLOUR if primer else CONTINUATION_COLOUR, edgecolor="black", linewidth=0.3)
    for bar in np.arange(0, end + 1e-9, beats_per_bar):
        ax.axvline(bar, color="grey", linewidth=0.5, alpha=0.6)
    if split_beat is not None:
        ax.axvline(split_beat, color="black", linewidth=1.2)
        ax.legend(handles=[Patch(color=PRIMER_COLOUR, label="primer"), Patch(color=CONTINUATION_COLOUR, label="musicrnn")],
                  loc="upper right", fontsize=8)
    if len(notes):
        ax.set_ylim(notes["pitch"].min() - 2, notes["pitch"].max() + 2)
    ax.set_xlim(0, end)
    ax.set_xlabel("beats (bar lines every %g)" % beats_per_bar)
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or Path(path).stem)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
