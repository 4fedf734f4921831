"""The train/eval user journey of issue 13: existing run folders, empty splits, n-gram specs,
Ctrl-C, bundled models by name, logs when output is redirected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from musicrnn.cli import cli
from musicrnn.codec import GridCodec
from musicrnn.corpus import prepare

from helpers.midi import write_piano_pieces, write_song

CODEC = GridCodec(steps_per_beat=2, mark_restrikes=True)  # the bundled chorales model's codec
TINY = ["--hidden", "16", "--embedding", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "16",
        "--device", "cpu", "--threads", "1", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def midis(tmp_path_factory) -> Path:
    return write_piano_pieces(tmp_path_factory.mktemp("src") / "midi", 12, tune=(55, 80), length=0.45,
                              held=(48, 52, 55))


@pytest.fixture(scope="module")
def data(midis, tmp_path_factory) -> Path:
    """train and valid pieces, an empty test split."""
    out = tmp_path_factory.mktemp("data") / "mine"
    m = prepare([str(midis)], out, CODEC, (0.5, 0.5, 0.0), workers=1)
    assert m["splits"]["train"]["pieces"] and m["splits"]["valid"]["pieces"] and not m["splits"]["test"]["pieces"]
    return out


@pytest.fixture(scope="module")
def data_no_valid(midis, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "novalid"
    prepare([str(midis)], out, CODEC, (1.0, 0.0, 0.0), workers=1)
    return out


def _train(data: Path, run: Path, *extra: str, steps: int = 2):
    return CliRunner().invoke(cli, ["train", str(data), "-o", str(run), *TINY, "--max-steps", str(steps), *extra])


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- 1. an existing run folder is never replaced without being asked -------------------------


def test_train_into_an_existing_run_is_refused_and_touches_nothing(data, tmp_path):
    run = tmp_path / "run"
    first = _train(data, run, steps=4)
    assert first.exit_code == 0, first.output
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    again = _train(data, run, steps=1)
    assert again.exit_code == 1
    lines = _error_lines(again.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), again.stderr
    assert "--resume" in lines[0] and "--overwrite" in lines[0] and "best.pt" in lines[0]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before


def test_a_folder_with_only_metrics_is_refused_too(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    result = _train(data, run, steps=1)
    assert result.exit_code == 1 and "metrics.jsonl" in result.stderr
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_overwrite_starts_again_and_replaces_the_old_run(data, tmp_path):
    run = tmp_path / "run"
    assert _train(data, run, steps=4).exit_code == 0
    assert max(r["step"] for r in _rows(run)) == 4
    result = _train(data, run, "--overwrite", steps=1)
    assert result.exit_code == 0, result.output
    assert max(r["step"] for r in _rows(run)) == 1  # the old metrics are gone, not appended to
    import torch

    for name in ("best.pt", "last.pt"):
        assert torch.load(run / name, weights_only=True)["trainer"]["step"] == 1


def test_resume_and_overwrite_together_are_refused(data, tmp_path):
    run = tmp_path / "run"
    assert _train(data, run, steps=1).exit_code == 0
    result = _train(data, run, "--resume", "--overwrite", steps=2)
    assert result.exit_code == 1
    assert _error_lines(result.stderr)[0].startswith("error: --resume and --overwrite")


# --- 2. an empty split never gives made-up numbers --------------------------------------------


def test_training_with_an_empty_valid_split_announces_the_fallback_and_reports_no_valid_number(data_no_valid, tmp_path):
    run = tmp_path / "run"
    result = _train(data_no_valid, run, "--eval-every", "2", steps=4)
    assert result.exit_code == 0, result.output
    assert "valid split is empty: best.pt is chosen by training loss" in result.stdout
    assert "valid NLL/token 0.0000" not in result.stdout and "best valid" not in result.stdout
    assert "best train loss/token" in result.stdout
    evals = [r for r in _rows(run) if "valid_nll" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["valid_nll"] is None and r["chosen_by"] == "train_loss" and r["best_train_loss"] > 1.0 for r in evals)
    import torch

    meta = torch.load(run / "best.pt", weights_only=True)["meta"]
    assert meta["best_valid_nll"] is None and meta["chosen_by"] == "train_loss" and meta["best_train_loss"] > 1.0


def test_eval_on_an_empty_split_is_an_error(data, tiny_grid_model):
    for checkpoint in (str(tiny_grid_model), "ngram:3"):
        result = CliRunner().invoke(cli, ["eval", checkpoint, str(data), "--split", "test", "--device", "cpu"])
        assert result.exit_code == 1, result.output
        lines = _error_lines(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "test split is empty" in lines[0], result.stderr
        assert "--split" in lines[0] and "perplexity" not in result.stdout
    ok = CliRunner().invoke(cli, ["eval", str(tiny_grid_model), str(data), "--split", "valid", "--device", "cpu"])
    assert ok.exit_code == 0 and "perplexity" in ok.stdout, ok.output


# --- 5. errors that escaped or were swallowed -------------------------------------------------


@pytest.mark.parametrize("spec", ["ngram:abc", "ngram:0", "ngram:", "ngram:-3", "ngram:1000"])
def test_bad_ngram_orders_are_one_error_line(data, spec):
    result = CliRunner().invoke(cli, ["eval", spec, str(data), "--split", "valid"])
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "e.g. ngram:5" in lines[0], result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_kneser_ney_of_order_zero_is_a_user_error():
    from musicrnn.errors import MusicRNNError
    from musicrnn.ngram import KneserNey

    with pytest.raises(MusicRNNError, match="from 1 to"):
        KneserNey(0, 10)


def test_ctrl_c_during_train_saves_last_pt_and_exits_130(data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "musicrnn", "train", str(data), "-o", str(run), *TINY,
                             "--max-steps", "100000", "--eval-every", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 60
        metrics = run / "metrics.jsonl"
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"--resume" in err
    assert (run / "last.pt").exists() and b"interrupted after" in out
    assert b"device: cpu" in out and b"loss" in out  # stdout is a pipe: plain progress lines, not a bar


# --- 4. the bundled model by name, and matching data for a checkpoint -------------------------


def test_init_from_a_bundled_model_works_from_any_folder(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no musicrnn/models/ here
    result = _train(data, tmp_path / "run", "--init-from", "chorales", "--lr", "0", steps=1)
    assert result.exit_code == 0, result.output
    from musicrnn.checkpoint import BUNDLED_MODELS_DIR, default_model_path, load_checkpoint, resolve_checkpoint

    assert resolve_checkpoint("default") == default_model_path() == BUNDLED_MODELS_DIR / "pop.pt"
    tuned, bundled = load_checkpoint(tmp_path / "run" / "best.pt"), load_checkpoint(BUNDLED_MODELS_DIR / "chorales.pt")
    assert tuned.model.config.hidden == bundled.model.config.hidden == 256  # the bundled architecture, not --hidden 16
    ev = CliRunner().invoke(cli, ["eval", "chorales", str(data), "--split", "valid", "--device", "cpu"])
    assert ev.exit_code == 0 and "perplexity" in ev.stdout, ev.output


def test_an_unknown_checkpoint_name_names_the_bundled_models_not_a_missing_option(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _train(data, tmp_path / "run", "--init-from", "defualt", steps=1)
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: defualt: no such checkpoint"), result.stderr
    assert "bundled: default" in lines[0] and "--model" not in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def data_grid4(midis, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "grid4"
    prepare([str(midis)], out, GridCodec(steps_per_beat=4), (0.5, 0.5, 0.0), workers=1)
    return out


@pytest.mark.parametrize("which", ["chorales", "performance"])
def test_codec_mismatch_prints_a_prepare_command_that_builds_matching_data(which, midis, data, data_grid4,
                                                                           tiny_performance_model):
    import shlex

    from musicrnn.checkpoint import load_checkpoint
    from musicrnn.corpus import TokenData

    ckpt, folder = ("chorales", data_grid4) if which == "chorales" else (str(tiny_performance_model), data)
    result = _train(folder, folder.parent / f"run-{which}", "--init-from", ckpt, steps=1)
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    command = lines[0].split("prepare matching data: ", 1)[1]
    if which == "chorales":
        assert "--codec grid --steps 2 --restrike" in command
    args = shlex.split(command)
    assert args[:5] == ["musicrnn", "data", "prepare", str(midis), "-o"]  # the data's own sources
    made = CliRunner().invoke(cli, [*args[1:], "--workers", "1"])
    assert made.exit_code == 0, made.output
    out = Path(args[args.index("-o") + 1])
    assert TokenData(out, "train").codec == load_checkpoint(ckpt).codec


# --- 3. logs when output is not a terminal ------------------------------------------------------


def test_redirected_output_gets_start_lines_and_plain_progress_lines(data, tmp_path):
    result = _train(data, tmp_path / "run", "--eval-every", "25", steps=40)  # CliRunner's stdout is no terminal
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "device: cpu" in out and "parameters" in out
    data_line = next(line for line in out.splitlines() if line.startswith("data: "))
    assert "train" in data_line and "pieces" in data_line and "tokens" in data_line and "steps per epoch" in data_line
    assert "stops after 40 steps" in out
    progress = [line for line in out.splitlines() if line.startswith("step ")]
    assert any(line.startswith("step 20/40") and "loss" in line and "tok/s" in line and "elapsed" in line
               and "left" in line for line in progress), out
    assert any(line.startswith("step 25 ") and "valid NLL/token" in line for line in progress), out
    assert "━" not in result.output  # no progress bar drawn into a file


def test_time_limit_shows_the_time_left(data, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(data), "-o", str(tmp_path / "run"), *TINY, "--time-limit", "0.02"])
    assert result.exit_code == 0, result.output
    assert "stops after 0.02 min" in result.stdout
    lefts = [line.rsplit("left ", 1)[1] for line in result.stdout.splitlines() if line.startswith("step ") and "left " in line]
    assert lefts and all(t[0].isdigit() for t in lefts), result.stdout  # a time, not '-'
    rows = _rows(tmp_path / "run")
    assert all(0 <= r["remaining_s"] <= 1.2 for r in rows if "remaining_s" in r)


def test_a_progress_row_at_least_every_log_max_seconds_however_slow_the_steps(data, tmp_path, monkeypatch):
    import musicrnn.train as train_mod
    import musicrnn.train_run as train_run
    from musicrnn.config import TrainConfig
    from musicrnn.train_progress import PlainProgress

    monkeypatch.setattr(train_run, "LOG_MAX_SECONDS", 0.0)  # as if every step took longer than the limit
    cfg = TrainConfig.from_dict(dict(hidden=16, embedding=8, layers=1, batch_size=2, seq_len=16, device="cpu", threads=1,
                                max_steps=5, log_every=1000, eval_every=1000))
    lines: list[str] = []
    train_mod.train(data, tmp_path / "run", cfg, on_progress=PlainProgress(lines.append, every=0.0))
    assert [r["step"] for r in _rows(tmp_path / "run") if "train_loss" in r] == [1, 2, 3, 4, 5]
    assert len([line for line in lines if "tok/s" in line]) == 5


# --- 6. the n-gram baseline in bounded memory, same numbers --------------------------------------


class _DictKneserNey:
    """The former nested-dict implementation, kept as the reference the numpy tables must match."""

    def __init__(self, n: int, vocab: int) -> None:
        from collections import defaultdict

        self.n, self.vocab = n, vocab
        self.counts = [defaultdict(lambda: defaultdict(int)) for _ in range(n)]
        self.discount = [0.75] * n

    def fit(self, pieces):
        n = self.n
        for p in pieces:
            seq = [0] * (n - 1) + [int(t) for t in p]
            for i in range(n - 1, len(seq)):
                self.counts[n - 1][tuple(seq[i - n + 1 : i])][seq[i]] += 1
        for k in range(n - 1, 0, -1):
            for ctx, nexts in self.counts[k].items():
                for tok in nexts:
                    self.counts[k - 1][ctx[1:]][tok] += 1
        for k in range(n):
            cc = np.bincount([c for nexts in self.counts[k].values() for c in nexts.values()], minlength=3)
            self.discount[k] = float(cc[1] / (cc[1] + 2 * cc[2])) if cc[1] + 2 * cc[2] > 0 else 0.75
        return self

    def prob(self, context: tuple, token: int) -> float:
        p = 1.0 / self.vocab
        for k in range(self.n):
            nexts = self.counts[k].get(context[len(context) - k :] if k else ())
            if not nexts:
                continue
            total, d = sum(nexts.values()), self.discount[k]
            p = max(nexts.get(token, 0) - d, 0.0) / total + d * len(nexts) / total * p
        return p


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_ngram_tables_give_the_reference_kneser_ney_probabilities(order):
    from musicrnn.ngram import KneserNey

    rng = np.random.default_rng(order)
    vocab = 12
    train = [rng.integers(1, vocab, int(rng.integers(5, 60))) for _ in range(30)]
    test = [rng.integers(1, vocab, int(rng.integers(1, 40))) for _ in range(8)] + [np.array([3, 3, 3, 3])]
    ref, lm = _DictKneserNey(order, vocab).fit(train), KneserNey(order, vocab).fit(train)
    assert lm.discount == ref.discount
    for piece, nll in zip(test, lm.score(test)):
        seq = [0] * (order - 1) + [int(t) for t in piece]
        want = [-np.log(ref.prob(tuple(seq[i - order + 1 : i]), seq[i])) for i in range(order - 1, len(seq))]
        np.testing.assert_allclose(nll, want, rtol=1e-12)
    context = [int(t) for t in test[0][:6]]
    padded = tuple(([0] * (order - 1) + context)[len(context):])
    want = np.array([ref.prob(padded, t) for t in range(vocab)])
    np.testing.assert_allclose(lm.next_distribution(context), want / want.sum(), rtol=1e-12)


def test_an_8gram_of_200k_tokens_fits_in_tens_of_megabytes():
    import tracemalloc

    from musicrnn.ngram import KneserNey

    rng = np.random.default_rng(0)
    pieces = [rng.integers(1, 200, 2000).astype(np.uint16) for _ in range(100)]
    tracemalloc.start()
    try:
        lm = KneserNey(8, 200).fit(pieces)
        lm.score(pieces[:5])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB"  # the nested dicts took several hundred MB here


def test_the_ready_prepare_command_keeps_the_datas_own_choices(tmp_path) -> None:
    """The hint rebuilds the user's data as they chose it (tracks, drums, split seed, keys), only in
    the model's codec."""
    from musicrnn.codecs import GridCodec
    from musicrnn.evaluate import prepare_command

    songs = tmp_path / "songs"
    songs.mkdir()
    for i in range(3):
        write_song(songs / f"{i}.mid", [(name, 0, name == "DRUMS", [60 + i + k for k in range(8)])
                                       for name in ("MELODY", "PIANO", "DRUMS")], beat=1.0)
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["data", "prepare", str(songs), "-o", str(data), "--tracks", "melody,piano",
                                      "--programs", "0,1", "--drums", "keep", "--split-seed", "3", "--key-normalise"])
    assert result.exit_code == 0, result.output
    cmd = prepare_command(GridCodec(steps_per_beat=2, mark_restrikes=True), data)
    assert cmd.startswith(f"musicrnn data prepare {songs} -o "), cmd
    for part in ("--split-seed 3", "--tracks melody,piano", "--programs 0,1", "--drums keep", "--key-normalise",
                 "--codec grid --steps 2 --restrike"):
        assert part in cmd, cmd
