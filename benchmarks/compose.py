"""Composition speed and music statistics (issue: `musicrnn compose`).

Measures, for one model on this machine's CPU (or --device):
- events/s (tokens generated per second of compute) at batch 1 and batch 64, and the ratio;
  batch 64 also with bfloat16 weights (``compose --precision bf16``, which steps through torch
  while float32 steps through numpy on a CPU; the NLL it costs: ``musicrnn eval --precision bf16``);
- seconds of music generated per second of compute at batch 64;
- MusPy statistics of real held-out excerpts, of our samples, and of n-gram samples
  (``--data`` = a prepared data folder in the model's codec; skipped without it).

Run: python benchmarks/compose.py [--model CKPT] [--data FOLDER] [--bars 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from musicrnn.checkpoint import default_model_path, load_checkpoint
from musicrnn.compose import generate
from musicrnn.inference import bf16_is_native, stepper_for
from musicrnn.sample import SamplingConfig


def seconds_of_music(codec, steps: int, bpm: float = 120.0) -> float:
    units = steps / codec.steps_per_unit
    return units if codec.time_unit == "seconds" else units * 60.0 / bpm


def speed(ckpt, batch: int, bars: float, repeats: int, seed: int = 0, precision: str = "fp32") -> dict:
    codec = ckpt.codec
    stepper = stepper_for(ckpt.model, precision=precision)
    steps = int(round(bars * 4 * codec.steps_per_unit)) if codec.time_unit == "beats" else int(round(bars * 2 * codec.steps_per_unit))
    best = None
    for r in range(repeats):
        g = generate(stepper, codec, batch, steps, SamplingConfig(), seed + 1000 * r)
        rate = g.events / g.seconds_compute
        if best is None or rate > best["events_per_s"]:
            music = sum(seconds_of_music(codec, s) for s in g.steps)
            best = {"batch": batch, "precision": precision, "events": g.events, "seconds": g.seconds_compute, "events_per_s": rate,
                    "music_seconds_per_s": music / g.seconds_compute}
    return best  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(default_model_path()))
    ap.add_argument("--data", default=None, help="prepared data folder for the music statistics")
    ap.add_argument("--bars", type=float, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    ckpt = load_checkpoint(args.model)
    b1 = speed(ckpt, 1, args.bars, args.repeats)
    b64 = speed(ckpt, 64, args.bars, args.repeats)
    b64h = speed(ckpt, 64, args.bars, args.repeats, precision="bf16")
    result = {"model": args.model, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "bf16_native": bf16_is_native("cpu"), "batch1": b1, "batch64": b64, "batch64_bf16": b64h,
              "ratio": b64["events_per_s"] / b1["events_per_s"], "ratio_bf16": b64h["events_per_s"] / b1["events_per_s"]}
    if args.data:
        from musicrnn.evaluate import music_stats_comparison

        result["music_stats"] = music_stats_comparison(ckpt, args.data, "test", args.samples, args.bars)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"model {args.model}, torch threads {result['threads']}, {time.strftime('%Y-%m-%d')}")
    print("| batch | weights | events/s | seconds of music per second |")
    print("|---|---|---|---|")
    for b in (b1, b64, b64h):
        print(f"| {b['batch']} | {b['precision']} | {b['events_per_s']:,.0f} | {b['music_seconds_per_s']:,.1f} |")
    print(f"\nbatch 64 / batch 1 events/s: {result['ratio']:.1f}x (fp32), {result['ratio_bf16']:.1f}x (batch 64 in bf16; "
          f"native bfloat16 on this CPU: {'yes' if result['bf16_native'] else 'no'})")
    if "music_stats" in result:
        ms = result["music_stats"]
        names = list(ms["stats"])
        print("\n| statistic | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for stat in ms["stats"]["real"]:
            print(f"| {stat} | " + " | ".join(f"{ms['stats'][n][stat]:.3f}" for n in names) + " |")
        print(f"\nours closer to real than the n-gram on {ms['ours_closer']} of {ms['compared']} statistics "
              f"({ms['samples']} samples x {ms['bars']:g} bars; {ms['real_excerpts']} real excerpts)")


if __name__ == "__main__":
    main()
