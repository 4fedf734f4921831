"""The ``musicrnn`` command line: parses options and calls library functions; one module per
command group (:mod:`~musicrnn.cli.data`, :mod:`~musicrnn.cli.models` for train/eval/export,
:mod:`~musicrnn.cli.compose`, :mod:`~musicrnn.cli.live` for serve/ports), what they share in
:mod:`~musicrnn.cli.common`.

Every user error is a :class:`~musicrnn.errors.MusicRNNError`; :func:`main` prints its one
line as ``error: ...`` and exits with status 1 (no traceback).
"""

from __future__ import annotations

import os
import sys

import click

from musicrnn import __version__
from musicrnn.cli.common import FAST_EXIT, MusicRNNGroup
from musicrnn.cli.compose import compose_cmd
from musicrnn.cli.data import data
from musicrnn.cli.live import ports_cmd, serve_cmd
from musicrnn.cli.models import eval_cmd, export_cmd, models_cmd, train_cmd


@click.group(name="musicrnn", cls=MusicRNNGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="musicrnn")
def cli() -> None:
    """musicrnn: LSTM/GRU note-sequence models that compose MIDI and jam live.

    \b
    Typical use:
      musicrnn data prepare my_midi/ -o data/mine        # MIDI folder -> training data
      musicrnn data stats data/mine                       # what is in it
    """


for command in (data, train_cmd, eval_cmd, export_cmd, models_cmd, compose_cmd, serve_cmd, ports_cmd):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SystemExit as exc:
        if FAST_EXIT["after_live_session"]:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
