"""Every benchmark checkpoint under models/ reproduces the test NLL written in its card."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from musicrnn.checkpoint import load_checkpoint
from musicrnn.corpus import prepare
from musicrnn.evaluate import evaluate_checkpoint

MODELS = Path(__file__).resolve().parents[1] / "models"
CARDS = sorted(MODELS.glob("*.md"))


def _card_numbers(card: Path) -> tuple[str, float]:
    text = card.read_text()
    mat = re.search(r"pianoroll/(\w+\.mat)", text).group(1)
    test_row = re.search(r"^\| test \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \|", text, re.M)
    return mat, float(test_row.group(2))


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS, ids=[c.stem for c in CARDS])
def test_card_numbers_reproduce(card, tmp_path, pianoroll):
    mat, nll_per_frame = _card_numbers(card)
    ckpt = load_checkpoint(card.with_suffix(".pt"))
    data = tmp_path / "data"
    prepare([str(pianoroll / mat)], data, ckpt.codec)
    result = evaluate_checkpoint(ckpt, data, "test")
    assert result["nll_per_frame"] == pytest.approx(nll_per_frame, abs=1e-3)
