"""Live controls over MIDI CC: the default map, remapping, and MIDI learn.

Holds:
- :data:`CONTROLS`: the controls a CC can drive, by default CC number, made from the control
  table (:mod:`musicrnn.live.control_table`: each row's ``cc``, ``cc_value`` and ``cc_help``).
  Defaults use CC 20-26, which the MIDI spec leaves undefined, so they clash with no synth
  parameter.
- :class:`ControlMap`: CC number -> control; :meth:`ControlMap.handle` turns one CC message
  into a :class:`ControlChange` (what to change, to which value) or None. Switches (end of
  call, panic, reset) fire once when the value rises to 64 or more, as a button sends 127 on
  press and 0 on release.
- :func:`parse_bindings`: ``["temperature=74", ...]`` (the ``--cc`` option) -> overrides.
- :func:`cc_help_lines`: the default map, one line per control (``serve --help``).

What a change does is the control's ``apply`` in the table, the same action its server method
(``set_temperature``, ``panic``, ...) and OSC route take.
"""

from __future__ import annotations

from dataclasses import dataclass

from musicrnn.errors import MusicRNNError
from musicrnn.live.control_table import CONTROLS as ALL_CONTROLS
from musicrnn.live.control_table import Control

CONTROLS: dict[str, Control] = {c.name: c for c in sorted((c for c in ALL_CONTROLS.values() if c.cc is not None),
                                                          key=lambda c: c.cc or 0)}


def cc_help_lines() -> list[str]:
    """``"20 temperature: 0-2 (64 = 1.0, ...)"``, one per control, in CC order."""
    return [f"{c.cc} {c.name}: {c.cc_help}" for c in CONTROLS.values()]


@dataclass(frozen=True)
class ControlChange:
    name: str
    value: object = None  # None for switches


def parse_bindings(items: list[str] | tuple[str, ...]) -> dict[str, int]:
    """``NAME=CC`` strings -> {name: cc}; one-line errors for anything else."""
    out: dict[str, int] = {}
    for item in items:
        name, _, num = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in CONTROLS:
            raise MusicRNNError(f"--cc {item!r}: unknown control {name!r}; controls: {', '.join(CONTROLS)}")
        try:
            cc = int(num)
        except ValueError:
            raise MusicRNNError(f"--cc {item!r}: give NAME=NUMBER, e.g. temperature=74") from None
        if not 0 <= cc <= 119:
            raise MusicRNNError(f"--cc {item!r}: CC number must be 0-119 (120-127 are channel mode messages)")
        out[name] = cc
    return out


class ControlMap:
    """Which CC number drives which control. Used by one thread (the engine's)."""

    def __init__(self, overrides: dict[str, int] | None = None) -> None:
        self.by_cc: dict[int, str] = {}
        for name, control in CONTROLS.items():
            self.by_cc[control.cc] = name
        for name, cc in (overrides or {}).items():
            self.bind(name, cc)
        self._learning: str | None = None
        self._last: dict[int, int] = {}  # last value per CC, for switch edges

    def cc_of(self, name: str) -> int | None:
        return next((cc for cc, n in self.by_cc.items() if n == name), None)

    def bind(self, name: str, cc: int) -> None:
        """``cc`` now drives ``name`` (and nothing else); ``name`` leaves its old CC."""
        if name not in CONTROLS:
            raise MusicRNNError(f"unknown control {name!r}; controls: {', '.join(CONTROLS)}")
        for old in [c for c, n in self.by_cc.items() if n == name]:
            del self.by_cc[old]
        self.by_cc[cc] = name

    def learn(self, name: str) -> None:
        """The next CC that arrives will drive ``name``."""
        if name not in CONTROLS:
            raise MusicRNNError(f"unknown control {name!r}; controls: {', '.join(CONTROLS)}")
        self._learning = name

    @property
    def learning(self) -> str | None:
        return self._learning

    def handle(self, cc: int, value: int) -> ControlChange | None:
        """One CC message -> what to change, or None. While learning, the CC is bound and
        ``ControlChange("learned", (name, cc))`` comes back instead."""
        if self._learning is not None:
            name, self._learning = self._learning, None
            self.bind(name, cc)
            self._last[cc] = value
            return ControlChange("learned", (name, cc))
        name = self.by_cc.get(cc)
        prev = self._last.get(cc, 0)
        self._last[cc] = value
        if name is None:
            return None
        convert = CONTROLS[name].cc_value
        if convert is None:
            return ControlChange(name) if value >= 64 > prev else None
        return ControlChange(name, convert(value))

    def table(self) -> list[tuple[str, int | None, str]]:
        """(control, CC, meaning) rows for help and status."""
        return [(name, self.cc_of(name), c.cc_help) for name, c in CONTROLS.items()]
