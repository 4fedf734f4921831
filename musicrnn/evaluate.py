"""Measuring models: NLL per token and, for grid data, NLL per frame as published; the n-gram
baseline scored by the same code; music statistics of samples against held-out excerpts.

Protocol (Boulanger-Lewandowski et al. 2012; Bai et al. 2018): every piece starts from the
model's initial state and a BOS token, so its first frame is predicted from nothing but the
model's prior; a frame's NLL is the sum over its tokens (its pitches, then STEP), which is
exactly -log P(binary pitch vector of the frame | the past); the reported figure is the mean
over all frames of all pieces of the split, pooled (sum of NLL / number of frames).
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable

import numpy as np

from musicrnn.codecs import Codec, prepare_options
from musicrnn.corpus import TokenData, nonempty_split, read_manifest
from musicrnn.errors import DataError
from musicrnn.inference import Stepper, stepper_for
from musicrnn.ngram import NGramStepper, fit_ngram
from musicrnn.notes import DEFAULT_BPM

# music statistics compare piece openings of so many bars of 4/4 at 120 BPM (decode_piece's tempo)
STATS_BEATS_PER_BAR = 4.0


def evaluate_pieces(scorer: Stepper, pieces: list[np.ndarray], codec, progress: Callable[[int], None] | None = None,
                    group: int = 64, batch_size: int = 32) -> dict:
    """NLL per token (nats), bits per token, perplexity; for grid codecs also NLL per frame.
    ``scorer``: any stepper (its :meth:`~musicrnn.inference.Stepper.score`)."""
    total, tokens, frames = 0.0, 0, 0
    per_piece_frames = []
    for i in range(0, len(pieces), group):
        part = pieces[i : i + group]
        for p, nll in zip(part, scorer.score(part, batch_size)):
            total += float(nll.sum())
            tokens += len(p)
            if codec.has_frames:
                f = codec.count_frames(p)
                frames += f
                per_piece_frames.append(f)
        if progress:
            progress(min(len(pieces), i + group))
    result = {
        "pieces": len(pieces),
        "tokens": tokens,
        "nll_per_token": total / max(tokens, 1),
        "bits_per_token": total / max(tokens, 1) / math.log(2),
        "perplexity": math.exp(min(total / max(tokens, 1), 700)),
    }
    if codec.has_frames:
        result["frames"] = frames
        result["nll_per_frame"] = total / max(frames, 1)
    return result


def prepare_command(codec: Codec, data_folder) -> str:
    """A ready `musicrnn data prepare` command that rebuilds ``data_folder``'s sources with ``codec``."""
    sources, fractions, data_opts = ["SOURCES"], None, ""
    try:
        manifest = read_manifest(data_folder)
        sources = [shlex.quote(str(s)) for s in manifest.get("sources") or []] or sources
        fractions = manifest.get("split_fractions")
        data_opts = _data_options(manifest)
    except Exception:  # a hint is best-effort: an unreadable manifest keeps the placeholder
        pass
    split = f" --split {','.join(format(x, 'g') for x in fractions)}" if fractions and list(fractions) != [0.8, 0.1, 0.1] else ""
    out = shlex.quote(f"{str(data_folder).rstrip('/')}-{codec.name}")
    return f"musicrnn data prepare {' '.join(sources)} -o {out}{split}{data_opts} {prepare_options(codec)}"


def _data_options(manifest: dict) -> str:
    """The data folder's own choices (split seed, tracks, drums, key normalisation) as options."""
    opts = []
    seed = (manifest.get("split") or {}).get("seed") if isinstance(manifest.get("split"), dict) else None
    if seed:
        opts.append(f"--split-seed {seed}")
    choice = (manifest.get("tracks") or {}).get("choice") or {}
    if choice.get("tracks"):
        opts.append(f"--tracks {shlex.quote(','.join(choice['tracks']))}")
    if choice.get("programs"):
        opts.append(f"--programs {','.join(str(x) for x in choice['programs'])}")
    if choice.get("drums") not in (None, "drop"):
        opts.append(f"--drums {choice['drums']}")
    if manifest.get("key_normalise"):
        opts.append("--key-normalise")
    return "".join(f" {o}" for o in opts)


