"""The repository stands alone: a fresh clone has every file its docs and tests name, and CI runs
what the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.paths import FIXTURES, MIDI_CORPUS, PIANOROLL, REPO, TESTS

DOCS = [REPO / "README.md", REPO / "datasets" / "README.md", REPO / "scripts" / "README.md",
        FIXTURES / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "models").glob("*.md"))]
# repo paths written in backticks or links: `benchmarks/latency.py`, [x](docs/osc.md), ...
PATH_IN_DOC = re.compile(r"(?:`|\]\()((?:benchmarks|scripts|docs|tests|examples|plugins|datasets|models|musicrnn)/[\w./-]+?)[`)#]")


def test_the_piano_rolls_and_midi_corpus_are_in_the_repo_with_their_licences() -> None:
    assert sorted(p.name for p in PIANOROLL.glob("*.mat")) == [
        "JSB_Chorales.mat", "MuseData.mat", "Nottingham.mat", "Piano_midi.mat"]
    assert (PIANOROLL / "LICENSE-locuslab-TCN").read_text().startswith("MIT License")
    assert (MIDI_CORPUS / "edge-cases" / "LICENSE.md").exists() and (MIDI_CORPUS / "note-seq" / "LICENSE").exists()
    assert len(list(MIDI_CORPUS.rglob("*.mid"))) == 80


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_docs_name_only_files_that_exist_here(doc) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "DESIGN.md" not in text, f"{doc.name} points outside the repo"
    missing = [p for p in PATH_IN_DOC.findall(text) if "*" not in p and "<" not in p and not (REPO / p.rstrip(".")).exists()]
    assert not missing, f"{doc.name} names files that are not in the repo: {missing}"


def test_tests_need_nothing_outside_the_repo_and_no_sys_path_edits() -> None:
    for path in sorted(set(TESTS.rglob("*.py")) - {Path(__file__)}):
        text = path.read_text(encoding="utf-8")
        assert "sys.path.insert" not in text and "sys.path.append" not in text, path.name
        assert '"shared"' not in text and "../shared" not in text, path.name


def test_benchmarks_hold_measurements_and_scripts_the_tooling() -> None:
    benchmarks = {p.name for p in (REPO / "benchmarks").iterdir() if p.is_file()}
    assert not {n for n in benchmarks if n.startswith("gpu_") or n in ("model_card.py", "fuzz_atheris.py")}
    assert {"model_card.py", "gpu_session.sh", "fuzz_atheris.py"} <= {p.name for p in (REPO / "scripts").iterdir()}


def test_ci_lints_then_runs_the_readme_test_command_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = re.search(r"Set up and run the tests:\n\n```bash\n(.+)\n```", readme).group(1)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci
    lint = next(i for i, line in enumerate(ci) if "ruff check ." in line and not line.startswith("#"))
    assert lint < ci.index(command)


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The musicrnn modules ``path`` imports at run time, anywhere in it (not under TYPE_CHECKING)."""
    import ast

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
    return {m for m in found if m}


def test_musicrnn_has_no_import_cycle() -> None:
    """No module imports, directly or through others, a module that imports it back (lazy imports
    inside functions count too: they only hide a cycle)."""
    package = REPO / "musicrnn"
    modules = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: _imports(f, modules) - {m} for m, f in modules.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == goal:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [" -> ".join(c) for m in sorted(graph) if (c := reaches(m, m))]
    assert not cycles, f"import cycles: {cycles[:3]}"


LONG_MODULE = 500  # lines; a module longer than this says in its docstring why it is one file


@pytest.mark.parametrize("path", sorted((REPO / "musicrnn").rglob("*.py")), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_module_is_long_without_saying_why(path) -> None:
    import ast

    text = path.read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines > LONG_MODULE:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert "Kept as one file:" in doc, (f"{path.name} has {lines} lines: split it by job, or say in its docstring "
                                            "why it is one file ('Kept as one file: ...')")
