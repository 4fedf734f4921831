"""Training, resume, DDP and evaluation, on a small slice of JSB Chorales."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from musicrnn.checkpoint import load_checkpoint, save_checkpoint
from musicrnn.codec import GridCodec
from musicrnn.config import ModelConfig, TrainConfig
from musicrnn.corpus import prepare
from musicrnn.errors import CheckpointError
from musicrnn.evaluate import evaluate_checkpoint, evaluate_ngram
from musicrnn.model import MusicRNN
from musicrnn.train import train


def _cfg(**flat) -> TrainConfig:
    """A train config from flat options, as the CLI gives them (the model's nest into cfg.model)."""
    return TrainConfig.from_dict(flat)


TINY = dict(hidden=32, embedding=16, layers=1, batch_size=4, seq_len=16, device="cpu", threads=1, warmup_steps=1)


@pytest.fixture(scope="module")
def jsb(tmp_path_factory, jsb_path):
    out = tmp_path_factory.mktemp("data") / "jsb"
    prepare([str(jsb_path)], out, GridCodec(steps_per_beat=1))
    return out


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_train_writes_checkpoints_and_metrics(jsb, tmp_path):
    result = train(jsb, tmp_path / "run", _cfg(**TINY, max_steps=6, eval_every=3, eval_max_pieces=8))
    assert result.steps == 6 and result.stopped == "done"
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_nll" in r for r in rows) and any("tokens_per_s" in r for r in rows)
    assert all({"step", "lr", "train_loss", "tokens_per_s"} <= r.keys() for r in rows if "train_loss" in r)
    ck = load_checkpoint(tmp_path / "run" / "best.pt")
    assert ck.codec == GridCodec(steps_per_beat=1)
    assert ck.meta["train_config"]["model"] == ck.model.config.to_dict()  # nested, vocabulary included
    assert ck.model.config.hidden == 32 and ck.model.config.vocab_size == ck.codec.vocab_size
    assert ck.train_config == _cfg(**TINY, max_steps=6, eval_every=3, eval_max_pieces=8, vocab_size=ck.codec.vocab_size)


@pytest.mark.parametrize("path", ["musicrnn/models/chorales.pt", "models/jsb-lstm-2x512.pt", "models/musedata-lstm-2x512.pt",
                                  "models/nottingham-lstm-2x512.pt", "models/pianomidi-lstm-2x512.pt"])
def test_every_committed_checkpoint_reads_its_flat_train_config(path):
    """Checkpoints saved before the nesting keep the model's fields beside the others."""
    from helpers.paths import REPO

    ck = load_checkpoint(REPO / path)
    assert "hidden" in ck.meta["train_config"] and "model" not in ck.meta["train_config"]  # the old, flat shape
    cfg = ck.train_config
    assert cfg.model == ck.model.config
    assert (cfg.model.hidden, cfg.model.dropout) == (ck.meta["train_config"]["hidden"], ck.meta["train_config"]["dropout"])
    assert cfg.batch_size == ck.meta["train_config"]["batch_size"] and cfg.lr == ck.meta["train_config"]["lr"]


@pytest.mark.parametrize("path", ["musicrnn/models/pop.pt", "musicrnn/models/accompany.pt"])
def test_committed_checkpoints_saved_since_the_nesting_read_their_nested_train_config(path):
    from helpers.paths import REPO

    ck = load_checkpoint(REPO / path)
    nested = ck.meta["train_config"]
    assert "model" in nested and "hidden" not in nested  # the model's fields under "model"
    cfg = ck.train_config
    assert cfg.model == ck.model.config and cfg.model.hidden == nested["model"]["hidden"]
    assert cfg.batch_size == nested["batch_size"] and cfg.lr == nested["lr"]


def test_resume_reads_a_last_pt_saved_with_a_flat_train_config(jsb, tmp_path):
    run = tmp_path / "run"
    train(jsb, run, _cfg(**TINY, max_steps=2, eval_every=2, eval_max_pieces=4))
    raw = torch.load(run / "last.pt", weights_only=True)
    nested = raw["train_config"]
    raw["train_config"] = {**{k: v for k, v in nested.items() if k != "model"}, **nested["model"], "max_steps": 4}
    del raw["train_config"]["vocab_size"]  # as older versions saved it
    torch.save(raw, run / "last.pt")
    result = train(jsb, run, _cfg(**TINY, max_steps=2), resume=True)
    assert result.steps == 4 and result.model.config.hidden == 32
    assert torch.load(run / "last.pt", weights_only=True)["train_config"]["max_steps"] == 4


def test_training_lowers_valid_nll(jsb, tmp_path):
    cfg = _cfg(**{**TINY, "hidden": 64, "batch_size": 8, "seq_len": 64}, max_steps=60, eval_every=20, lr=1e-2)
    train(jsb, tmp_path / "run", cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r["valid_nll"] for r in rows if "valid_nll" in r]
    assert valid[-1] < valid[0] - 0.3, valid
    # a 4.5-nat uniform guess over 90 tokens is the floor of ignorance; the model must be far better
    assert valid[-1] < 2.5


@pytest.mark.slow
def test_sigint_then_resume_matches_uninterrupted_run(jsb, tmp_path):
    """Ctrl-C saves last.pt; --resume continues to exactly the same weights as a straight run."""
    args = ["--hidden", "32", "--embedding", "16", "--layers", "1", "--batch-size", "4", "--seq-len", "16",
            "--max-steps", "300", "--eval-every", "50", "--device", "cpu", "--threads", "1", "--warmup-steps", "1",
            "--dropout", "0.2", "--augment-transpose", "3"]
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "musicrnn", "train", str(jsb), "-o", str(straight), *args], check=True,
                   capture_output=True)
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", "musicrnn", "train", str(jsb), "-o", str(broken), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    metrics = broken / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    stopped_at = torch.load(broken / "last.pt", weights_only=True)["trainer"]["step"]
    assert 0 < stopped_at < 300, "the interrupt must land mid-run for this test to mean anything"
    subprocess.run([sys.executable, "-m", "musicrnn", "train", str(jsb), "-o", str(broken), *args, "--resume"],
                   check=True, capture_output=True)
    a, b = _weights(straight / "last.pt"), _weights(broken / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_identical_weights(jsb, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torchrun in a session of its own: on a timeout or a failure its workers go with it (killpg)
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(worker), str(jsb), str(tmp_path / "run"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.returncode != 0:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    init = MusicRNN(ModelConfig(90, hidden=32, embedding=16, layers=1)).state_dict()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert any(not torch.equal(r0[k], init[k]) for k in r0), "weights must have been trained"
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ck["meta"]["world_size"] == 2 and len(ck["trainer"]["streams"]) == 2


def test_eval_reports_nll_per_frame_with_published_protocol(jsb, tmp_path):
    codec = GridCodec(steps_per_beat=1)
    model = MusicRNN(ModelConfig(codec.vocab_size, hidden=16, embedding=8, layers=1))
    save_checkpoint(tmp_path / "m.pt", model, codec)
    r = evaluate_checkpoint(load_checkpoint(tmp_path / "m.pt"), jsb, "test")
    assert r["pieces"] == 77 and r["frames"] == 4725
    # the frame NLL is the token NLL summed per frame: total / frames
    assert r["nll_per_frame"] == pytest.approx(r["nll_per_token"] * r["tokens"] / r["frames"])
    # an untrained model is close to uniform over the vocabulary
    assert abs(r["nll_per_token"] - torch.log(torch.tensor(90.0)).item()) < 0.2


def test_ngram_baseline_beats_uniform(jsb):
    r = evaluate_ngram(jsb, 5, "valid")
    assert r["nll_per_frame"] < 8.0 and r["frames"] == 4602


def test_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": "musicrnn-checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_version_mismatch_names_both_versions(tmp_path):
    codec = GridCodec()
    save_checkpoint(tmp_path / "m.pt", MusicRNN(ModelConfig(codec.vocab_size, hidden=8, embedding=8, layers=1)), codec)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"version 99.*version 1"):
        load_checkpoint(tmp_path / "m.pt")


def test_time_limit_stops_training_and_decays_the_schedule(jsb, tmp_path):
    cfg = _cfg(**TINY, time_limit=0.05, eval_every=10**6, eval_max_pieces=4, log_every=1)  # 3 seconds
    t0 = time.perf_counter()
    result = train(jsb, tmp_path / "run", cfg)
    assert result.stopped == "time-limit"
    assert 2.5 < time.perf_counter() - t0 < 30
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # the cosine ran out with the clock, not with a step count
    assert any("valid_nll" in r for r in rows) and (tmp_path / "run" / "best.pt").exists()


def test_init_from_fine_tunes_a_checkpoint_with_its_architecture(jsb, tmp_path):
    first = train(jsb, tmp_path / "a", _cfg(**TINY, max_steps=4, eval_every=4, eval_max_pieces=4))
    ft = train(jsb, tmp_path / "b", _cfg(**{**TINY, "hidden": 999, "dropout": 0.5}, max_steps=1, lr=0.0,
                                                 eval_every=1, eval_max_pieces=4, init_from=str(tmp_path / "a" / "best.pt")))
    ck = load_checkpoint(tmp_path / "b" / "best.pt")
    assert ck.model.config.hidden == 32 and ck.model.config.dropout == 0.5  # architecture from the checkpoint
    for name, w in _weights(tmp_path / "a" / "best.pt").items():  # lr 0: the weights are the starting ones
        assert torch.equal(w, _weights(tmp_path / "b" / "best.pt")[name]), name
    assert first.steps == 4 and ft.steps == 1


def test_init_from_refuses_a_checkpoint_of_another_codec(jsb, tmp_path):
    other = MusicRNN(ModelConfig(GridCodec(steps_per_beat=4).vocab_size, hidden=8, embedding=4, layers=1))
    save_checkpoint(tmp_path / "other.pt", other, GridCodec(steps_per_beat=4))
    with pytest.raises(CheckpointError, match="prepare matching data: musicrnn data prepare .* --codec grid --steps 4"):
        train(jsb, tmp_path / "b", _cfg(**TINY, max_steps=1, init_from=str(tmp_path / "other.pt")))
