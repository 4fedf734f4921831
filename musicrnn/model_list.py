"""What ``musicrnn models`` lists: the bundled models (by name, with their card's one-line
summary) and the trained runs in the user's run folders (with their best score). Reads card
headings and checkpoint metadata only; no model is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from musicrnn.checkpoint import BUNDLED_MODELS_DIR, DEFAULT_MODEL, bundled_model_names


@dataclass
class Listed:
    name: str
    path: Path
    summary: str


def _card_summary(card: Path) -> str:
    """The card's first heading, without the leading ``# musicrnn ... model``."""
    if not card.is_file():
        return "(no card)"
    first = next((line for line in card.read_text(encoding="utf-8").splitlines() if line.startswith("# ")), "")
    return first.lstrip("# ").strip() or "(no summary)"


def bundled_models() -> list[Listed]:
    out = []
    for name in bundled_model_names():
        path = BUNDLED_MODELS_DIR / f"{name}.pt"
        size = path.stat().st_size / 1e6
        default = " [default]" if name == DEFAULT_MODEL else ""
        out.append(Listed(name, path, f"{size:.1f} MB{default}: {_card_summary(path.with_suffix('.md'))}"))
    return out


def run_models(folders: list[Path]) -> list[Listed]:
    """Run folders holding a best.pt, found in ``folders`` (or being one)."""
    from musicrnn.checkpoint import load_checkpoint

    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if (folder / "best.pt").is_file():
            found.append(folder)
        elif folder.is_dir():
            found += sorted(p.parent for p in folder.glob("*/best.pt"))
    out = []
    for run in found:
        try:
            ck = load_checkpoint(run / "best.pt")
        except Exception as exc:  # one broken run must not hide the others
            out.append(Listed(str(run), run / "best.pt", f"(unreadable: {str(exc).splitlines()[0][:100]})"))
            continue
        cfg = ck.model.config
        best = ck.meta.get("best_valid_nll")
        score = f"best valid NLL/token {best:.4f}" if isinstance(best, float) else "no valid score"
        out.append(Listed(str(run), run / "best.pt", f"{ck.codec.name} codec, {cfg.arch} {cfg.layers}x{cfg.hidden}, "
                                                     f"{ck.meta.get('step', '?')} steps, {score}"))
    return out
