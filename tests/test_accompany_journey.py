"""Accompany mode, offline (issue 17): the accompany codec (a melody and its accompaniment in one
frame sequence), `data prepare --roles`, training on it, and `compose --accompany`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.codecs import AccompanyCodec, codec_from_dict
from musicrnn.corpus import TokenData, read_manifest
from musicrnn.midi import WRITE_TICKS_PER_BEAT
from musicrnn.notes import make_notes
from musicrnn.sample import SamplingConfig


def _song(path: Path, tracks=("MELODY", "PIANO"), bpm: float = 100.0, metre=(3, 4), bars: int = 4) -> Path:
    """A tiny song: a melody of quarter notes over three-note chords a bar long (one track each)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(*metre, 0.0))
    beat = 60.0 / bpm
    per_bar = metre[0]
    melody = pretty_midi.Instrument(program=0, name=tracks[0])
    for i in range(bars * per_bar):
        melody.notes.append(pretty_midi.Note(90, [72, 74, 76, 77, 79][i % 5], i * beat, (i + 0.9) * beat))
    pm.instruments.append(melody)
    if len(tracks) > 1:
        piano = pretty_midi.Instrument(program=0, name=tracks[1])
        for b in range(bars):
            for p in ([48, 52, 55], [53, 57, 60])[b % 2]:
                piano.notes.append(pretty_midi.Note(60 + 10 * (b % 2), p, b * per_bar * beat, (b + 1) * per_bar * beat))
        pm.instruments.append(piano)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


# --- the codec ---------------------------------------------------------------------------------


def _two_roles() -> np.ndarray:
    """A melody (track 0) over an accompaniment (track 1), on the sixteenth grid."""
    return make_notes(pitch=[60, 62, 64, 64, 48, 52, 55, 48], velocity=[90, 90, 90, 90, 60, 70, 80, 100],
                      start=[0, 1, 1.5, 2.0, 0, 0, 0, 2], end=[1, 1.5, 2.0, 3.25, 2, 1, 2, 3],
                      track=[0, 0, 0, 0, 1, 1, 1, 1])


def test_both_roles_round_trip_and_a_frame_reads_melody_then_accompaniment() -> None:
    codec = AccompanyCodec()
    notes = _two_roles()
    tokens = codec.encode(notes)
    names = codec.names(tokens)
    # frame 0: the melody, the separator, the velocity of the accompaniment's onsets, its chord
    assert names[:7] == ["M_ON(60 C4)", "ACC", "VEL(8)", "A_ON(48 C3)", "A_ON(52 E3)", "A_ON(55 G3)", "STEP"]
    assert names[7:13] == ["M_HOLD(60 C4)", "ACC", "A_HOLD(48 C3)", "A_HOLD(52 E3)", "A_HOLD(55 G3)", "STEP"]
    assert codec.count_frames(tokens) == 13  # up to the last note's end (3.25 beats)
    roles = codec.decode_roles(tokens)
    mel, acc = roles["melody"], roles["accompaniment"]
    assert [(n["pitch"], n["start"], n["end"]) for n in mel] == [(60, 0, 1), (62, 1, 1.5), (64, 1.5, 2.0), (64, 2.0, 3.25)]
    assert sorted((n["pitch"], n["start"], n["end"]) for n in acc) == [(48, 0, 2), (48, 2, 3), (52, 0, 1), (55, 0, 2)]
    assert set(acc["track"]) == {1} and set(mel["track"]) == {0}
    # velocities: a bin per frame of onsets (mean of 60, 70, 80 -> bin 8 -> 68; 100 -> bin 12 -> 100)
    assert sorted(set(acc["velocity"].tolist())) == [68, 100]
    both = codec.decode(tokens)
    assert len(both) == 8 and codec.encode(both).tolist() == tokens.tolist()  # decode gives what encodes the same


