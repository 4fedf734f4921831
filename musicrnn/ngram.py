"""An n-gram baseline with interpolated Kneser-Ney smoothing (Chen & Goodman 1999).

Fitted on the train split's tokens; :class:`NGramStepper` runs it as the RNN runs (sampled by
compose's code, scored by :func:`musicrnn.evaluate.evaluate_pieces`), so every table has a
side-by-side baseline.
Each piece's context starts as BOS repeated, exactly as the RNN starts from BOS.
"""

from __future__ import annotations

import numpy as np

from musicrnn.codecs import BOS
from musicrnn.corpus import nonempty_split
from musicrnn.errors import MusicRNNError
from musicrnn.inference import Stepper
from musicrnn.limits import NGRAM_ORDER


def check_order(order: object) -> int:
    """The n-gram order as an int in :data:`~musicrnn.limits.NGRAM_ORDER`, or a one-line error naming the fix."""
    if isinstance(order, bool) or not isinstance(order, int) or not NGRAM_ORDER.lo <= order <= NGRAM_ORDER.hi:
        raise MusicRNNError(f"n-gram order {order!r}: give a whole number from {NGRAM_ORDER.text(' to ')}, e.g. ngram:5")
    return order


def parse_ngram_spec(spec: str) -> int:
    """The order in ``ngram:ORDER`` (what ``musicrnn eval`` takes in place of a checkpoint)."""
    text = spec.split(":", 1)[1].strip() if ":" in spec else ""
    try:
        order = int(text)
    except ValueError:
        raise MusicRNNError(f"{spec!r}: give the n-gram order as a whole number from {NGRAM_ORDER.text(' to ')}, "
                            "e.g. ngram:5") from None
    return check_order(order)


