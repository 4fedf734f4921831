"""Measuring models: NLL per token and, for grid data, NLL per frame as published.

Protocol (Boulanger-Lewandowski et al. 2012; Bai et al. 2018): every piece starts from the
model's initial state and a BOS token, so its first frame is predicted from nothing but the
model's prior; a frame's NLL is the sum over its tokens (its pitches, then STEP), which is
exactly -log P(binary pitch vector of the frame | the past); the reported figure is the mean
over all frames of all pieces of the split, pooled (sum of NLL / number of frames).
"""

from __future__ import annotations

import math
import shlex
from typing import Callable, Protocol

import numpy as np
import torch

from musicrnn.codecs import BOS, Codec, prepare_options
from musicrnn.corpus import TokenData, read_manifest
from musicrnn.midi import DEFAULT_BPM

# music statistics compare piece openings of so many bars of 4/4 at 120 BPM (decode_piece's tempo)
STATS_BEATS_PER_BAR = 4.0


class Scorer(Protocol):
    """Anything that can score a batch of pieces: returns per-token NLL (nats) per piece."""

    def score(self, pieces: list[np.ndarray]) -> list[np.ndarray]: ...


class RNNScorer:
    """Scores pieces with a MusicRNN, batched and chunked (state carried between chunks)."""

    def __init__(self, model, device="cpu", batch_size: int = 32, chunk: int = 512, autocast_dtype=None) -> None:
        self.model, self.device, self.batch_size, self.chunk = model, torch.device(device), batch_size, chunk
        self.autocast_dtype = autocast_dtype

    @torch.no_grad()
    def score(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        from musicrnn.model import token_nll

        self.model.eval()
        order = np.argsort([-len(p) for p in pieces], kind="stable")
        out: list[np.ndarray | None] = [None] * len(pieces)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            batch = [pieces[j] for j in idx]
            longest = max(len(p) for p in batch)
            inputs = np.zeros((len(batch), longest), np.int64)
            targets = np.full((len(batch), longest), -1, np.int64)
            for r, p in enumerate(batch):
                seq = np.concatenate([[BOS], p])
                inputs[r, : len(p)] = seq[:-1]
                targets[r, : len(p)] = seq[1:]
            inp = torch.from_numpy(inputs).to(self.device)
            tgt = torch.from_numpy(targets).to(self.device)
            state = None
            nll = torch.zeros(tgt.shape, dtype=torch.float64)
            for s in range(0, longest, self.chunk):
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    chunk_nll, state = token_nll(self.model, inp[:, s : s + self.chunk], tgt[:, s : s + self.chunk], state)
                nll[:, s : s + self.chunk] = chunk_nll.double().cpu()
            for r, j in enumerate(idx):
                out[j] = nll[r, : len(pieces[j])].numpy()
        return out  # type: ignore[return-value]


def evaluate_pieces(scorer: Scorer, pieces: list[np.ndarray], codec, progress: Callable[[int], None] | None = None,
                    group: int = 64) -> dict:
    """NLL per token (nats), bits per token, perplexity; for grid codecs also NLL per frame."""
    total, tokens, frames = 0.0, 0, 0
    per_piece_frames = []
    for i in range(0, len(pieces), group):
        part = pieces[i : i + group]
        for p, nll in zip(part, scorer.score(part)):
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


def nonempty_split(data_folder, split: str) -> TokenData:
    """One split of a data folder, refused when it holds no piece: scoring nothing would print
    NLL 0 and perplexity 1, numbers that look like a perfect model."""
    from musicrnn.errors import DataError

    data = TokenData(data_folder, split)
    if len(data) == 0:
        others = " or ".join(s for s in ("valid", "test") if s != split)
        other = f"choose another --split ({others}) or " if split != "train" else ""
        raise DataError(f"{data_folder}: the {split} split is empty (0 pieces); {other}prepare the data with a "
                        f"non-zero {split} fraction (musicrnn data prepare --split)")
    return data


def evaluate_checkpoint(ckpt, data_folder, split: str = "test", device: str = "cpu", batch_size: int = 32,
                        max_pieces: int | None = None, progress=None) -> dict:
    """Evaluate a loaded checkpoint on one split of a prepared data folder."""
    from musicrnn.errors import DataError

    data = nonempty_split(data_folder, split)
    if data.codec != ckpt.codec:
        raise DataError(codec_mismatch(getattr(ckpt, "path", "the model"), ckpt.codec, data_folder, data.codec,
                                       "evaluate it"))
    n = len(data) if max_pieces is None else min(max_pieces, len(data))
    pieces = [data.piece(i) for i in range(n)]
    model = ckpt.model.to(device)
    result = evaluate_pieces(RNNScorer(model, device, batch_size), pieces, data.codec, progress)
    result["split"] = split
    return result


def real_excerpts(data_folder, split: str, bars: float, beats_per_bar: float = STATS_BEATS_PER_BAR,
                  limit: int | None = None) -> list[np.ndarray]:
    """The opening ``bars`` bars of each held-out piece (notes in beats).

    Generated pieces start from nothing (BOS), i.e. they are piece openings, so the fair real
    counterpart is the opening of every held-out piece: one excerpt per piece, all pieces
    weighted alike (taking every excerpt of the first pieces instead would over-represent long
    pieces and whichever corpus comes first in a mixed folder)."""
    from musicrnn.corpus import TokenData

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
                           seed: int = 0, ngram_order: int = 5, temperature: float = 1.0) -> dict:
    """MusPy statistics of real held-out excerpts, of our samples and of n-gram samples."""
    from musicrnn.compose import generate
    from musicrnn.music_stats import closer_count, mean_stats
    from musicrnn.ngram import NGramStepper, fit_ngram
    from musicrnn.sample import SamplingConfig

    codec = ckpt.codec
    steps = int(round(codec.beats_to_steps(bars * STATS_BEATS_PER_BAR, DEFAULT_BPM)))
    cfg = SamplingConfig(temperature=temperature)

    def notes_of(gen) -> list[np.ndarray]:
        out = []
        for toks in gen.tokens:
            out.append(codec.decode_piece(toks).notes)
        return out

    ours = notes_of(generate(ckpt.model, codec, samples, steps, cfg, seed))
    lm = fit_ngram(data_folder, ngram_order)
    base = notes_of(generate(NGramStepper(lm), codec, samples, steps, cfg, seed))  # type: ignore[arg-type]
    real = real_excerpts(data_folder, split, bars)
    table = {"real": mean_stats(real), "ours": mean_stats(ours), f"{ngram_order}-gram": mean_stats(base)}
    wins, total = closer_count(table["real"], table["ours"], table[f"{ngram_order}-gram"])
    return {"stats": table, "ours_closer": wins, "compared": total, "samples": samples, "bars": bars,
            "real_excerpts": len(real)}