def test_the_melody_part_of_each_frame_is_what_encode_writes_before_the_accompaniment() -> None:
    codec = AccompanyCodec()
    notes = _two_roles()
    tokens = codec.encode(notes).tolist()
    frames = codec.melody_frames(notes[notes["track"] == 0])
    acc = codec.acc_token
    i = 0
    for part in frames:  # each frame of the full sequence starts with the melody part alone
        assert tokens[i : i + len(part)] == part.tolist() and part[-1] == acc
        i = tokens.index(codec.step_token, i) + 1
    assert codec.melody_frame_tokens({60, 64}, {64}) == [codec.m_hold0 + 60 - 21, codec.m_on0 + 64 - 21, acc]
    enc = codec.stream_encoder()  # live: note-ons and offs, then the ending frame's melody part
    enc.note_on(0.0, 60, 90)
    assert enc.melody_frame() == [codec.m_on0 + 60 - 21, acc]
    assert enc.melody_frame() == [codec.m_hold0 + 60 - 21, acc]
    # the accompaniment alone, as live play wants it
    dec = codec.stream_decoder(roles=(1,))
    events = [e for t in codec.encode(notes).tolist() for e in dec.feed(t)] + dec.close()
    assert {e.pitch for e in events} == {48, 52, 55}


def test_transposition_moves_both_roles() -> None:
    codec = AccompanyCodec()
    tokens = codec.encode(_two_roles())
    up = codec.decode_roles(codec.transpose(tokens, 3))
    assert sorted(up["melody"]["pitch"].tolist()) == [63, 65, 67, 67]
    assert sorted(up["accompaniment"]["pitch"].tolist()) == [51, 51, 55, 58]


def _feed(cons, codec, tokens) -> None:
    for t in tokens:
        cons.update(np.array([t]))


def test_the_accompanist_grammar() -> None:
    codec = AccompanyCodec()
    cfg = SamplingConfig(pitch_range=(40, 80), max_polyphony=2)
    cons = codec.constraints(1, cfg)
    p = lambda first, pitch: first + pitch - codec.min_pitch  # noqa: E731
    m = cons.mask()[0]  # the melody part (fed when accompanying): melody pitches or ACC
    assert m[codec.acc_token] and not m[codec.step_token] and not m[codec.vel0] and not m[p(codec.a_on0, 60)]
    _feed(cons, codec, [p(codec.m_on0, 72), codec.acc_token])
    m = cons.mask()[0]  # after ACC: VEL, new notes in range, STEP; no melody token, no second ACC
    assert m[codec.vel0 : codec.a_on0].all() and m[codec.step_token]
    assert not m[codec.m_on0 : codec.acc_token + 1].any()
    assert m[p(codec.a_on0, 40)] and m[p(codec.a_on0, 80)] and not m[p(codec.a_on0, 39)] and not m[p(codec.a_on0, 81)]
    assert not m[codec.a_hold0 : codec.step_token].any()  # nothing sounded before: nothing to hold
    _feed(cons, codec, [codec.vel0 + 5, p(codec.a_on0, 48)])
    m = cons.mask()[0]  # ascending, no second VEL
    assert not m[codec.vel0 : codec.a_on0].any() and not m[p(codec.a_on0, 48)] and m[p(codec.a_on0, 52)]
    _feed(cons, codec, [p(codec.a_on0, 55)])
    m = cons.mask()[0]  # two notes: the polyphony is full, only STEP
    assert np.flatnonzero(m).tolist() == [codec.step_token]
    _feed(cons, codec, [codec.step_token, codec.acc_token])
    m = cons.mask()[0]  # the next frame may hold what sounded, and only that
    holds = np.flatnonzero(m[codec.a_hold0 : codec.step_token]) + codec.min_pitch
    assert holds.tolist() == [48, 55]
    assert cons.step_counts().tolist() == [1]
    fork = cons.fork()
    _feed(fork, codec, [p(codec.a_hold0, 55)])
    assert not fork.mask()[0, p(codec.a_hold0, 48)] and cons.mask()[0, p(codec.a_hold0, 48)]  # forks are independent


