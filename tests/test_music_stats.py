"""`musicrnn eval --music-stats`: real piece openings vs our samples vs the n-gram's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.codec import GridCodec
from musicrnn.corpus import TokenData, prepare
from musicrnn.evaluate import real_excerpts
from musicrnn.music_stats import mean_stats

STATS = {"pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate",
         "groove_consistency", "pitch_range", "note_density", "velocity_mean", "velocity_spread", "duration_spread"}


@pytest.fixture(scope="module")
def jsb(tmp_path_factory, jsb_path):
    out = tmp_path_factory.mktemp("data") / "jsb"
    prepare([str(jsb_path)], out, GridCodec(steps_per_beat=2, mark_restrikes=True))
    return out


def test_real_excerpts_are_the_opening_of_every_piece(jsb):
    test = TokenData(jsb, "test")
    excerpts = real_excerpts(jsb, "test", bars=2)
    assert len(excerpts) == len(test)  # one per piece: no piece counts more than another
    first = test.codec.decode_piece(test.piece(0)).notes
    assert np.array_equal(np.sort(excerpts[0]["pitch"]), np.sort(first[first["start"] < 8]["pitch"]))
    for ex in excerpts:
        assert (ex["start"] >= 0).all() and (ex["start"] < 8).all() and (ex["end"] <= 8).all()
    stats = mean_stats(excerpts)
    assert set(stats) == STATS and 3.0 < stats["polyphony"] < 4.5  # chorales: four voices


def test_eval_music_stats_cli_prints_the_comparison(jsb):
    res = CliRunner().invoke(cli, ["eval", "chorales", str(jsb), "--split", "test", "--json",
                                   "--music-stats", "--samples", "4", "--bars", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["music_stats"]
    assert set(out["stats"]) == {"real", "ours", "5-gram"}
    assert all(set(t) == STATS for t in out["stats"].values())
    # the grid codec's one velocity (80 everywhere) says nothing: 8 MusPy statistics + duration spread
    assert 0 <= out["ours_closer"] <= out["compared"] == 9 and out["samples"] == 4


def test_eval_precision_bf16_costs_under_one_percent_nll(jsb):
    """`compose --precision bf16` generates with bfloat16 weights; `eval --precision bf16`
    scores that path: on the bundled model it costs well under 1 % in NLL."""
    got = {}
    for precision in ("fp32", "bf16"):
        res = CliRunner().invoke(cli, ["eval", "chorales", str(jsb), "--split", "valid", "--json",
                                       "--precision", precision, "--device", "cpu"])
        assert res.exit_code == 0, res.output
        got[precision] = json.loads(res.output)["nll_per_token"]
    assert got["bf16"] != got["fp32"] and abs(got["bf16"] / got["fp32"] - 1) < 0.01


def test_velocity_and_duration_statistics_and_what_closer_counts() -> None:
    from musicrnn.music_stats import closer_count, music_stats
    from musicrnn.notes import NOTE_DTYPE

    notes = np.zeros(3, NOTE_DTYPE)
    notes["pitch"], notes["velocity"] = [60, 64, 67], [40, 80, 120]
    notes["start"], notes["end"] = [0, 1, 2], [0.5, 2, 4]
    st = music_stats(notes)
    assert st["velocity_mean"] == 80 and st["velocity_spread"] == pytest.approx(32.66, abs=0.01)
    assert st["duration_spread"] == pytest.approx(np.std([0.5, 1, 2]))
    real = dict.fromkeys(STATS, 1.0)
    ours, base = {**real, "note_density": 1.1}, {**real, "note_density": 2.0}
    assert closer_count(real, ours, base) == (1, 1)  # the ten the three share exactly are not counted
