"""The codecs: the musical vocabularies (notes <-> tokens), one file per codec on one base
class (:mod:`musicrnn.codecs.base`), and this registry.

Adding a codec = a file with a :class:`~musicrnn.codecs.base.Codec` subclass + its line in
:data:`CODECS`. Nothing outside this package asks which codec it holds: it asks the codec
(its grammar, live decision unit, time unit, frames, options).

Holds:
- :data:`CODECS`: name -> class (checkpoints and manifests store a codec as its ``to_dict``,
  whose ``type`` is the name).
- :func:`codec_from_dict`: rebuilds the exact codec stored in a checkpoint or manifest.
- :func:`cli_options` / :func:`codec_from_cli`: the `musicrnn data prepare` options of every
  codec, merged for the CLI, and the codec built from their values.
- :func:`prepare_options`: the options that build a given codec (for "prepare matching data").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicrnn.codecs.accompany import AccompanyCodec
from musicrnn.codecs.base import (
    BOS,
    CODEC_FORMAT_VERSION,
    KIND_BOS,
    KIND_HOLD,
    KIND_NOTE_OFF,
    KIND_NOTE_ON,
    KIND_ROLE,
    KIND_SHIFT,
    KIND_STEP,
    KIND_VELOCITY,
    MAX_STEPS_PER_UNIT,
    MAX_VOCAB,
    PITCH_NAMES,
    Codec,
    Constraints,
    NoteEvent,
    StreamDecoder,
    StreamEncoder,
    events_to_notes,
    pitch_name,
)
from musicrnn.codecs.grid import GridCodec
from musicrnn.codecs.options import CliOption, OptionValueError, parse_pitch_range
from musicrnn.codecs.performance import PerformanceCodec
from musicrnn.errors import CodecError

CODECS: dict[str, type[Codec]] = {
    "performance": PerformanceCodec,
    "grid": GridCodec,
    "accompany": AccompanyCodec,
}
DEFAULT_CODEC = "performance"  # what `data prepare` builds without --codec


def codec_from_dict(d: dict[str, Any]) -> Codec:
    """Rebuild a codec from :meth:`Codec.to_dict` output; unknown types or versions fail clearly."""
    if not isinstance(d, dict) or "type" not in d:
        raise CodecError("codec config is missing its 'type'; the file was not written by musicrnn")
    kind = d["type"]
    if not isinstance(kind, str) or kind not in CODECS:
        raise CodecError(f"unknown codec type {kind!r}; this musicrnn knows {sorted(CODECS)}")
    version = d.get("version")
    if version != CODEC_FORMAT_VERSION:
        raise CodecError(
            f"codec format version {version} is not supported by this musicrnn (codec format "
            f"version {CODEC_FORMAT_VERSION}); re-prepare the data or upgrade musicrnn"
        )
    args = {k: v for k, v in d.items() if k not in ("type", "version")}
    try:
        return CODECS[kind](**args)
    except (TypeError, ValueError, OverflowError) as exc:  # wrong option names or value types
        raise CodecError(f"bad {kind} codec config: {' '.join(str(exc).split())[:200]}") from None


def frame_count(codec: Codec, tokens: np.ndarray) -> int:
    """Number of frames in ``tokens``; 0 for codecs without frames."""
    return codec.count_frames(tokens)


# --- command line -----------------------------------------------------------------------------


def cli_options() -> list[CliOption]:
    """``--codec`` and every codec's `data prepare` options, one per flag in the order the
    codecs declare them. An option of one codec says so in its help; a shared one lists what
    it means for each codec that gives a detail."""
    summaries = "; ".join(f"{name}: {cls.summary}" for name, cls in CODECS.items())
    out = [CliOption("--codec", "codec_name", f"{summaries}.", type=tuple(CODECS), default=DEFAULT_CODEC,
                     show_default=True)]
    uses: dict[str, list[tuple[str, CliOption]]] = {}
    for name, cls in CODECS.items():
        for opt in cls.cli_options:
            uses.setdefault(opt.flag, []).append((name, opt))
    for (name, opt), *others in uses.values():
        if not others:
            help = f"{name} codec: {opt.help}"
        else:
            details = "; ".join(f"{n}: {o.detail}" for n, o in [(name, opt), *others] if o.detail)
            help = f"{opt.help} ({details})." if details else opt.help
        out.append(CliOption(opt.flag, opt.param, help, opt.type, opt.default, opt.show_default))
    return out


def codec_from_cli(name: str, values: dict[str, Any], source_steps_per_beat: int | None = None) -> Codec:
    """The codec `data prepare --codec NAME` builds from the option values ``values`` (by
    parameter name; see :func:`cli_options`). ``source_steps_per_beat``: the sources' own grid
    (a piano roll's), the default resolution where a codec has one."""
    if name not in CODECS:
        raise OptionValueError("--codec", f"{name!r} is not one of {', '.join(map(repr, CODECS))}")
    return CODECS[name].from_cli(values, source_steps_per_beat)


def prepare_options(codec: Codec) -> str:
    """The `musicrnn data prepare` codec options that build ``codec`` (from its config, so any
    codec is covered): e.g. ``--codec grid --steps 2 --restrike``. Settings that no option
    reaches are named after the options, so the user can see why data would still differ."""
    d = codec.to_dict()
    defaults = codec.cli_reference().to_dict()
    by_key = {o.key: o for o in type(codec).cli_options if o.key}
    opts, unreachable = [f"--codec {d['type']}"], []
    for key, value in d.items():
        if key in ("type", "version", "min_pitch", "max_pitch"):
            continue
        opt = by_key.get(key)
        if value == defaults.get(key) and not (opt is not None and opt.always):
            continue
        if opt is None:
            unreachable.append(f"{key}={value}")
        elif opt.type is bool:
            opts += [opt.name] if value else []
        else:
            opts.append(f"{opt.name} {format(value, 'g') if isinstance(value, float) else value}")
    if (d["min_pitch"], d["max_pitch"]) != (21, 108):
        opts.append(f"--pitch-range {d['min_pitch']}-{d['max_pitch']}")
    return " ".join(opts) + (f" (and {', '.join(unreachable)}, which no option sets)" if unreachable else "")


__all__ = [
    "AccompanyCodec",
    "BOS",
    "CODECS",
    "CODEC_FORMAT_VERSION",
    "DEFAULT_CODEC",
    "KIND_BOS",
    "KIND_HOLD",
    "KIND_NOTE_OFF",
    "KIND_NOTE_ON",
    "KIND_ROLE",
    "KIND_SHIFT",
    "KIND_STEP",
    "KIND_VELOCITY",
    "MAX_STEPS_PER_UNIT",
    "MAX_VOCAB",
    "PITCH_NAMES",
    "CliOption",
    "Codec",
    "Constraints",
    "GridCodec",
    "NoteEvent",
    "OptionValueError",
    "PerformanceCodec",
    "StreamDecoder",
    "StreamEncoder",
    "cli_options",
    "codec_from_cli",
    "codec_from_dict",
    "events_to_notes",
    "frame_count",
    "parse_pitch_range",
    "pitch_name",
    "prepare_options",
]
