"""An n-gram baseline with interpolated Kneser-Ney smoothing (Chen & Goodman 1999).

Fitted on the train split's tokens and scored by the same code as the RNN
(:func:`musicrnn.evaluate.evaluate_pieces`), so every table has a side-by-side baseline.
Each piece's context starts as BOS repeated, exactly as the RNN starts from BOS.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from musicrnn.codec import BOS
from musicrnn.corpus import TokenData
from musicrnn.errors import MusicRNNError

MAX_ORDER = 16  # beyond ~10 Kneser-Ney gains nothing on music; the cap keeps a typo from eating memory


def check_order(order: object) -> int:
    """The n-gram order as an int in 1..MAX_ORDER, or a one-line error naming the fix."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise MusicRNNError(f"n-gram order {order!r}: give a whole number from 1 to {MAX_ORDER}, e.g. ngram:5")
    return order


def parse_ngram_spec(spec: str) -> int:
    """The order in ``ngram:ORDER`` (what ``musicrnn eval`` takes in place of a checkpoint)."""
    text = spec.split(":", 1)[1].strip() if ":" in spec else ""
    try:
        order = int(text)
    except ValueError:
        raise MusicRNNError(f"{spec!r}: give the n-gram order as a whole number from 1 to {MAX_ORDER}, "
                            "e.g. ngram:5") from None
    return check_order(order)


class KneserNey:
    """Interpolated Kneser-Ney over token ids; discount per order from counts-of-counts."""

    def __init__(self, order: int, vocab_size: int) -> None:
        self.n, self.vocab = check_order(order), vocab_size
        # counts[k][context][token]: raw counts at the top order, continuation counts below
        self.counts: list[dict[tuple, dict[int, int]]] = [defaultdict(lambda: defaultdict(int)) for _ in range(order)]
        self.discount = [0.75] * order
        self._ctx_total: list[dict[tuple, int]] = []
        self._ctx_types: list[dict[tuple, int]] = []

    def fit(self, pieces: list[np.ndarray]) -> "KneserNey":
        n = self.n
        top = self.counts[n - 1]
        for p in pieces:
            seq = [BOS] * (n - 1) + [int(t) for t in p]
            for i in range(n - 1, len(seq)):
                top[tuple(seq[i - n + 1 : i])][seq[i]] += 1
        # lower orders: how many distinct tokens precede each (context, token) -> continuation counts
        for k in range(n - 1, 0, -1):
            higher, lower = self.counts[k], self.counts[k - 1]
            for ctx, nexts in higher.items():
                short = ctx[1:]
                for tok in nexts:
                    lower[short][tok] += 1
        for k in range(n):
            cc = np.bincount([c for nexts in self.counts[k].values() for c in nexts.values()], minlength=3)
            n1, n2 = cc[1], cc[2]
            self.discount[k] = float(n1 / (n1 + 2 * n2)) if n1 + 2 * n2 > 0 else 0.75
        self._ctx_total = [{c: sum(v.values()) for c, v in self.counts[k].items()} for k in range(n)]
        self._ctx_types = [{c: len(v) for c, v in self.counts[k].items()} for k in range(n)]
        return self

    def prob(self, context: tuple, token: int) -> float:
        p = 1.0 / self.vocab
        for k in range(self.n):  # from unigram (k=0) up to the full order
            ctx = context[len(context) - k :] if k else ()
            total = self._ctx_total[k].get(ctx, 0)
            if total == 0:
                continue
            d = self.discount[k]
            c = self.counts[k][ctx].get(token, 0)
            p = max(c - d, 0.0) / total + d * self._ctx_types[k][ctx] / total * p
        return p

    def score(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for piece in pieces:
            seq = [BOS] * (self.n - 1) + [int(t) for t in piece]
            nll = np.empty(len(piece))
            for i in range(self.n - 1, len(seq)):
                nll[i - self.n + 1] = -math.log(self.prob(tuple(seq[i - self.n + 1 : i]), seq[i]))
            out.append(nll)
        return out

    def next_distribution(self, context: list[int]) -> np.ndarray:
        """P(next token | context) over the vocabulary (for sampling from the baseline)."""
        ctx = tuple(([BOS] * (self.n - 1) + list(context))[-(self.n - 1) :]) if self.n > 1 else ()
        probs = np.array([self.prob(ctx, t) for t in range(self.vocab)])
        return probs / probs.sum()


def fit_ngram(data_folder, order: int) -> KneserNey:
    from musicrnn.evaluate import nonempty_split

    train = nonempty_split(data_folder, "train")
    return KneserNey(order, train.codec.vocab_size).fit([train.piece(i) for i in range(len(train))])


def evaluate_ngram(data_folder, order: int, split: str = "test") -> dict:
    """Fit on train, score ``split`` with the shared evaluation code."""
    from musicrnn.evaluate import evaluate_pieces

    from musicrnn.evaluate import nonempty_split

    data = nonempty_split(data_folder, split)  # before the fit, which can take a while
    model = fit_ngram(data_folder, order)
    result = evaluate_pieces(model, [data.piece(i) for i in range(len(data))], data.codec)
    result["split"] = split
    result["model"] = f"{order}-gram interpolated Kneser-Ney"
    return result


class NGramStepper:
    """Makes a fitted n-gram look like :class:`~musicrnn.model.MusicRNN` to
    :func:`musicrnn.compose.generate`, so the baseline is sampled with the same masks and the
    same sampler as the RNN. The "state" is each row's recent context."""

    def __init__(self, lm: KneserNey) -> None:
        self.lm = lm

    def eval(self) -> "NGramStepper":
        return self

    def _logits(self, contexts: list[list[int]]):
        import torch

        probs = np.stack([self.lm.next_distribution(c) for c in contexts])
        return torch.from_numpy(np.log(np.maximum(probs, 1e-30))).float()

    def __call__(self, tokens, state=None):
        contexts = [list(map(int, row)) for row in tokens.tolist()]
        return None, [c[-(self.lm.n - 1) :] if self.lm.n > 1 else [] for c in contexts]

    def step(self, token, state=None):
        rows = token.tolist()
        contexts = state or [[] for _ in rows]
        contexts = [(c + [int(t)])[-(self.lm.n - 1) :] if self.lm.n > 1 else [] for c, t in zip(contexts, rows)]
        return self._logits(contexts), contexts
