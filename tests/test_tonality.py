"""musicrnn.tonality: key names, Krumhansl–Schmuckler key estimation, the shift home."""

from __future__ import annotations

import numpy as np
import pytest

from musicrnn.errors import MusicRNNError
from musicrnn.sample import parse_key as parse_scale
from musicrnn.tonality import (
    MODES,
    SCALES,
    Key,
    estimate_key,
    estimate_keys,
    home_shift,
    parse_key,
    pitch_class_profiles,
    scale_pitch_classes,
)

WHITE = frozenset({0, 2, 4, 5, 7, 9, 11})
ALL_KEYS = [Key(t, m) for m in MODES for t in range(12)]


@pytest.mark.parametrize("key", ALL_KEYS, ids=str)
def test_estimate_key_finds_every_key_from_its_scale_and_from_its_arpeggio(key: Key) -> None:
    third = 4 if key.mode == "major" else 3
    for low in (36, 60, 72):  # any octave
        scale = [low + key.tonic + s for s in SCALES[key.mode]] + [low + 12 + key.tonic]
        arpeggio = [low + key.tonic + s for s in (0, third, 7, 12)]
        for pitches in (scale, arpeggio, scale + arpeggio):
            got = estimate_key(np.array(pitches), np.ones(len(pitches)))
            assert (got.tonic, got.mode) == (key.tonic, key.mode), f"{pitches} -> {got}"
            assert 0.5 < got.score <= 1.0


def test_durations_weight_the_profile() -> None:
    # C E G with G held long is still C major; the same notes with E and G long, and B added,
    # lean to E minor
    assert str(estimate_key(np.array([60, 64, 67]), np.array([4.0, 1.0, 2.0]))) == "C:major"
    assert str(estimate_key(np.array([60, 64, 67, 71]), np.array([0.25, 4.0, 2.0, 2.0]))) == "E:minor"


def test_estimate_keys_does_many_pieces_at_once() -> None:
    pitches = np.array([60, 64, 67, 62, 66, 69, 57, 60, 64])
    piece = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3])
    keys = estimate_keys(pitch_class_profiles(pitches, np.ones(9), piece, 4))
    assert [str(k) for k in keys] == ["C:major", "D:major", "C:major", "A:minor"]
    assert keys[2].score == 0.0  # a piece without notes


@pytest.mark.parametrize("text,key", [
    ("F#:min", Key(6, "minor")), ("Gb:maj", Key(6, "major")), ("E:min", Key(4, "minor")),
    ("A:minor", Key(9, "minor")), ("c:MAJOR", Key(0, "major")), ("Bb:maj", Key(10, "major")),
    ("Cb:maj", Key(11, "major")), (" Db:min ", Key(1, "minor")),
])
def test_parse_key_reads_pop909_and_cli_names(text: str, key: Key) -> None:
    assert parse_key(text) == key


@pytest.mark.parametrize("text", ["H:maj", "C:dorian", "C", "", ":maj", "C#x:min"])
def test_parse_key_refuses_other_text_in_one_line(text: str) -> None:
    with pytest.raises(MusicRNNError, match="TONIC:MODE") as info:
        parse_key(text)
    assert "\n" not in str(info.value)


def test_compose_key_parser_shares_the_names() -> None:
    assert parse_scale("Gb:maj") == scale_pitch_classes(parse_key("Gb:maj"))
    assert parse_scale("A:minor") == scale_pitch_classes(Key(9, "minor")) == WHITE | {8}
    assert parse_scale("D:dorian") == WHITE


@pytest.mark.parametrize("key", ALL_KEYS, ids=str)
def test_home_shift_moves_every_tonic_to_c(key: Key) -> None:
    shift = home_shift(key)
    assert -5 <= shift <= 6
    assert (key.tonic + shift) % 12 == 0
    home = {(pc + shift) % 12 for pc in scale_pitch_classes(key)}
    assert home == (WHITE if key.mode == "major" else scale_pitch_classes(Key(0, "minor")))
    assert home_shift(key.tonic) == shift


def test_home_shift_examples() -> None:
    assert [home_shift(parse_key(k)) for k in ("C:maj", "A:min", "F#:maj", "Gb:maj", "Db:maj", "E:min", "F:maj")] == [
        0, 3, 6, 6, -1, -4, -5]


def test_scale_pitch_classes() -> None:
    assert scale_pitch_classes(Key(0, "major")) == WHITE
    assert scale_pitch_classes(Key(9, "minor")) == WHITE | {8}  # natural minor plus the raised 7th
    assert scale_pitch_classes(Key(6, "major")) == {6, 8, 10, 11, 1, 3, 5}
