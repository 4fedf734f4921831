"""Publish a trained model: slim fp16 copy under models/ plus a model card with its numbers.

The numbers in the card are computed here from the *published* file, so
`musicrnn eval models/<name>.pt <data> --split test` reproduces them exactly.

Run: python scripts/model_card.py RUN/best.pt DATA_FOLDER models/<name>.pt --title "..." [--why "..."]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from musicrnn.checkpoint import export_checkpoint, load_checkpoint
from musicrnn.evaluate import evaluate_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_checkpoint")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--title", required=True)
    ap.add_argument("--data-command", default="", help="the musicrnn data prepare command that made DATA")
    ap.add_argument("--why", default="", help="a paragraph on choices (codec, data) for the card")
    ap.add_argument("--card", default=None, help="card path (default: OUT with .md)")
    ap.add_argument("--shown-data", default=None, help="data folder path to print in the card (default: DATA)")
    ap.add_argument("--train-command", default=None, help="training command to print (default: from the checkpoint)")
    ap.add_argument("--train-seconds", type=float, default=None, help="training time (default: from metrics.jsonl)")
    ap.add_argument("--notes", default="", help="a paragraph on how the run went, for the card")
    args = ap.parse_args()

    metrics_path = Path(args.run_checkpoint).parent / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    train_seconds = args.train_seconds if args.train_seconds is not None else max((r.get("time", 0.0) for r in rows), default=0.0)
    out = export_checkpoint(args.run_checkpoint, args.out, half=True,
                            meta={"train_seconds": train_seconds, "published": time.strftime("%Y-%m-%d")})
    ck = load_checkpoint(out)
    results = {s: evaluate_checkpoint(ck, args.data, s) for s in ("valid", "test")}
    m, c = ck.meta, ck.model.config
    per_frame = "nll_per_frame" in results["test"]
    lines = [
        f"# {args.title}",
        "",
        f"File: `{out}` ({out.stat().st_size / 1e6:.1f} MB, float16 weights, loaded as float32). "
        f"{ck.model.num_parameters:,} parameters.",
        "",
        "## Results (computed from this file)",
        "",
        "| split | NLL/token (nats) | bits/token | " + ("NLL/frame (nats) | frames |" if per_frame else "tokens |"),
        "|---|---|---|---|---|",
    ]
    for s, r in results.items():
        tail = f"{r['nll_per_frame']:.4f} | {r['frames']:,} |" if per_frame else f"{r['tokens']:,} |"
        lines.append(f"| {s} | {r['nll_per_token']:.4f} | {r['bits_per_token']:.4f} | {tail}")
    lines += [
        "",
        "Reproduce:",
        "",
        "```bash",
        *( [args.data_command] if args.data_command else [] ),
        f"musicrnn eval {out} {args.shown_data or args.data} --split test",
        "```",
        "",
        "## Model",
        "",
        f"- codec: `{json.dumps(ck.codec.to_dict())}`",
        f"- network: {c.arch.upper()} {c.layers}x{c.hidden}, embedding {c.embedding}, dropout {c.dropout}, "
        f"tied weights {c.tie_weights}, attention {c.attention}",
        "",
        "## Training",
        "",
        f"- data: `{args.shown_data or m.get('data')}`",
        f"- command: `{args.train_command or m.get('command')}`",
        f"- steps: {m.get('step')}, epochs: {m.get('epochs', 0):.1f}, best valid NLL/token {m.get('best_valid_nll', float('nan')):.4f}",
        f"- time: {train_seconds / 60:.1f} min on {m.get('device')} ({m.get('device_name') or 'AMD EPYC, 2 cores'}), "
        f"torch {m.get('torch') or torch.__version__}, "
        f"{m.get('world_size', 1)} process(es)",
        f"- full training config: `{json.dumps(m.get('train_config'))}`",
    ]
    if args.notes:
        lines += ["", args.notes]
    if args.why:
        lines += ["", "## Why this codec and data", "", args.why]
    card = Path(args.card) if args.card else out.with_suffix(".md")
    card.write_text("\n".join(lines) + "\n")
    print(card.read_text())
    print(json.dumps({s: {k: v for k, v in r.items()} for s, r in results.items()}))


if __name__ == "__main__":
    main()
