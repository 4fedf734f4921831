"""Classifier two-sample test: can a small classifier tell real held-out openings from generated ones?

Real: the opening ``--bars`` bars of every piece of a split (as ``eval --music-stats``). Generated:
as many openings from the model and from an n-gram of the same data (same codec, same sampling).
Each excerpt becomes a feature vector (the music statistics, pitch-class, interval, onset-position,
duration and velocity histograms); a logistic regression (torch, L2) is trained to tell real from
generated, and its accuracy on held-out folds is reported (5-fold cross-validation, balanced
classes): 50 % means the classifier cannot tell them apart, 100 % that it always can.

Generated openings are sampled as ``musicrnn compose`` samples them: temperature 1 and no note
longer than ``--max-note`` beats (compose's and serve's default; 0 = the raw model, no limit).
With ~90 real openings one run's accuracy has a standard error of ~3 points, so ``--seeds N``
repeats the whole test (new samples, new folds) and reports the mean and spread.

    python benchmarks/two_sample.py runs/pop/best.pt data/pop909 --split test --samples 256 --bars 8 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from musicrnn.checkpoint import load_checkpoint
from musicrnn.compose import generate
from musicrnn.evaluate import real_excerpts
from musicrnn.inference import stepper_for
from musicrnn.limits import MAX_NOTE_BEATS
from musicrnn.music_stats import STAT_NAMES, music_stats
from musicrnn.ngram import NGramStepper, fit_ngram
from musicrnn.sample import SamplingConfig

STEPS_PER_BEAT = 4  # onset positions on sixteenths


def features(notes: np.ndarray, bars: float, beats_per_bar: float = 4.0) -> np.ndarray:
    """One excerpt -> a fixed-length vector (NaNs of undefined statistics become 0)."""
    st = music_stats(notes, beats_per_bar)
    stats = np.nan_to_num(np.array([st[k] for k in STAT_NAMES], np.float64))
    n = max(len(notes), 1)
    pcs = np.bincount(notes["pitch"] % 12, minlength=12) / n
    order = np.argsort(notes["start"], kind="stable")
    intervals = np.clip(np.diff(notes["pitch"][order].astype(int)), -12, 12) + 12
    ints = np.bincount(intervals, minlength=25) / max(len(intervals), 1)
    pos = np.round(notes["start"] * STEPS_PER_BEAT).astype(int) % int(beats_per_bar * STEPS_PER_BEAT)
    onsets = np.bincount(pos, minlength=int(beats_per_bar * STEPS_PER_BEAT)) / n
    dur = np.clip(np.log2(np.maximum(notes["end"] - notes["start"], 1 / 16)) + 4, 0, 7).astype(int)
    durs = np.bincount(dur, minlength=8) / n
    vels = np.bincount(np.clip(notes["velocity"] // 16, 0, 7), minlength=8) / n
    return np.concatenate([stats, pcs, ints, onsets, durs, vels, [len(notes) / (bars * beats_per_bar)]])


def cv_accuracy(real: np.ndarray, fake: np.ndarray, folds: int = 5, seed: int = 0, epochs: int = 300,
                weight_decay: float = 1e-3) -> float:
    """Held-out accuracy of an L2 logistic regression telling ``real`` rows from ``fake`` rows."""
    k = min(len(real), len(fake))
    rng = np.random.default_rng(seed)
    real, fake = real[rng.permutation(len(real))[:k]], fake[rng.permutation(len(fake))[:k]]
    x = np.concatenate([real, fake])
    y = np.concatenate([np.ones(k), np.zeros(k)])
    idx = rng.permutation(len(x))
    correct = 0
    for f in range(folds):
        test = idx[f::folds]
        train = np.setdiff1d(idx, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xt = torch.tensor((x[train] - mu) / sd, dtype=torch.float32)
        yt = torch.tensor(y[train], dtype=torch.float32)
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=epochs, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + weight_decay * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            xs = torch.tensor((x[test] - mu) / sd, dtype=torch.float32)
            pred = (xs @ w + b > 0).numpy()
        correct += int((pred == y[test].astype(bool)).sum())
    return correct / len(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data")
    ap.add_argument("--split", default="test")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--bars", type=float, default=8.0)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="repeat with seeds seed..seed+N-1; mean and spread")
    ap.add_argument("--max-note", type=float, default=MAX_NOTE_BEATS,
                    help="longest generated note in beats, as compose's --max-note (0 = no limit)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ckpt = load_checkpoint(args.checkpoint)
    codec = ckpt.codec
    steps = int(round(args.bars * 4.0 * codec.steps_per_unit))  # beat-time codecs (4/4)
    cfg = SamplingConfig(max_note_steps=int(round(codec.beats_to_steps(args.max_note))) if args.max_note else 0)
    real = real_excerpts(args.data, args.split, args.bars)
    lm = fit_ngram(args.data, args.ngram)
    x_real = np.stack([features(n, args.bars) for n in real])
    systems = {"ours": lambda: stepper_for(ckpt.model), f"{args.ngram}-gram": lambda: NGramStepper(lm)}
    runs: dict[str, list[float]] = {name: [] for name in systems}
    for seed in range(args.seed, args.seed + args.seeds):
        torch.manual_seed(seed)
        for name, make in systems.items():
            gen = generate(make(), codec, args.samples, steps, cfg, seed)
            notes = [codec.decode_piece(t).notes for t in gen.tokens]
            notes = [n[n["start"] < args.bars * 4.0] for n in notes if len(n)]
            x_fake = np.stack([features(n, args.bars) for n in notes])
            runs[name].append(cv_accuracy(x_real, x_fake, seed=seed))
    result = {"real_excerpts": len(real), "samples": args.samples, "bars": args.bars, "split": args.split,
              "max_note_beats": args.max_note, "seeds": list(range(args.seed, args.seed + args.seeds))}
    for name, accs in runs.items():
        result[name] = float(np.mean(accs))
        result[f"{name}_runs"] = accs
    result["seconds"] = round(time.perf_counter() - t0, 1)
    limit = f"notes <= {args.max_note:g} beats" if args.max_note else "no note-length limit"
    print(f"classifier two-sample test ({len(real)} real {args.split} openings of {args.bars:g} bars vs "
          f"{args.samples} generated, {limit}; 5-fold held-out accuracy, 50 % = indistinguishable):")
    for name, accs in runs.items():
        spread = f" (sd {100 * np.std(accs, ddof=1):.1f} over {len(accs)} seeds: " \
                 f"{', '.join(f'{100 * a:.1f}' for a in accs)})" if len(accs) > 1 else ""
        print(f"  {name:>10}: {100 * np.mean(accs):.1f} %{spread}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