def test_the_grammar_masks_rows_apart() -> None:
    codec = AccompanyCodec()
    cons = codec.constraints(2, SamplingConfig())
    cons.update(np.array([codec.acc_token, codec.m_on0 + 10]))
    m = cons.mask()
    assert m[0, codec.step_token] and not m[1, codec.step_token]
    assert m[1, codec.acc_token] and not m[1, codec.m_on0 + 10] and m[1, codec.m_on0 + 11]


# --- data prepare --roles ------------------------------------------------------------------------


def _prepare(args: list[str]):
    return CliRunner().invoke(cli, ["data", "prepare", *args, "--workers", "1"])


ROLES = ["--codec", "accompany", "--roles", "melody=melody,Bridge", "--roles", "accompaniment=PIANO"]


def test_prepare_with_roles_keeps_each_role_and_skips_files_lacking_one(tmp_path: Path) -> None:
    src = tmp_path / "songs"
    for i in range(6):
        _song(src / f"s{i}.mid", bars=2 + i % 3)
    _song(src / "solo.mid", tracks=("MELODY",))  # no accompaniment: skipped
    out = tmp_path / "data"
    res = _prepare([str(src), "-o", str(out), *ROLES, "--split", "1,0,0", "--key-normalise"])
    assert res.exit_code == 0, res.output
    assert "pieces train/valid/test 6/0/0" in res.output and "1 of 7 rejected" in res.output
    assert "roles: melody = bridge, melody; accompaniment = piano (any case); 1 file skipped" in res.output
    manifest = read_manifest(out)
    assert manifest["tracks"]["choice"]["roles"] == {"melody": ["bridge", "melody"], "accompaniment": ["piano"]}
    assert manifest["rejected"][0]["file"].endswith("solo.mid")
    assert "no notes for the role accompaniment" in manifest["rejected"][0]["reason"]
    stats = CliRunner().invoke(cli, ["data", "stats", str(out)])
    assert stats.exit_code == 0 and "roles: melody = bridge, melody; accompaniment = piano" in " ".join(stats.output.split())
    data = TokenData(out, "train")
    codec = data.codec
    assert isinstance(codec, AccompanyCodec) and codec == codec_from_dict(manifest["codec"])
    roles = codec.decode_roles(data.piece(0))
    # key-normalised: C major already, so the parts are what was played
    assert set(roles["melody"]["pitch"].tolist()) == {72, 74, 76, 77, 79}
    assert set(roles["accompaniment"]["pitch"].tolist()) <= {48, 52, 55, 53, 57, 60}


@pytest.mark.parametrize("args, message", [
    (["--codec", "grid", "--roles", "melody=MELODY"], "error: --roles: the grid codec has no roles"),
    (["--codec", "accompany"], "error: the accompany codec needs the tracks of every role: --roles for melody, "
                               "accompaniment is missing"),
    (["--codec", "accompany", "--roles", "melody=MELODY"], "--roles for accompaniment is missing"),
    (["--codec", "accompany", "--roles", "lead=MELODY", "--roles", "accompaniment=PIANO"],
     "error: --roles lead=MELODY: give ROLE=TRACK,TRACK with ROLE one of melody, accompaniment"),
    ([*ROLES, "--tracks", "MELODY"], "error: --tracks and --roles both choose tracks"),
    (["--codec", "accompany", "--roles", "melody=MELODY,PIANO", "--roles", "accompaniment=PIANO"],
     "error: --roles: track 'piano' is in the melody and the accompaniment role"),
])
def test_prepare_role_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    src = _song(tmp_path / "s.mid")
    res = _prepare([str(src), "-o", str(tmp_path / "data"), *args])
    assert res.exit_code == 1 and message in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "data").exists()


# --- training and compose --accompany -----------------------------------------------------------


