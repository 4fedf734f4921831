"""musicrnn.codec: round trips, idempotence, robustness to any token sequence, streaming equals
batch, persistence and augmentation, as properties over many codecs and note sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicrnn.codec import (
    BOS,
    CODEC_FORMAT_VERSION,
    KIND_SHIFT,
    Codec,
    GridCodec,
    NoteEvent,
    PerformanceCodec,
    codec_from_dict,
    frame_count,
)
from musicrnn.errors import CodecError
from musicrnn.notes import NOTE_DTYPE, make_notes

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_STEPS = 96  # notes lie within this many grid steps (keeps seconds codecs' token counts small)

# --------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------

pitch_ranges = st.sampled_from([(21, 108), (0, 127), (48, 72), (60, 60)])

performance_codecs = st.builds(
    lambda unit, steps, max_shift, bins, pr: PerformanceCodec(
        time_unit=unit, steps_per_unit=steps, max_shift_steps=max_shift, velocity_bins=bins,
        min_pitch=pr[0], max_pitch=pr[1],
    ),
    st.sampled_from(["seconds", "beats"]),
    st.sampled_from([None, 4, 24]),
    st.sampled_from([None, 1, 5]),
    st.sampled_from([0, 1, 7, 32, 100, 127]),
    pitch_ranges,
)
grid_codecs = st.builds(
    lambda spb, restrike, pr: GridCodec(steps_per_beat=spb, mark_restrikes=restrike, min_pitch=pr[0], max_pitch=pr[1]),
    st.sampled_from([1, 2, 4, 12]),
    st.booleans(),
    pitch_ranges,
)
codecs = st.one_of(performance_codecs, grid_codecs)


@st.composite
def codec_and_grid_notes(draw, codec_strategy=codecs) -> tuple[Codec, np.ndarray]:
    """A codec and notes it represents exactly: integer steps, no same-pitch overlap (a gap
    between same-pitch notes for a grid codec that cannot mark re-strikes), velocities it keeps."""
    codec = draw(codec_strategy)
    need_gap = isinstance(codec, GridCodec) and not codec.mark_restrikes
    pitches = draw(st.lists(st.integers(codec.min_pitch, codec.max_pitch), max_size=6, unique=True))
    rows = []
    for pitch in pitches:
        bounds = sorted(draw(st.lists(st.integers(0, MAX_STEPS), min_size=2, max_size=10, unique=True)))
        pairs = list(zip(bounds[0::2], bounds[1::2]))
        if not need_gap and draw(st.booleans()):
            pairs = list(zip(bounds[:-1], bounds[1:]))  # back-to-back notes: re-struck
        for on, off in pairs:
            rows.append((pitch, _representable_velocity(codec, draw), on / codec.steps_per_unit, off / codec.steps_per_unit))
    notes = make_notes(rows) if rows else np.zeros(0, NOTE_DTYPE)
    return codec, notes


def _representable_velocity(codec: Codec, draw) -> int:
    if isinstance(codec, GridCodec):
        return codec.velocity
    if codec.velocity_bins == 0:
        return codec.default_velocity
    return codec.bin_velocity(draw(st.integers(0, codec.velocity_bins - 1)))


@st.composite
def any_notes(draw) -> np.ndarray:
    """Anything a file might hold: overlaps, duplicates, zero or negative length, out-of-range
    pitches, negative starts, off-grid times, velocities 0..127."""
    n = draw(st.integers(0, 25))
    times = st.floats(-0.5, 8.0, allow_nan=False)
    rows = [
        (draw(st.integers(0, 127)), draw(st.integers(0, 127)), draw(times), draw(times))
        for _ in range(n)
    ]
    return make_notes(rows) if rows else np.zeros(0, NOTE_DTYPE)


def _key(notes: np.ndarray, with_velocity: bool) -> list[tuple]:
    fields = ["pitch", "start", "end"] + (["velocity"] if with_velocity else [])
    return sorted(tuple(float(x) for x in row) for row in notes[fields].tolist())


def _carries_velocity(codec: Codec) -> bool:
    return isinstance(codec, PerformanceCodec) and codec.velocity_bins > 0


def _events(notes: np.ndarray) -> list[tuple[float, int, int, int]]:
    """(time, 0=off/1=on, pitch, velocity) in time order, offs before ons, then by pitch."""
    evs = [(float(n["end"]), 0, int(n["pitch"]), 0) for n in notes]
    evs += [(float(n["start"]), 1, int(n["pitch"]), int(n["velocity"])) for n in notes]
    return sorted(evs)


# --------------------------------------------------------------------------------------------
# (a) exact round trip on the codec's grid
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(case=codec_and_grid_notes())
def test_notes_on_the_grid_round_trip_exactly(case) -> None:
    codec, notes = case
    tokens = codec.encode(notes)
    assert tokens.dtype == np.uint16
    assert tokens.size == 0 or int(tokens.max()) < codec.vocab_size
    assert BOS not in tokens.tolist()
    back = codec.decode(tokens)
    assert _key(back, _carries_velocity(codec)) == _key(notes, _carries_velocity(codec))
    if isinstance(codec, GridCodec):
        assert np.all(back["velocity"] == codec.velocity)
        assert frame_count(codec, tokens) == (int(round(notes["end"].max() * codec.steps_per_beat)) if len(notes) else 0)
    elif codec.velocity_bins == 0:
        assert np.all(back["velocity"] == codec.default_velocity)


def test_grid_without_restrikes_merges_back_to_back_notes() -> None:
    notes = make_notes([(60, 80, 0.0, 1.0), (60, 80, 1.0, 2.0)])
    plain, marked = GridCodec(steps_per_beat=1), GridCodec(steps_per_beat=1, mark_restrikes=True)
    assert _key(plain.decode(plain.encode(notes)), False) == [(60.0, 0.0, 2.0)]
    assert _key(marked.decode(marked.encode(notes)), False) == [(60.0, 0.0, 1.0), (60.0, 1.0, 2.0)]


def test_grid_frames_follow_the_docstring() -> None:
    codec = GridCodec(steps_per_beat=1, mark_restrikes=True)
    tokens = codec.encode(make_notes([(64, 80, 0.0, 2.0), (60, 80, 0.0, 1.0), (60, 80, 1.0, 2.0)]))
    assert codec.names(tokens) == ["ON(60 C4)", "ON(64 E4)", "STEP", "ON(60 C4)", "HOLD(64 E4)", "STEP"]


# --------------------------------------------------------------------------------------------
# (b) idempotence on anything
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(codec=codecs, notes=any_notes())
def test_encoding_is_idempotent(codec: Codec, notes: np.ndarray) -> None:
    tokens = codec.encode(notes)
    np.testing.assert_array_equal(codec.encode(codec.decode(tokens)), tokens)
    q = codec.quantize(notes)
    assert _key(codec.quantize(q), True) == _key(q, True)


# --------------------------------------------------------------------------------------------
# (c) any token sequence decodes to valid notes
# --------------------------------------------------------------------------------------------


@st.composite
def codec_and_tokens(draw) -> tuple[Codec, list[int]]:
    codec = draw(codecs)
    tokens = draw(st.lists(st.integers(0, codec.vocab_size - 1), max_size=300))
    return codec, tokens


@SETTINGS
@given(case=codec_and_tokens())
def test_any_token_sequence_decodes_to_valid_notes(case) -> None:
    codec, tokens = case
    notes = codec.decode(tokens)
    assert notes.dtype == NOTE_DTYPE
    assert np.all(notes["end"] > notes["start"])
    assert np.all(notes["start"] >= 0)
    assert np.all((notes["pitch"] >= codec.min_pitch) & (notes["pitch"] <= codec.max_pitch))
    assert np.all((notes["velocity"] >= 1) & (notes["velocity"] <= 127))


@SETTINGS
@given(case=codec_and_tokens())
def test_stream_decoder_pairs_every_note_on_with_one_note_off(case) -> None:
    codec, tokens = case
    dec = codec.stream_decoder()
    sounding: set[int] = set()
    last_time = 0.0

    def check(events: list[NoteEvent]) -> None:
        nonlocal last_time
        for ev in events:
            assert ev.time >= last_time
            last_time = ev.time
            if ev.velocity == 0:
                assert ev.pitch in sounding, f"note-off for {ev.pitch}, which is not sounding"
                sounding.discard(ev.pitch)
            else:
                assert ev.pitch not in sounding, f"second note-on for sounding {ev.pitch}"
                assert 1 <= ev.velocity <= 127
                assert codec.min_pitch <= ev.pitch <= codec.max_pitch
                sounding.add(ev.pitch)

    for t in tokens:
        check(dec.feed(t))
        assert dec.sounding == sounding
        assert dec.time >= last_time
    check(dec.close())
    assert sounding == set() and dec.sounding == set()


def test_stream_decoder_ignores_tokens_outside_the_vocabulary() -> None:
    for codec in (PerformanceCodec(), GridCodec()):
        dec = codec.stream_decoder()
        assert dec.feed(codec.vocab_size) == [] and dec.feed(-1) == [] and dec.feed(BOS) == []


# --------------------------------------------------------------------------------------------
# (d) streaming encoder == batch encoder
# --------------------------------------------------------------------------------------------


def _stream_encode(codec: Codec, notes: np.ndarray) -> np.ndarray:
    enc = codec.stream_encoder()
    out: list[int] = []
    for time, kind, pitch, velocity in _events(notes):
        out += enc.note_on(time, pitch, velocity) if kind else enc.note_off(time, pitch)
    if isinstance(codec, GridCodec) and len(notes):
        out += enc.advance(float(notes["end"].max()))  # the batch encoding ends at the last note-off frame
    return np.asarray(out, np.int64)


@SETTINGS
@given(case=codec_and_grid_notes())
def test_stream_encoder_matches_batch_on_grid_notes(case) -> None:
    codec, notes = case
    np.testing.assert_array_equal(_stream_encode(codec, notes), codec.encode(notes).astype(np.int64))


@SETTINGS
@given(codec=codecs, notes=any_notes())
def test_stream_encoder_matches_batch_on_quantised_notes(codec: Codec, notes: np.ndarray) -> None:
    q = codec.quantize(notes)
    np.testing.assert_array_equal(_stream_encode(codec, q), codec.encode(notes).astype(np.int64))


def test_grid_stream_encoder_rounds_half_steps_like_batch() -> None:
    # 32nd-note offsets land on half steps of a 16th grid; both encoders must round them alike
    codec = GridCodec(steps_per_beat=4)
    for start, end in ((0.125, 0.625), (0.375, 0.875), (0.125, 0.375)):
        notes = make_notes([(60, 80, start, end)])
        np.testing.assert_array_equal(_stream_encode(codec, notes), codec.encode(notes).astype(np.int64))


def test_performance_stream_encoder_clips_loud_velocities() -> None:
    codec = PerformanceCodec()
    tokens = codec.stream_encoder().note_on(0.0, 60, 200)  # e.g. from an OSC message
    assert max(tokens) < codec.vocab_size
    assert tokens == codec.stream_encoder().note_on(0.0, 60, 127)


def test_performance_encode_far_in_time_matches_encode_near_zero() -> None:
    """Times past the packed-key range sort with np.lexsort; both orders must give one encoding
    (duplicate notes with other velocities included, where the first in input order wins)."""
    codec = PerformanceCodec(time_unit="beats", steps_per_unit=1000, max_shift_steps=60000, velocity_bins=16)
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        start = rng.integers(0, 12, n) / 4.0
        start[0] = 0.0
        notes = make_notes(
            pitch=rng.integers(58, 64, n),  # few pitches: overlaps and duplicates
            velocity=rng.integers(1, 128, n),
            start=start,
            end=start + rng.integers(1, 6, n) / 4.0,
        )
        far = notes.copy()
        offset = 2e5  # beats: 2e8 steps, past the packed range
        far["start"] += offset
        far["end"] += offset
        near_tokens, far_tokens = codec.encode(notes), codec.encode(far)
        leading = int(np.argmax(codec.token_kind[far_tokens] != KIND_SHIFT))
        assert codec.shift_steps[far_tokens[:leading]].sum() == offset * 1000
        np.testing.assert_array_equal(far_tokens[leading:], near_tokens)


def test_grid_stream_encoder_advance_emits_empty_frames() -> None:
    codec = GridCodec(steps_per_beat=2)
    enc = codec.stream_encoder()
    assert enc.advance(1.0) == [codec.step_token, codec.step_token]
    assert enc.advance(0.5) == []  # time never goes backwards


# --------------------------------------------------------------------------------------------
# (e) persistence
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(codec=codecs)
def test_to_dict_rebuilds_an_equal_codec(codec: Codec) -> None:
    d = codec.to_dict()
    again = codec_from_dict(json.loads(json.dumps(d)))  # as stored in a manifest or checkpoint
    assert again == codec and type(again) is type(codec)
    assert again.vocab_size == codec.vocab_size
    np.testing.assert_array_equal(again.token_kind, codec.token_kind)
    np.testing.assert_array_equal(again.token_pitch, codec.token_pitch)
    assert repr(again) == repr(codec)


def test_codec_from_dict_rejects_unknown_type() -> None:
    with pytest.raises(CodecError, match="unknown codec type 'midi-like'"):
        codec_from_dict({**GridCodec().to_dict(), "type": "midi-like"})
    with pytest.raises(CodecError, match="type"):
        codec_from_dict({"steps_per_beat": 4})


def test_codec_from_dict_rejects_other_version_naming_both() -> None:
    with pytest.raises(CodecError) as info:
        codec_from_dict({**PerformanceCodec().to_dict(), "version": 99})
    msg = str(info.value)
    assert "version 99" in msg and f"version {CODEC_FORMAT_VERSION}" in msg
    assert "\n" not in msg


def test_codec_from_dict_rejects_unknown_option() -> None:
    with pytest.raises(CodecError, match="bad grid codec config"):
        codec_from_dict({**GridCodec().to_dict(), "colour": "blue"})


def test_bad_codec_options_raise_codec_error() -> None:
    for kwargs in ({"time_unit": "bars"}, {"velocity_bins": 200}, {"min_pitch": 90, "max_pitch": 80}):
        with pytest.raises(CodecError):
            PerformanceCodec(**kwargs)
    with pytest.raises(CodecError):
        GridCodec(steps_per_beat=0)


# --------------------------------------------------------------------------------------------
# (f) augmentation and names
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(case=codec_and_grid_notes(), semitones=st.integers(-24, 24))
def test_transpose_moves_pitches_or_refuses(case, semitones: int) -> None:
    codec, notes = case
    tokens = codec.encode(notes)  # uint16, as encode returns them
    moved = codec.transpose(tokens, semitones)
    fits = len(notes) == 0 or (
        notes["pitch"].min() + semitones >= codec.min_pitch and notes["pitch"].max() + semitones <= codec.max_pitch
    )
    if not fits:
        assert moved is None
        return
    assert moved is not None and len(moved) == len(tokens)
    expected = notes.copy()
    expected["pitch"] += semitones
    assert _key(codec.decode(moved), False) == _key(expected, False)
    down, up = codec.transpose_range(tokens)
    if len(notes):
        assert codec.transpose(tokens, down - 1) is None and codec.transpose(tokens, up + 1) is None
        assert codec.transpose(tokens, down) is not None and codec.transpose(tokens, up) is not None
    # the same on int64 tokens, as TokenData.piece returns them
    moved64 = codec.transpose(tokens.astype(np.int64), semitones)
    np.testing.assert_array_equal(moved64, moved.astype(np.int64))


@SETTINGS
@given(case=codec_and_grid_notes(performance_codecs), factor=st.floats(0.25, 4.0))
def test_stretch_keeps_length_and_token_kinds(case, factor: float) -> None:
    codec, notes = case
    tokens = codec.encode(notes)
    out = codec.stretch(tokens, factor)
    assert len(out) == len(tokens)
    np.testing.assert_array_equal(codec.token_kind[out], codec.token_kind[tokens])
    not_shift = codec.token_kind[tokens] != KIND_SHIFT
    np.testing.assert_array_equal(out[not_shift], tokens[not_shift])
    assert len(codec.decode(out)) == len(codec.decode(tokens))


@settings(max_examples=60, deadline=None)
@given(codec=codecs)
def test_every_token_has_a_readable_unique_name(codec: Codec) -> None:
    names = codec.names(range(codec.vocab_size))
    assert names[BOS] == "BOS"
    assert all(isinstance(n, str) and n and n.isprintable() for n in names)
    assert len(set(names)) == codec.vocab_size
    with pytest.raises(CodecError):
        codec.token_name(codec.vocab_size)


def test_token_names_read_well() -> None:
    perf = PerformanceCodec(time_unit="seconds")
    assert perf.token_name(perf.on0 + 60 - perf.min_pitch) == "NOTE_ON(60 C4)"
    assert perf.token_name(perf.off0 + 61 - perf.min_pitch) == "NOTE_OFF(61 C#4)"
    assert perf.token_name(perf.shift0) == "SHIFT(10ms)"
    beats = PerformanceCodec(time_unit="beats")
    assert beats.token_name(beats.shift0 + 2) == "SHIFT(3/12 beat)"
    grid = GridCodec()
    assert grid.token_name(grid.step_token) == "STEP"


def test_a_performance_note_at_its_longest_must_end_before_anything_else() -> None:
    """compose caps notes at 8 beats; a note reaching the cap used to mask only the waits, and
    the model struck note after note at that instant (a cluster of dozens of held notes)."""
    from musicrnn.sample import Constraints, SamplingConfig

    codec = PerformanceCodec(time_unit="beats", steps_per_unit=12, max_shift_steps=12)
    cons = Constraints.for_codec(codec, 1, SamplingConfig(max_note_steps=24))
    on60, on64 = codec.on0 + 60 - codec.min_pitch, codec.on0 + 64 - codec.min_pitch
    longest_shift = codec.shift0 + codec.max_shift_steps - 1
    for token in (on60, longest_shift, on64, longest_shift):
        assert cons.mask()[0, token]
        cons.update(np.array([token]))
    allowed = np.flatnonzero(cons.mask()[0])
    assert [codec.token_name(t) for t in allowed] == [codec.token_name(codec.off0 + 60 - codec.min_pitch)]
    cons.update(np.array([codec.off0 + 60 - codec.min_pitch]))
    mask = cons.mask()[0]
    assert mask[codec.on0 + 67 - codec.min_pitch] and mask[codec.shift0]  # free again