def codec_mismatch(model_name, model_codec: Codec, data_folder, data_codec: Codec, to: str) -> str:
    """One line: how the model's and the data's codecs differ, and the command that builds matching data."""
    mine, theirs = prepare_options(model_codec), prepare_options(data_codec)
    if mine == theirs:  # the difference is in a setting no option reaches
        mine, theirs = repr(model_codec), repr(data_codec)
    return (f"{model_name}: the model's codec ({mine}) differs from that of {data_folder} ({theirs}); to {to}, "
            f"prepare matching data: {prepare_command(model_codec, data_folder)}")


def evaluate_checkpoint(ckpt, data_folder, split: str = "test", device: str = "cpu", batch_size: int = 32,
                        max_pieces: int | None = None, progress=None, precision: str = "fp32",
                        quantize: str = "none") -> dict:
    """Evaluate a loaded checkpoint on one split of a prepared data folder, run as
    :func:`~musicrnn.inference.stepper_for` runs it with ``device``, ``precision`` and ``quantize``."""
    data = nonempty_split(data_folder, split)
    if data.codec != ckpt.codec:
        raise DataError(codec_mismatch(getattr(ckpt, "path", "the model"), ckpt.codec, data_folder, data.codec,
                                       "evaluate it"))
    n = len(data) if max_pieces is None else min(max_pieces, len(data))
    pieces = [data.piece(i) for i in range(n)]
    stepper = stepper_for(ckpt.model, device, precision, quantize)
    result = evaluate_pieces(stepper, pieces, data.codec, progress, batch_size=batch_size)
    result["split"] = split
    return result


def evaluate_ngram(data_folder, order: int, split: str = "test") -> dict:
    """Fit an ``order``-gram on the train split, score ``split`` with the shared evaluation code."""
    data = nonempty_split(data_folder, split)  # before the fit, which can take a while
    lm = fit_ngram(data_folder, order)
    result = evaluate_pieces(NGramStepper(lm), [data.piece(i) for i in range(len(data))], data.codec)
    result["split"] = split
    result["model"] = f"{order}-gram interpolated Kneser-Ney"
    return result


def real_excerpts(data_folder, split: str, bars: float, beats_per_bar: float = STATS_BEATS_PER_BAR,
                  limit: int | None = None) -> list[np.ndarray]:
    """The opening ``bars`` bars of each held-out piece (notes in beats).

    Generated pieces start from nothing (BOS), i.e. they are piece openings, so the fair real
    counterpart is the opening of every held-out piece: one excerpt per piece, all pieces
    weighted alike (taking every excerpt of the first pieces instead would over-represent long
    pieces and whichever corpus comes first in a mixed folder)."""
    data = TokenData(data_folder, split)
    span = bars * beats_per_bar
    out = []
    for i in range(len(data)):
        notes = data.codec.decode_piece(data.piece(i)).notes
        sel = notes[notes["start"] < span].copy()
        sel["end"] = np.minimum(sel["end"], span)
        if len(sel):
            out.append(sel)
        if limit and len(out) >= limit:
            break
    return out


def music_stats_comparison(ckpt, data_folder, split: str = "test", samples: int = 64, bars: float = 8.0,
                           seed: int = 0, ngram_order: int = 5, temperature: float = 1.0, device: str = "cpu",
                           precision: str = "fp32", quantize: str = "none") -> dict:
    """MusPy statistics of real held-out excerpts, of our samples (the model run as
    :func:`~musicrnn.inference.stepper_for` runs it) and of n-gram samples."""
    from musicrnn.compose import generate
    from musicrnn.music_stats import closer_count, mean_stats
    from musicrnn.sample import SamplingConfig

    codec = ckpt.codec
    steps = int(round(codec.beats_to_steps(bars * STATS_BEATS_PER_BAR, DEFAULT_BPM)))
    cfg = SamplingConfig(temperature=temperature)

    def notes_of(gen) -> list[np.ndarray]:
        out = []
        for toks in gen.tokens:
            out.append(codec.decode_piece(toks).notes)
        return out

    ours = notes_of(generate(stepper_for(ckpt.model, device, precision, quantize), codec, samples, steps, cfg, seed))
    lm = fit_ngram(data_folder, ngram_order)
    base = notes_of(generate(NGramStepper(lm), codec, samples, steps, cfg, seed))
    real = real_excerpts(data_folder, split, bars)
    table = {"real": mean_stats(real), "ours": mean_stats(ours), f"{ngram_order}-gram": mean_stats(base)}
    wins, total = closer_count(table["real"], table["ours"], table[f"{ngram_order}-gram"])
    return {"stats": table, "ours_closer": wins, "compared": total, "samples": samples, "bars": bars,
            "real_excerpts": len(real)}