def test_a_model_trains_and_scores_on_role_data_and_remembers_the_roles(tmp_path: Path) -> None:
    src = tmp_path / "songs"
    for i in range(4):
        _song(src / f"s{i}.mid", bars=2 + i % 2)
    data = tmp_path / "data"
    assert _prepare([str(src), "-o", str(data), *ROLES, "--split", "0.5,0.5,0", "--key-normalise"]).exit_code == 0
    run = tmp_path / "run"
    tiny = ["--hidden", "16", "--embedding", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "16",
            "--device", "cpu", "--threads", "1", "--warmup-steps", "1", "--max-steps", "2"]
    trained = CliRunner().invoke(cli, ["train", str(data), "-o", str(run), *tiny])
    assert trained.exit_code == 0, trained.output
    from musicrnn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.meta["roles"]["melody"] == ["bridge", "melody"] and ckpt.meta["key_normalised"] is True
    scored = CliRunner().invoke(cli, ["eval", str(run / "best.pt"), str(data), "--split", "valid", "--device", "cpu"])
    assert scored.exit_code == 0 and "NLL/frame" in scored.output, scored.output


def _model(tmp_path: Path, key_normalised: bool = False) -> Path:
    from helpers.models import tiny_checkpoint

    meta = {"roles": {"melody": ["melody", "bridge"], "accompaniment": ["piano"]}, "key_normalised": key_normalised}
    return tiny_checkpoint(tmp_path / "acc.pt", AccompanyCodec(), meta)