class KneserNey:
    """Interpolated Kneser-Ney over token ids; discount per order from counts-of-counts.

    Tables are flat numpy arrays, not nested dicts (a dict of tuples took 4.6 GB and 40 s for
    an 8-gram of POP909's 4.5 M training tokens). Every k-gram seen in training has an id: the
    1-gram id is the token; a k-gram's id is its rank among the sorted keys ``id(its last k-1
    tokens) * vocab + its first token``, so the key itself names the gram's suffix (key //
    vocab), and a gram never seen in training is one that :func:`numpy.searchsorted` cannot
    find. Level ``L`` (context of ``L`` tokens) holds per (L+1)-gram its count (raw at the top
    order, continuation counts below) and per L-gram context the total and the number of types.
    """

    def __init__(self, order: int, vocab_size: int) -> None:
        self.n, self.vocab = check_order(order), vocab_size
        self.discount = [0.75] * self.n
        self._keys: list[np.ndarray] = []  # [k] sorted keys of the k-grams (k >= 2; [0], [1] unused)
        self._count: list[np.ndarray] = []  # [L] count per (L+1)-gram id
        self._total: list[np.ndarray] = []  # [L] sum of the counts per L-gram context id ([0]: one context)
        self._types: list[np.ndarray] = []  # [L] distinct next tokens per L-gram context id

    def _stream(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """All pieces, each after n-1 BOS, as one array; and each position's index within its piece."""
        pad = self.n - 1
        lengths = np.array([len(p) + pad for p in pieces], np.int64)
        seq = np.full(int(lengths.sum()), BOS, np.int32)  # ids fit in int32; keys are int64
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        for start, p in zip(starts, pieces):
            seq[start + pad : start + pad + len(p)] = p
        pos = (np.arange(len(seq), dtype=np.int64) - np.repeat(starts, lengths)).astype(np.int32)
        return seq, pos

    def _gram_ids(self, seq: np.ndarray, pos: np.ndarray, k: int, shorter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys of the k-grams ending at each position where one fits in its piece, and those positions."""
        at = np.flatnonzero((pos >= k - 1) & (shorter >= 0))
        return shorter[at].astype(np.int64) * self.vocab + seq[at - k + 1], at

    def fit(self, pieces: list[np.ndarray]) -> KneserNey:
        n, vocab = self.n, self.vocab
        seq, pos = self._stream(pieces)
        self._keys = [np.zeros(0, np.int64)] * 2
        prefix_of: list[np.ndarray] = [np.zeros(0, np.int32), np.zeros(vocab, np.int32)]  # [k]: (k-1)-gram id per k-gram
        ids = seq  # ids of the (k-1)-grams ending at each position (the 1-gram id is the token)
        for k in range(2, n + 1):
            key, at = self._gram_ids(seq, pos, k, ids)
            keys, inverse = np.unique(key, return_inverse=True)
            del key
            prefix = np.empty(len(keys), np.int32)
            prefix[inverse] = ids[at - 1]  # the (k-1)-gram before the last token
            longer = np.full(len(seq), -1, np.int32)
            longer[at] = inverse
            del inverse, at
            self._keys.append(keys)
            prefix_of.append(prefix)
            ids = longer
        sizes = [1, vocab] + [len(k) for k in self._keys[2:]]  # [k]: number of k-gram ids
        # top order: raw counts of the n-grams; below: how many distinct tokens precede each gram
        count: list[np.ndarray] = [np.zeros(0, np.int64)] * n
        count[n - 1] = np.bincount(ids[pos >= n - 1], minlength=sizes[n]).astype(np.int32)
        del ids, pos, seq
        for level in range(n - 2, -1, -1):
            present = count[level + 1] > 0
            count[level] = np.bincount(self._keys[level + 2][present] // vocab, minlength=sizes[level + 1]).astype(np.int32)
        self._count = count
        self._total, self._types = [], []
        for level in range(n):
            c = count[level]
            present = c > 0
            ctx = prefix_of[level + 1][present]
            self._total.append(np.bincount(ctx, weights=c[present], minlength=sizes[level]).astype(np.int64))
            self._types.append(np.bincount(ctx, minlength=sizes[level]).astype(np.int32))
            n1, n2 = int(np.count_nonzero(c == 1)), int(np.count_nonzero(c == 2))
            self.discount[level] = float(n1 / (n1 + 2 * n2)) if n1 + 2 * n2 > 0 else 0.75
        return self

    def _lookup(self, k: int, shorter: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Ids of the k-grams (first token + the (k-1)-gram ``shorter``); -1 where unseen in training."""
        keys = self._keys[k]
        key = shorter.astype(np.int64) * self.vocab + first
        i = np.minimum(np.searchsorted(keys, key), max(len(keys) - 1, 0))
        hit = (shorter >= 0) & (len(keys) > 0) & (keys[i] == key if len(keys) else False)
        return np.where(hit, i, -1).astype(np.int32)

    def _interpolate(self, contexts: list[np.ndarray], grams: list[np.ndarray]) -> np.ndarray:
        """P(token | context) from unigram up: ``contexts[L]`` the L-gram context ids (-1: unseen),
        ``grams[L]`` the (L+1)-gram ids of context + token; the same arithmetic as Chen & Goodman."""
        p = np.full(np.broadcast(*grams).shape, 1.0 / self.vocab)
        for level in range(self.n):
            ctx, gram = contexts[level], grams[level]
            total = np.where(ctx >= 0, self._total[level][np.maximum(ctx, 0)], 0)
            types = np.where(ctx >= 0, self._types[level][np.maximum(ctx, 0)], 0)
            c = np.where(gram >= 0, self._count[level][np.maximum(gram, 0)], 0)
            seen = np.broadcast_to(total > 0, p.shape)
            d = self.discount[level]
            total, types, c = (np.broadcast_to(a, p.shape)[seen] for a in (total, types, c))
            p[seen] = np.maximum(c - d, 0.0) / total + d * types / total * p[seen]
        return p

    def score(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        if not pieces:
            return []
        seq, pos = self._stream(pieces)
        ids = [np.zeros(len(seq), np.int32), seq]  # [k]: k-gram id ending at each position ([0]: the empty context)
        for k in range(2, self.n + 1):
            at = np.flatnonzero(pos >= k - 1)
            longer = np.full(len(seq), -1, np.int32)
            longer[at] = self._lookup(k, ids[k - 1][at], seq[at - k + 1])
            ids.append(longer)
        target = np.flatnonzero(pos >= self.n - 1)
        contexts = [ids[level][target - 1] if level else np.zeros(len(target), np.int64) for level in range(self.n)]
        nll = -np.log(self._interpolate(contexts, [ids[level + 1][target] for level in range(self.n)]))
        return np.split(nll, np.cumsum([len(p) for p in pieces])[:-1])

    def next_distribution(self, context: list[int]) -> np.ndarray:
        """P(next token | context) over the vocabulary (for sampling from the baseline)."""
        ctx = ([BOS] * (self.n - 1) + [int(t) for t in context])[len(context):] if self.n > 1 else []
        tokens = np.arange(self.vocab, dtype=np.int64)
        contexts, grams = [np.zeros(1, np.int64)], [tokens]
        shorter_ctx = np.array([ctx[-1]], np.int64) if ctx else None  # the context's own 1-gram
        for level in range(1, self.n):
            if level > 1:
                shorter_ctx = self._lookup(level, shorter_ctx, np.array([ctx[-level]], np.int64))
            contexts.append(shorter_ctx)
            grams.append(self._lookup(level + 1, grams[-1], np.full(self.vocab, ctx[-level], np.int64)))
        probs = self._interpolate(contexts, grams)
        return probs / probs.sum()


def fit_ngram(data_folder, order: int) -> KneserNey:
    """An ``order``-gram fitted on the train split of ``data_folder``."""
    train = nonempty_split(data_folder, "train")
    offsets = train.offsets  # the memory-mapped uint16 tokens themselves: no int64 copy of the corpus
    return KneserNey(order, train.codec.vocab_size).fit([train.tokens[offsets[i] : offsets[i + 1]] for i in range(len(train))])


class NGramStepper(Stepper):
    """A fitted n-gram as a :class:`~musicrnn.inference.Stepper`, so the baseline is sampled
    (:func:`musicrnn.compose.generate`) with the same masks and sampler as the RNN, and scored
    by the same code. A row's state is its recent context (the last ``n - 1`` tokens)."""

    name = "ngram"

    def __init__(self, lm: KneserNey, rows: int = 1, contexts: list[list[int]] | None = None) -> None:
        self.lm, self.rows = lm, rows
        self.contexts = contexts if contexts is not None else [[] for _ in range(rows)]

    def _recent(self, context: list[int]) -> list[int]:
        return context[-(self.lm.n - 1) :] if self.lm.n > 1 else []

    def prime(self, tokens) -> None:
        self.contexts = [self._recent([int(t) for t in tokens]) for _ in range(self.rows)]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        self.contexts = [self._recent(c + [int(t)]) for c, t in zip(self.contexts, np.asarray(tokens).tolist())]
        probs = np.stack([self.lm.next_distribution(c) for c in self.contexts])
        return np.log(np.maximum(probs, 1e-30)).astype(np.float32)

    def fork(self, rows=None) -> NGramStepper:
        picked = self.contexts if rows is None else [self.contexts[r] for r in rows]
        return NGramStepper(self.lm, len(picked), [list(c) for c in picked])

    def fresh(self, rows: int = 1) -> NGramStepper:
        return NGramStepper(self.lm, rows)

    def score(self, pieces: list[np.ndarray], batch_size: int = 32) -> list[np.ndarray]:
        return self.lm.score(pieces)
