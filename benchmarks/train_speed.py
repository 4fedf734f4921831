"""Training throughput (issue: model/training).

Trains a config for a fixed number of steps and reports tokens/s and the share of step time
spent outside forward/backward/optimizer (data loading, logging), read from metrics.jsonl
(`compute_share` is measured inside the training loop around the compute only).

Run: python benchmarks/train_speed.py DATA [--steps 60] [--device cpu] [--precision fp32]
     [--hidden 256 --layers 2 --embedding 128 --batch-size 32 --seq-len 128]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from musicrnn.config import TrainConfig
from musicrnn.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--arch", default="lstm")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embedding", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cfg = TrainConfig.from_dict(dict(arch=args.arch, hidden=args.hidden, layers=args.layers, embedding=args.embedding,
                      batch_size=args.batch_size, seq_len=args.seq_len, max_steps=args.steps,
                      eval_every=10**9, log_every=10, device=args.device, precision=args.precision))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(args.data, Path(tmp) / "run", cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "tokens_per_s" in r][1:]  # the first window includes warm-up
    tok_s = sum(r["tokens_per_s"] for r in rows) / len(rows)
    share = sum(r["compute_share"] for r in rows) / len(rows)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {"device": device, "threads": torch.get_num_threads(), "config": vars(args), "tokens_per_s": tok_s,
              "outside_compute_share": 1 - share, "wall_s": wall}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{device} ({result['threads']} threads): {tok_s:,.0f} tokens/s, "
              f"{(1 - share) * 100:.2f}% of step time outside forward/backward/optimizer, {wall:.1f}s wall")


if __name__ == "__main__":
    main()
