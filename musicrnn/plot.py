"""Piano-roll pictures (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicrnn.notes import Piece

PRIMER_COLOUR = "#4c72b0"
CONTINUATION_COLOUR = "#dd8452"
LEGEND_VELOCITIES = (32, 80, 127)  # the shades the legend shows
QUIETEST_SHADE = 0.2  # a velocity-1 note keeps this much of its colour (over white), a velocity-127 note all of it


def velocity_colours(colour: str, velocities: np.ndarray) -> np.ndarray:
    """RGBA per note: ``colour`` blended with white, the stronger the louder, so that velocity
    shows without notes turning see-through where they overlap."""
    from matplotlib.colors import to_rgb

    shade = QUIETEST_SHADE + (1 - QUIETEST_SHADE) * (np.clip(np.asarray(velocities, float), 1, 127) - 1) / 126
    rgb = 1 - shade[:, None] * (1 - np.array(to_rgb(colour)))[None, :]
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1)


def piano_roll_figure(piece: Piece, split_beat: float | None = None, beats_per_bar: float = 4.0,
                      title: str | None = None, parts: np.ndarray | None = None):
    """Draw notes as bars over time (beats), primer (before ``split_beat``) and continuation in
    different colours shaded by velocity, with bar lines and a legend beside the roll (not over
    its notes); or, with ``parts`` (per note: True for the model's), a melody and the model's
    accompaniment in those colours. Returns the matplotlib figure; the caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    notes = piece.notes
    end = max(piece.duration_beats, beats_per_bar)
    fig, ax = plt.subplots(figsize=(min(24, 4 + end / 4) + 1.6, 4), dpi=100)
    if parts is not None:
        is_primer = ~np.asarray(parts, bool)
    else:
        is_primer = notes["start"] < split_beat - 1e-9 if split_beat is not None else np.zeros(len(notes), bool)
    for primer in (True, False):
        sel = notes[is_primer == primer]
        if len(sel):
            colours = velocity_colours(PRIMER_COLOUR if primer else CONTINUATION_COLOUR, sel["velocity"])
            ax.barh(sel["pitch"], sel["end"] - sel["start"], left=sel["start"], height=0.8,
                    color=colours, edgecolor="black", linewidth=0.3)
    for bar in np.arange(0, end + 1e-9, beats_per_bar):
        ax.axvline(bar, color="grey", linewidth=0.5, alpha=0.6)
    handles = []
    if split_beat is not None:
        ax.axvline(split_beat, color="black", linewidth=1.2)
        handles += [Patch(color=PRIMER_COLOUR, label="primer"), Patch(color=CONTINUATION_COLOUR, label="musicrnn")]
    elif parts is not None:
        handles += [Patch(color=PRIMER_COLOUR, label="melody"), Patch(color=CONTINUATION_COLOUR, label="musicrnn")]
    shades = velocity_colours(CONTINUATION_COLOUR, np.array(LEGEND_VELOCITIES))
    handles += [Patch(facecolor=c, edgecolor="black", linewidth=0.3, label=f"velocity {v}")
                for v, c in zip(LEGEND_VELOCITIES, shades)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, fontsize=8)
    if len(notes):
        ax.set_ylim(notes["pitch"].min() - 2, notes["pitch"].max() + 2)
    ax.set_xlim(0, end)
    ax.set_xlabel(f"beats (bar lines every {beats_per_bar:g})")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or "")
    fig.tight_layout()
    return fig


def piano_roll_png(piece: Piece, path: Path, split_beat: float | None = None, beats_per_bar: float = 4.0,
                   title: str | None = None, parts: np.ndarray | None = None) -> Path:
    """:func:`piano_roll_figure` saved as a PNG at ``path`` (titled with its name by default)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig = piano_roll_figure(piece, split_beat, beats_per_bar, title or path.stem, parts)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