def _notes(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    pm = pretty_midi.PrettyMIDI(str(path))
    return {inst.name: sorted((n.pitch, round(n.start, 4), round(n.end, 4)) for n in inst.notes)
            for inst in pm.instruments}


def _compose(*args: str):
    return CliRunner().invoke(cli, ["compose", "--device", "cpu", *args])


def test_compose_accompany_writes_the_melody_unchanged_and_an_accompaniment_track(tmp_path: Path) -> None:
    import mido

    model = _model(tmp_path)
    song = _song(tmp_path / "in" / "tune.mid", tracks=("Melody", "PIANO"), bpm=100.0, metre=(3, 4), bars=4)
    lead = _song(tmp_path / "in" / "lead.mid", tracks=("Lead",), bpm=132.0, metre=(4, 4), bars=2)
    out = tmp_path / "out"
    res = _compose("--model", str(model), "--accompany", str(song), "--accompany", str(lead), "-o", str(out),
                   "--seed", "3", "--png")
    assert res.exit_code == 0, res.output
    assert f"{out / 'tune.mid'}: melody = track Melody (12 notes)" in res.output
    assert f"{out / 'lead.mid'}: melody = all pitched tracks (no track named bridge, melody)" in res.output
    assert sorted(f.name for f in out.iterdir()) == ["lead.mid", "lead.png", "tune.mid", "tune.png"]
    for src, bpm, metre in ((song, 100.0, (3, 4)), (lead, 132.0, (4, 4))):
        written, given = _notes(out / src.name), _notes(src)
        melody_name = "Melody" if src == song else "Lead"
        assert sorted(written) == sorted([melody_name, "musicrnn"])  # the input's PIANO track is left out
        assert written[melody_name] == given[melody_name]  # the melody as it was
        pm = pretty_midi.PrettyMIDI(str(out / src.name))
        assert pm.get_tempo_changes()[1].tolist() == pytest.approx([bpm], rel=1e-5)
        assert [(t.numerator, t.denominator) for t in pm.time_signature_changes] == [metre]
        acc = written["musicrnn"]
        assert acc, "no accompaniment"
        lo, hi = min(s for _, s, _ in given[melody_name]), max(e for _, _, e in given[melody_name])
        assert all(lo - 1e-3 <= s < e <= hi + 1e-3 for _, s, e in acc)  # within the melody's span
        for track in mido.MidiFile(str(out / src.name)).tracks:  # every note closed
            ons = sum(1 for m in track if m.type == "note_on" and m.velocity > 0)
            offs = sum(1 for m in track if m.type == "note_off" or (m.type == "note_on" and m.velocity == 0))
            assert ons == offs

    # another run: refused without --overwrite (one line), the same bytes with it; a row does
    # not depend on the others of its batch
    before = (out / "tune.mid").read_bytes()
    again = _compose("--model", str(model), "--accompany", str(song), "-o", str(out), "--seed", "3")
    assert again.exit_code == 1 and again.output.startswith(f"error: {out / 'tune.mid'} already exists; give --overwrite")
    alone = _compose("--model", str(model), "--accompany", str(song), "-o", str(out), "--seed", "3", "--overwrite")
    assert alone.exit_code == 0, alone.output
    assert (out / "tune.mid").read_bytes() == before


def test_compose_accompany_keeps_key_and_range_per_melody_of_a_key_normalised_model(tmp_path: Path) -> None:
    model = _model(tmp_path, key_normalised=True)
    c_major = _song(tmp_path / "in" / "c.mid")
    d_major = tmp_path / "in" / "d.mid"
    pm = pretty_midi.PrettyMIDI(str(c_major))
    for inst in pm.instruments:
        for n in inst.notes:
            n.pitch += 2
    pm.write(str(d_major))
    out = tmp_path / "out"
    res = _compose("--model", str(model), "--accompany", str(c_major), "--accompany", str(d_major), "-o", str(out),
                   "--pitch-range", "50-70", "--max-polyphony", "2")
    assert res.exit_code == 0, res.output
    assert "moved into C by its key (estimated), its accompaniment back: c.mid +0, d.mid -2" in res.output
    for f in ("c.mid", "d.mid"):
        acc = _notes(out / f)["musicrnn"]
        assert acc and all(50 <= p <= 70 for p, _, _ in acc)  # output pitches, whatever the melody's key
        starts = [s for _, s, _ in acc]
        assert max(starts.count(s) for s in starts) <= 2


@pytest.mark.parametrize("args, message", [
    (["-n", "3"], "error: -n does not apply to --accompany"),
    (["--primer", "x.mid"], "error: --primer does not apply to --accompany"),
    (["--min-note", "1"], "error: --min-note does not apply to --accompany"),
])
def test_compose_accompany_refuses_options_it_has_no_use_for(tmp_path: Path, args: list[str], message: str) -> None:
    res = _compose("--model", str(_model(tmp_path)), "--accompany", str(_song(tmp_path / "a.mid")), "-o",
                   str(tmp_path / "out"), *args)
    assert res.exit_code == 1 and res.output.startswith(message) and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out").exists()


def test_compose_accompany_with_a_model_without_roles_names_model_and_the_fix(tmp_path: Path) -> None:
    from musicrnn.codecs import GridCodec

    from helpers.models import tiny_checkpoint

    model = tiny_checkpoint(tmp_path / "grid.pt", GridCodec())
    res = _compose("--model", str(model), "--accompany", str(_song(tmp_path / "a.mid")), "-o", str(tmp_path / "out"))
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1
    assert res.output.startswith(f"error: --model {model}: its grid codec has no melody and accompaniment roles")
    assert "--codec accompany --roles" in res.output


# --- on the melody's grid, following its chords ---------------------------------------------------

CHORDS = [(0, 4, 7), (5, 9, 0), (7, 11, 2), (0, 4, 7)]  # C F G C, a bar each


def _arpeggio_song(path: Path, late_s: float = 0.0, bars: int = 8, bpm: float = 120.0) -> Path:
    """A melody of quarter notes arpeggiating C, F, G, C (a bar each, over and over), every note
    ``late_s`` after the file's tick grid, as in a MIDI file made from a recording."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm, resolution=WRITE_TICKS_PER_BEAT)  # what compose writes in
    beat = 60.0 / bpm
    melody = pretty_midi.Instrument(program=0, name="MELODY")
    for b in range(bars):
        chord = CHORDS[b % 4]
        for k in range(4):
            t = (4 * b + k) * beat + late_s
            melody.notes.append(pretty_midi.Note(90, 72 + chord[k % 3], t, t + 0.9 * beat))
    pm.instruments.append(melody)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def test_compose_accompany_plays_on_the_melodys_grid_not_the_files(tmp_path: Path) -> None:
    late = 0.040  # 40 ms after every tick of the file's sixteenths (125 ms at 120 BPM)
    song = _arpeggio_song(tmp_path / "in" / "late.mid", late_s=late)
    out = tmp_path / "out"
    res = _compose("--model", str(_model(tmp_path)), "--accompany", str(song), "-o", str(out), "--seed", "1")
    assert res.exit_code == 0, res.output
    written = _notes(out / "late.mid")
    assert written["MELODY"] == _notes(song)["MELODY"]  # the melody as it was, off the file's grid
    onsets = np.array([s for _, s, _ in written["musicrnn"]])
    assert len(onsets) > 10
    off = (onsets - late + 0.0625) % 0.125 - 0.0625  # from the melody's nearest sixteenth
    assert np.abs(off).max() < 0.002, off  # within a millisecond or so, not 40 ms early


def _in_chord(path: Path) -> float:
    """The share of the accompaniment's onsets whose pitch class is in its bar's chord."""
    acc = _notes(path)["musicrnn"]
    hits = [p % 12 in CHORDS[int(s // 2.0) % 4] for p, s, _ in acc]
    return sum(hits) / len(hits)


def test_compose_accompany_follows_the_melodys_chords_unless_told_not_to(tmp_path: Path) -> None:
    song = _arpeggio_song(tmp_path / "in" / "tune.mid", bars=16)
    model = _model(tmp_path)
    shares = {}
    for flag in ("--follow-chords", "--no-follow-chords"):
        out = tmp_path / flag
        res = _compose("--model", str(model), "--accompany", str(song), "-o", str(out), "--seed", "2", flag)
        assert res.exit_code == 0, res.output
        shares[flag] = _in_chord(out / "tune.mid")
    # a random model strikes a chord tone about as often as 3 notes in 12; following, far more often
    assert shares["--no-follow-chords"] < 0.4 and shares["--follow-chords"] > shares["--no-follow-chords"] + 0.25, shares
    default = _compose("--model", str(model), "--accompany", str(song), "-o", str(tmp_path / "default"), "--seed", "2")
    assert default.exit_code == 0
    assert (tmp_path / "default" / "tune.mid").read_bytes() == (tmp_path / "--follow-chords" / "tune.mid").read_bytes()


def test_follow_chords_without_accompany_is_a_one_line_error(tmp_path: Path) -> None:
    res = _compose("--model", str(_model(tmp_path)), "-o", str(tmp_path / "out"), "--no-follow-chords")
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert res.output.startswith("error: --follow-chords/--no-follow-chords apply to --accompany only")
    assert not (tmp_path / "out").exists()


def test_the_model_hears_the_melody_from_its_own_beats(tmp_path: Path) -> None:
    from musicrnn.accompaniment import AccompanyOptions, _model_frames, read_melody

    # every note a sixteenth and 40 ms (0.08 beat) after the file's beats: the model's frame 0 is the
    # melody's first beat, its onsets on frames 0, 4, 8, ... as in the songs it learnt from
    song = _arpeggio_song(tmp_path / "late.mid", late_s=0.125 + 0.040, bars=2)
    m = read_melody(song, AccompanyOptions([song]), 4)
    assert m.offset == pytest.approx(0.33, abs=0.005) and m.beat_phase == pytest.approx(0.33, abs=0.005)
    parts, first, end = _model_frames(AccompanyCodec(), m)
    struck = [k for k, part in enumerate(parts) if any(AccompanyCodec().token_name(int(t)).startswith("M_ON") for t in part)]
    assert first == 0 and struck == list(range(0, 32, 4))
