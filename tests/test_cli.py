"""The ``musicrnn`` command line: help everywhere, version, data prepare/stats, clean errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from musicrnn import __version__
from musicrnn.cli import cli
from musicrnn.corpus import read_manifest

REPO = Path(__file__).resolve().parents[1]


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand under ``group``, as argument tuples (the group itself first)."""
    paths = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            paths += _command_paths(cmd, prefix + (name,))
        else:
            paths.append(prefix + (name,))
    return paths


COMMANDS = _command_paths(cli)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_the_walk_finds_the_data_commands() -> None:
    assert {("data",), ("data", "prepare"), ("data", "stats")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "musicrnn")
def test_help_works_on_every_command(path: tuple[str, ...]) -> None:
    for flag in ("--help", "-h"):
        result = CliRunner().invoke(cli, [*path, flag])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout
        assert "Traceback" not in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"musicrnn, version {__version__}"


def test_prepare_and_stats_on_jsb(jsb_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "jsb"
    runner = CliRunner()
    result = runner.invoke(cli, ["data", "prepare", str(jsb_path), "-o", str(out), "--codec", "grid"])
    assert result.exit_code == 0, result.output
    assert "229/76/77" in result.stdout
    manifest = read_manifest(out)
    assert manifest["codec"]["steps_per_beat"] == 1  # a .mat file's own frame rate (quarter notes for JSB)

    result = runner.invoke(cli, ["data", "stats", str(out)])
    assert result.exit_code == 0, result.output
    for s, pieces in (("train", 229), ("valid", 76), ("test", 77)):
        c = manifest["splits"][s]
        line = next(line for line in result.stdout.splitlines() if f" {s} " in line)
        for value in (pieces, c["tokens"], c["frames"], c["notes"]):
            assert f"{value:,}" in line, f"{value:,} missing from: {line}"
    assert "STEP" in result.stdout


def test_prepare_options_reach_the_codec(edge_cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = ["data", "prepare", str(edge_cases), "-o", str(out), "--time-unit", "seconds", "--velocity-bins", "0",
            "--pitch-range", "36-96", "--workers", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    codec = read_manifest(out)["codec"]
    assert codec["type"] == "performance" and codec["time_unit"] == "seconds"
    assert (codec["velocity_bins"], codec["min_pitch"], codec["max_pitch"]) == (0, 36, 96)


@pytest.mark.parametrize(
    "args,code,text",
    [
        (["--pitch-range", "90-10"], 1, "LO <= HI"),
        (["--split", "a,b,c"], 1, "three fractions"),
        (["--split", "0.5,0.5,0.5"], 1, "sum to 1"),
        (["--velocity-bins", "500"], 1, "velocity bins"),
        (["--codec", "grid", "--steps", "2.5"], 1, "whole number"),
        (["--steps", "0"], 1, "positive number of steps per beat"),
        (["--steps", "-3"], 1, "positive number of steps per beat"),
        (["--time-unit", "seconds", "--steps", "0"], 1, "positive number of steps per second"),
        (["--codec", "grid", "--steps", "0"], 1, "positive number of steps per beat"),
        (["--codec", "grid", "--steps", "-2"], 1, "positive number of steps per beat"),
        (["--codec", "grid", "--steps", "inf"], 1, "positive number"),
    ],
)
def test_bad_options_are_explained(edge_cases: Path, tmp_path: Path, args, code, text) -> None:
    result = CliRunner().invoke(cli, ["data", "prepare", str(edge_cases), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == code, result.output
    assert text in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    if code == 1:
        assert _error_lines(result.stderr) == [next(x for x in _error_lines(result.stderr) if x.startswith("error: "))]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "musicrnn")
def test_every_usage_error_of_every_command_is_one_error_line_and_status_1(path: tuple[str, ...]) -> None:
    """As README promises for every user error (click's own: a usage text, 'Error:' and status 2)."""
    result = CliRunner().invoke(cli, [*path, "--no-such-option"])
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--no-such-option" in lines[0], result.stderr
    assert f"see '{' '.join(('musicrnn', *path))} --help'" in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args,text",
    [
        (["compose", "--pitch-range", "90-10"], "Invalid value for '--pitch-range'"),
        (["compose", "--precision", "fp64"], "'fp64' is not one of"),
        (["compose", "-n", "many"], "'many' is not a valid integer"),
        (["eval"], "Missing argument 'CHECKPOINT'"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["serve", "--channel", "17"], "--channel"),
    ],
)
def test_bad_values_and_missing_arguments_are_one_error_line(args, text) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Usage:" not in result.output


def test_a_real_process_gets_status_1_for_a_usage_error_and_0_for_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bad = subprocess.run([sys.executable, "-m", "musicrnn", "compose", "--pitch-range", "90-10"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1, bad.stderr
    ok = subprocess.run([sys.executable, "-m", "musicrnn", "compose", "--help"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert ok.returncode == 0 and "--primer-bars" in ok.stdout


def test_bad_source_path_is_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    result = CliRunner().invoke(cli, ["data", "prepare", str(missing), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0], result.stderr
    assert isinstance(result.exception, SystemExit)  # no Python exception escaped
    assert not (tmp_path / "out").exists()


def test_stats_on_a_folder_without_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["data", "stats", str(tmp_path)])
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "manifest.json" in lines[0]


def test_real_process_prepare_edge_cases(edge_cases: Path, tmp_path: Path) -> None:
    out = tmp_path / "edge"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "musicrnn", "data", "prepare", str(edge_cases), "-o", str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    manifest = read_manifest(out)
    assert manifest["rejected"]
    for entry in manifest["rejected"]:
        assert f"rejected {entry['file']}: {entry['reason']}" in proc.stderr
    assert f"{len(manifest['rejected'])} of {manifest['files_seen']} rejected" in proc.stdout


def test_models_lists_bundled_models_and_runs_and_names_resolve(tmp_path: Path) -> None:
    from musicrnn.checkpoint import DEFAULT_MODEL, resolve_checkpoint

    from helpers.models import tiny_checkpoint

    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    from musicrnn.codecs import GridCodec

    tiny_checkpoint(run / "best.pt", GridCodec(steps_per_beat=2))
    result = CliRunner().invoke(cli, ["models", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("pop") and "[default]" in line for line in lines) and DEFAULT_MODEL == "pop"
    assert any(line.startswith("chorales") and "[default]" not in line for line in lines)
    assert any(str(run) in line and "grid codec" in line for line in lines)
    assert resolve_checkpoint("default") == resolve_checkpoint(DEFAULT_MODEL) == resolve_checkpoint("pop")
    assert resolve_checkpoint("chorales").name == "chorales.pt"  # the former default, still by name
