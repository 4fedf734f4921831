"""`musicrnn compose` as a user with real songs meets it (issue 13): primers kept as they were,
bars, note lengths, usage errors, reruns into the same folder, the piano roll."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.codec import GridCodec, PerformanceCodec

from helpers.models import tiny_checkpoint

CODECS = {
    "grid": GridCodec(steps_per_beat=4),
    "performance-beats": PerformanceCodec(time_unit="beats"),
    "performance-seconds": PerformanceCodec(time_unit="seconds"),
}


@pytest.fixture(params=list(CODECS))
def ckpt(request, tmp_path) -> Path:
    return tiny_checkpoint(tmp_path / f"{request.param}.pt", CODECS[request.param])


def compose(*args) -> object:
    return CliRunner().invoke(cli, ["compose", *(str(a) for a in args)])


def _song(path: Path, bars: int = 6, tempos=((0, 100.0), (4, 140.0), (10, 75.0)), sig=(4, 4),
          tpq: int = 480) -> Path:
    """A type-1 file as a DAW writes it: a tempo track (``tempos``: (beat, bpm)), then 'Lead'
    (a note per beat, pitch 60 + bar), 'Bass' (program 33, one whole-bar note per bar) and
    'Drums' (channel 10, a kick on each bar's first beat)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=tpq)
    meta = [(round(b * tpq), mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))) for b, bpm in tempos]
    meta.append((0, mido.MetaMessage("time_signature", numerator=sig[0], denominator=sig[1])))
    beats_per_bar = sig[0] * 4 // sig[1]
    lead = [(0, mido.MetaMessage("track_name", name="Lead"))]
    bass = [(0, mido.MetaMessage("track_name", name="Bass")), (0, mido.Message("program_change", program=33, channel=1))]
    drums = [(0, mido.MetaMessage("track_name", name="Drums"))]
    for bar in range(bars):
        drums += [(bar * beats_per_bar * tpq, mido.Message("note_on", note=36, velocity=100, channel=9)),
                  (bar * beats_per_bar * tpq + tpq // 4, mido.Message("note_off", note=36, velocity=0, channel=9))]
        for beat in range(beats_per_bar):
            t = (bar * beats_per_bar + beat) * tpq
            lead += [(t, mido.Message("note_on", note=60 + bar, velocity=90)),
                     (t + tpq // 2, mido.Message("note_off", note=60 + bar, velocity=0))]
        t = bar * beats_per_bar * tpq
        bass += [(t, mido.Message("note_on", note=36 + bar, velocity=70, channel=1)),
                 (t + beats_per_bar * tpq - 10, mido.Message("note_off", note=36 + bar, velocity=0, channel=1))]
    for events in (meta, lead, bass, drums):
        track, now = mido.MidiTrack(), 0
        for tick, msg in sorted(events, key=lambda e: e[0]):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return path


def _tracks(path: Path) -> dict[str, np.ndarray]:
    """Notes per track name as (start s, end s, pitch) rows, read by pretty_midi (not our reader)."""
    pm = pretty_midi.PrettyMIDI(str(path))
    return {inst.name: np.array(sorted((n.start, n.end, n.pitch) for n in inst.notes)) for inst in pm.instruments}


# --- 1. primers keep their tempo map and tracks; --primer-bars keeps their end -----------------


def test_primer_tempo_map_and_named_tracks_survive_to_the_millisecond(ckpt, tmp_path):
    primer = _song(tmp_path / "song.mid")
    r = compose("--model", ckpt, "--primer", primer, "-n", 2, "-o", tmp_path / "out", "--bars", 2, "--seed", 1)
    assert r.exit_code == 0, r.output
    before = _tracks(primer)
    for out in sorted((tmp_path / "out").glob("song-*.mid")):
        after = _tracks(out)
        assert list(after) == ["Lead", "Bass", "Drums", "musicrnn"]  # names and order kept, new music apart
        for name in ("Lead", "Bass", "Drums"):
            assert after[name].shape == before[name].shape
            assert np.abs(after[name] - before[name]).max() < 1e-3, name  # seconds, within 1 ms
        pm = pretty_midi.PrettyMIDI(str(out))
        assert [(i.program, i.is_drum) for i in pm.instruments[:3]] == [(0, False), (33, False), (0, True)]
        want = pretty_midi.PrettyMIDI(str(primer)).get_tempo_changes()
        assert np.allclose(pm.get_tempo_changes(), want, atol=1e-3)  # all 3 tempo changes, none added
        new = after["musicrnn"]
        assert len(new) and new[:, 0].min() >= before["Lead"][:, 1].max() - 1e-3  # after the primer
        # in beats at the primer's final tempo (75 BPM): 2 bars of 4/4 (+ up to a 4-beat last time shift)
        assert new[:, 1].max() <= before["Bass"][:, 1].max() + (2 * 4 + 4) * 60 / 75 + 0.05


def test_primer_bars_keeps_only_the_last_bars_as_context_and_output(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["performance-beats"])
    primer = _song(tmp_path / "song.mid", bars=6, tempos=((0, 100.0), (12, 140.0)))
    r = compose("--model", model, "--primer", primer, "--primer-bars", 2, "-n", 1, "-o", tmp_path / "out", "--bars", 1)
    assert r.exit_code == 0, r.output
    got = _tracks(tmp_path / "out" / "song-001.mid")
    # bars 5 and 6 only (lead pitches 64, 65), shifted to start at 0, at the tempo in force there
    assert sorted(set(got["Lead"][:, 2])) == [64, 65]
    assert got["Lead"][0, 0] == pytest.approx(0.0, abs=1e-3)
    assert got["Lead"][1, 0] == pytest.approx(60 / 140, abs=1e-3)
    assert sorted(got["Bass"][:, 2]) == [40, 41]
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "out" / "song-001.mid"))
    assert pm.get_tempo_changes()[1][0] == pytest.approx(140.0, abs=0.01)


def test_primer_seconds_cuts_notes_at_the_boundary(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    primer = _song(tmp_path / "song.mid", bars=3, tempos=((0, 120.0),))  # 6 s; bass notes last a bar (2 s)
    r = compose("--model", model, "--primer", primer, "--primer-seconds", 3, "-n", 1, "-o", tmp_path / "out", "--bars", 1)
    assert r.exit_code == 0, r.output
    bass = _tracks(tmp_path / "out" / "song-001.mid")["Bass"]
    # the last 3 s before the last note's end (5.99 s): the second bar's bass note (2-3.99 s)
    # sounded across the cut at 2.99 s, so it is kept from 0 to 1 s
    assert bass[0] == pytest.approx([0.0, 1.0, 37], abs=1e-3)
    assert len(bass) == 2


def test_a_long_primer_gets_a_note_naming_primer_bars(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    primer = _song(tmp_path / "long.mid", bars=40, tempos=((0, 120.0),))
    r = compose("--model", model, "--primer", primer, "-n", 1, "-o", tmp_path / "out", "--bars", 1)
    assert r.exit_code == 0, r.output
    assert "40 bars" in r.stderr and "--primer-bars" in r.stderr
    short = compose("--model", model, "--primer", primer, "--primer-bars", 4, "-n", 1, "-o", tmp_path / "o2", "--bars", 1)
    assert "--primer-bars" not in short.stderr


# --- 2. bars: a declared 1/4 is read as 4/4; the user can say the metre -----------------------


def _new_notes(path: Path):
    from musicrnn.midi import load_midi

    piece = load_midi(path)
    last = piece.notes["track"].max()
    return piece, piece.notes[piece.notes["track"] == last], piece.notes[piece.notes["track"] != last]


def test_bars_after_a_primer_that_declares_one_four_are_four_beats(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])  # the grid codec generates exactly the frames asked
    primer = _song(tmp_path / "pop.mid", bars=8, sig=(1, 4), tempos=((0, 120.0),))  # 8 beats in "1/4"
    r = compose("--model", model, "--primer", primer, "-n", 3, "-o", tmp_path / "out", "--bars", 2, "--seed", 4)
    assert r.exit_code == 0, r.output
    ends = []
    for out in sorted((tmp_path / "out").glob("pop-*.mid")):
        piece, new, old = _new_notes(out)
        assert piece.time_signatures[0][1:] == (1, 4)  # the primer's declaration is kept as it was
        ends.append(new["end"].max() - old["end"].max())
    # 2 bars of 4 beats, not 2 beats (from the primer's end on the frame grid, 10 ticks after its last note)
    assert 2 + 0.05 < max(ends) <= 8 + 0.05


def test_time_signature_and_beats_per_bar_set_the_bar(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    for args, folder in ((["--time-signature", "3/4"], "ts"), (["--beats-per-bar", "3"], "bpb")):
        r = compose("--model", model, "-n", 3, "-o", tmp_path / folder, "--bars", 1, "--seed", 4, *args)
        assert r.exit_code == 0, r.output
    for folder in ("ts", "bpb"):
        ends = []
        for out in sorted((tmp_path / folder).glob("*.mid")):
            piece, new, _ = _new_notes(out)
            assert piece.time_signatures[0][1:] == (3, 4)
            ends.append(new["end"].max())
        assert 2 < max(ends) <= 3 + 1e-6
    primer = _song(tmp_path / "song.mid", bars=4, tempos=((0, 120.0),))  # 16 beats of 4/4
    r = compose("--model", model, "--primer", primer, "--primer-bars", 2, "--beats-per-bar", 2, "-n", 1,
                "-o", tmp_path / "p", "--bars", 1)
    assert r.exit_code == 0, r.output
    _, _, old = _new_notes(tmp_path / "p" / "song-001.mid")
    assert old["end"].max() == pytest.approx(4 - 10 / 480)  # 2 bars of 2 beats


def test_one_function_gives_the_bar_length():
    from musicrnn.metre import Metre

    assert Metre().bar_beats([(0.0, 1, 4)]) == 4.0  # the export artefact
    assert Metre().bar_beats([(0.0, 4, 4), (8.0, 6, 8)], at=9) == 3.0
    assert Metre().bar_beats([(0.0, 2, 4)]) == 2.0  # a real 2/4 stays
    assert Metre().bar_beats(None) == 4.0
    assert Metre(beats_per_bar=3).bar_beats([(0.0, 1, 4)]) == 3.0
    assert Metre(time_signature=(6, 8)).bar_beats([(0.0, 4, 4)]) == 3.0


@pytest.mark.parametrize("args, text", [
    (["--time-signature", "3/5"], "power of two"),
    (["--time-signature", "waltz"], "N/D"),
    (["--beats-per-bar", "0"], "--beats-per-bar"),
    (["--beats-per-bar", "3", "--time-signature", "3/4"], "not both"),
])
def test_bad_metre_is_one_error_line(tmp_path, args, text):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = compose("--model", model, "-o", tmp_path / "out", *args)
    assert r.exit_code == 1
    assert r.stderr.startswith("error:") and text in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


# --- 3. notes end: compose caps them as serve does ------------------------------------------


def test_no_composed_note_outlasts_the_shared_cap_by_default(ckpt, tmp_path):
    from musicrnn.limits import MAX_NOTE_BEATS
    from musicrnn.midi import load_midi

    r = compose("--model", ckpt, "-n", 8, "-o", tmp_path / "out", "--bars", 16, "--seed", 3, "--tempo", 90)
    assert r.exit_code == 0, r.output
    lengths = np.concatenate([np.diff(load_midi(m).notes[["start", "end"]].tolist()).ravel()
                              for m in (tmp_path / "out").glob("*.mid")])
    assert lengths.max() <= MAX_NOTE_BEATS + 1e-6, lengths.max()
    r = compose("--model", ckpt, "-n", 8, "-o", tmp_path / "free", "--bars", 16, "--seed", 3, "--tempo", 90,
                "--max-note", 0)  # 0 still means no limit
    assert r.exit_code == 0, r.output


def test_serve_and_compose_share_the_note_cap():
    from musicrnn.cli import cli as group
    from musicrnn.limits import MAX_NOTE_BEATS
    from musicrnn.live.server import ServeOptions

    compose_opt = next(p for p in group.commands["compose"].params if p.name == "max_note")
    serve_opt = next(p for p in group.commands["serve"].params if p.name == "max_note_beats")
    assert compose_opt.default == serve_opt.default == ServeOptions().max_note_beats == MAX_NOTE_BEATS


def test_min_note_above_the_default_cap_names_max_note(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = compose("--model", model, "-o", tmp_path / "out", "--min-note", 10)
    assert r.exit_code == 1 and "--max-note" in r.stderr and "default 8" in r.stderr, r.stderr


# --- 4. usage errors and tempi ---------------------------------------------------------------


@pytest.mark.parametrize("tempo", ["0", "-5", "1000", "nan"])
def test_a_tempo_outside_the_range_is_an_error_not_120(tmp_path, tempo):
    from musicrnn.limits import MAX_BPM, MIN_BPM

    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = compose("--model", model, "-o", tmp_path / "out", "--tempo", tempo)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: --tempo") and f"{MIN_BPM}-{MAX_BPM}" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_compose_pitch_range_backwards_is_one_error_line(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    r = compose("--model", model, "-o", tmp_path / "out", "--pitch-range", "90-10")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and "--pitch-range" in r.stderr and len(r.stderr.splitlines()) == 1


# --- 5. a rerun never silently mixes with an earlier one --------------------------------------


def test_a_rerun_into_the_same_folder_is_refused_without_overwrite(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    out = tmp_path / "out"
    assert compose("--model", model, "-n", 3, "-o", out, "--bars", 1, "--png").exit_code == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    r = compose("--model", model, "-n", 2, "-o", out, "--bars", 1, "--seed", 7)
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--overwrite" in lines[0], r.stderr
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # nothing touched
    assert compose("--model", model, "-n", 1, "-o", out, "--bars", 1, "--name", "other").exit_code == 0


def test_overwrite_replaces_the_run_and_removes_its_stale_siblings(tmp_path):
    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    out = tmp_path / "out"
    assert compose("--model", model, "-n", 3, "-o", out, "--bars", 1, "--png").exit_code == 0
    (out / "notes.txt").write_text("mine")  # not compose's: stays
    r = compose("--model", model, "-n", 2, "-o", out, "--bars", 1, "--seed", 7, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(f.name for f in out.iterdir()) == ["musicrnn-001.mid", "musicrnn-002.mid", "notes.txt"]
    fresh = tmp_path / "fresh"
    assert compose("--model", model, "-n", 2, "-o", fresh, "--bars", 1, "--seed", 7).exit_code == 0
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in fresh.iterdir())


def test_a_failed_overwrite_keeps_the_earlier_run(tmp_path, monkeypatch):
    import musicrnn.compose as compose_module

    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["grid"])
    out = tmp_path / "out"
    assert compose("--model", model, "-n", 3, "-o", out, "--bars", 1).exit_code == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    real, calls = compose_module.write_midi, []

    def failing(piece, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(piece, path, **kw)

    monkeypatch.setattr(compose_module, "write_midi", failing)
    r = compose("--model", model, "-n", 3, "-o", out, "--bars", 1, "--seed", 9, "--overwrite")
    assert r.exit_code != 0
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before  # no temp files, old run intact


# --- 6. the piano roll shows velocity -----------------------------------------------------------


def test_piano_roll_shades_notes_by_velocity_and_keeps_the_legend_off_the_notes():
    import matplotlib.pyplot as plt

    from musicrnn.notes import Piece, make_notes
    from musicrnn.plot import piano_roll_figure

    piece = Piece(make_notes([(60, 30, 0.0, 1.0), (62, 120, 1.0, 2.0), (64, 120, 2.0, 3.0), (65, 30, 3.0, 4.0)]))
    fig = piano_roll_figure(piece, split_beat=2.0)
    try:
        ax = fig.axes[0]
        bars = {int(round(p.get_y() + p.get_height() / 2)): p.get_facecolor() for p in ax.patches}
        assert bars[60] != bars[62] and bars[64] != bars[65]  # same part, other velocity: other colour
        assert sum(bars[62][:3]) < sum(bars[60][:3])  # the louder one is the stronger (darker) colour
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "primer" in labels and any(label.startswith("velocity") for label in labels)
        fig.canvas.draw()
        legend = ax.get_legend().get_window_extent()
        assert legend.x0 >= ax.get_window_extent().x1  # beside the roll, not over its notes
    finally:
        plt.close(fig)


def test_tempo_with_a_primer_sets_the_new_music_only(tmp_path):
    from musicrnn.midi import load_midi

    model = tiny_checkpoint(tmp_path / "m.pt", CODECS["performance-seconds"])
    primer = _song(tmp_path / "song.mid", bars=2, tempos=((0, 100.0),))
    r = compose("--model", model, "--primer", primer, "--tempo", 150, "-n", 1, "-o", tmp_path / "out", "--bars", 1)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out" / "song-001.mid"
    assert [round(bpm, 3) for _, bpm in load_midi(out).tempos] == [100.0, 150.0]
    before, after = _tracks(primer), _tracks(out)
    assert np.abs(after["Lead"] - before["Lead"]).max() < 1e-3


def test_the_main_job_uses_the_pop_model_with_dynamics_and_a_key_per_piece(tmp_path: Path) -> None:
    """README's main job (`compose -n 8 -o out --seed 1 --png`), shortened: the default model is
    the pop one; its pieces play with varied velocities, each in a key of its own (drawn from the
    seed), shown in the summary; `--key` puts every piece in the key asked for."""
    res = compose("-n", 4, "-o", tmp_path / "out", "--seed", 1, "--bars", 4)
    assert res.exit_code == 0, res.output
    keys = [line.split("│")[-2].strip() for line in res.stdout.splitlines() if "musicrnn-0" in line]
    assert len(keys) == 4 and len(set(keys)) >= 3, keys  # not all in C: the model's keys are drawn per piece
    for f in sorted((tmp_path / "out").glob("*.mid")):
        velocities = [n.velocity for inst in pretty_midi.PrettyMIDI(str(f)).instruments for n in inst.notes]
        assert len(velocities) > 10 and len(set(velocities)) >= 5 and np.std(velocities) > 5, f.name
    res = compose("-n", 2, "-o", tmp_path / "f#", "--seed", 1, "--bars", 4, "--key", "F#:minor")
    assert res.exit_code == 0, res.output
    for f in sorted((tmp_path / "f#").glob("*.mid")):
        notes = [n for inst in pretty_midi.PrettyMIDI(str(f)).instruments for n in inst.notes]
        assert all(n.pitch % 12 in {6, 8, 9, 11, 1, 2, 4, 5} for n in notes), f.name  # F# minor and its raised 7th
