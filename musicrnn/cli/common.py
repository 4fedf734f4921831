"""What every command shares: one ``error: <what> — <fix>`` line and exit status 1 for user errors
(:func:`user_errors`, :class:`UsageLine`, :class:`MusicRNNGroup`), the codec options built from
the codec registry (:func:`codec_options`, :func:`build_codec`), and option parsers."""

from __future__ import annotations

import functools
import sys

import click

from musicrnn.errors import MusicRNNError


def parse_pitch_range_option(value: str) -> tuple[int, int]:
    from musicrnn.codecs import OptionValueError, parse_pitch_range

    try:
        return parse_pitch_range(value)
    except OptionValueError as exc:
        raise _bad_value(exc) from None


def _bad_value(exc) -> click.BadParameter:
    """A codec's bad option value as click reports its own."""
    return click.BadParameter(str(exc), param_hint=f"'{exc.flag}'")


def codec_options(f):
    """Options that describe a codec: every registered codec's (musicrnn.codecs.cli_options)."""
    from musicrnn.codecs import cli_options

    for opt in reversed(cli_options()):
        kind = click.Choice(list(opt.type)) if isinstance(opt.type, tuple) else None if opt.type is bool else opt.type
        f = click.option(opt.flag, opt.param, type=kind, default=opt.default, show_default=opt.show_default,
                         help=opt.help)(f)
    return f


def build_codec(values: dict, default_steps=None):
    """The codec that codec_options' ``values`` describe (``default_steps``: the sources' grid)."""
    from musicrnn.codecs import OptionValueError, codec_from_cli

    values = dict(values)
    try:
        return codec_from_cli(values.pop("codec_name"), values, default_steps)
    except OptionValueError as exc:
        raise _bad_value(exc) from None


def user_errors(f):
    """Turn MusicRNNError into one 'error:' line and exit status 1 (click's usage errors raised
    in the command get its context, for the help hint of :class:`UsageLine`)."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except MusicRNNError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except click.UsageError as exc:
            exc.ctx = exc.ctx or click.get_current_context(silent=True)
            raise

    return wrapper


class UsageLine(click.ClickException):
    """A usage error (bad value, unknown option, missing argument) shown as every other user
    error is: one ``error: <what> — <fix>`` line and exit status 1 (click's own: usage text,
    'Error:' and status 2)."""

    exit_code = 1

    def __init__(self, exc: click.ClickException) -> None:
        ctx = getattr(exc, "ctx", None)
        hint = f" — see '{ctx.command_path} --help'" if ctx is not None else ""
        super().__init__(" ".join(exc.format_message().split()) + hint)

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


class MusicRNNGroup(click.Group):
    """The top-level group: turns click's exceptions, from parsing or from a command, into
    :class:`UsageLine` (``--help`` and ``--version`` still exit 0)."""

    def make_context(self, *args, **kwargs) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            raise exc if isinstance(exc, UsageLine) else UsageLine(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise exc if isinstance(exc, UsageLine) else UsageLine(exc) from None


# Set once `serve` has closed every port and sent every note-off: the process then exits without
# interpreter teardown, during which the MIDI system's threads could still call into Python
# (seen as a rare SIGSEGV at exit under JACK).
FAST_EXIT = {"after_live_session": False}
