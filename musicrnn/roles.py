"""Roles: the parts a codec with roles keeps apart (e.g. a melody and its accompaniment), and
which tracks of a MIDI file play each (``musicrnn data prepare --roles``).

Holds :class:`RoleChoice` (the roles' track names, parsed from the CLI, and each note's role),
:func:`check_roles` (a codec with roles needs them, and only it takes them),
:func:`reject_missing_roles` (a file lacking a role's notes is skipped) and
:func:`role_summary_line` (``data prepare`` / ``data stats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrnn.codecs import Codec, codec_from_dict
from musicrnn.errors import DataError
from musicrnn.notes import NoteBatch
from musicrnn.sources import track_values


@dataclass(frozen=True)
class RoleChoice:
    """Which tracks play which role, for a codec with roles (``data prepare --roles``): per role
    (in the codec's order) the track names (lower case, stripped) whose notes play it."""

    roles: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def parse(cls, specs: tuple[str, ...] | list[str], roles: tuple[str, ...], codec_name: str) -> RoleChoice:
        """From the CLI's ``--roles melody=MELODY,BRIDGE --roles accompaniment=PIANO``: every role
        of the codec (``roles``) once, each with its track names; a track in one role only."""
        example = " ".join(f"--roles {r}={n}" for r, n in zip(roles, ("MELODY,BRIDGE", "PIANO")))
        if not roles:
            raise DataError(f"--roles: the {codec_name} codec has no roles; leave --roles out, or prepare with a codec "
                            "that has them (--codec accompany)")
        given: dict[str, frozenset[str]] = {}
        for spec in specs:
            role, sep, names = spec.partition("=")
            role = role.strip().lower()
            tracks = frozenset(n.strip().lower() for n in names.split(",") if n.strip())
            if not sep or role not in roles or not tracks:
                raise DataError(f"--roles {spec}: give ROLE=TRACK,TRACK with ROLE one of {', '.join(roles)}, e.g. {example}")
            if role in given:
                raise DataError(f"--roles {spec}: the {role} role is given twice; name all its tracks once, e.g. {example}")
            given[role] = tracks
        missing = [r for r in roles if r not in given]
        if missing:
            raise DataError(f"the {codec_name} codec needs the tracks of every role: --roles for {', '.join(missing)} is "
                            f"missing, e.g. {example}")
        for i, a in enumerate(roles):
            for b in roles[i + 1 :]:
                both = given[a] & given[b]
                if both:
                    raise DataError(f"--roles: track {sorted(both)[0]!r} is in the {a} and the {b} role; give each "
                                    "track one role")
        return cls(tuple((r, given[r]) for r in roles))

    def describe(self) -> str:
        return " ".join(f"--roles {role}={','.join(sorted(names))}" for role, names in self.roles)

    def to_dict(self) -> dict:
        return {role: sorted(names) for role, names in self.roles}

    def of_rows(self, batch: NoteBatch) -> np.ndarray:
        """Each row's role (its index in ``roles``) by its track's name; -1 for no role."""
        return track_values(batch, lambda name: next((i for i, (_, names) in enumerate(self.roles)
                                                      if name.strip().lower() in names), -1))


def check_roles(codec: Codec, roles: RoleChoice | None, tracks_named: bool) -> None:
    """A codec with roles needs the tracks of each (``--roles``), and only such a codec takes
    them; ``tracks_named``: --tracks was given too."""
    if roles is None and codec.roles:
        RoleChoice.parse((), codec.roles, codec.name)  # raises: says which roles are missing
    if roles is not None:
        if not codec.roles:
            RoleChoice.parse((), codec.roles, codec.name)  # raises: this codec has no roles
        if tuple(r for r, _ in roles.roles) != codec.roles:
            raise DataError(f"{roles.describe()}: the {codec.name} codec's roles are {', '.join(codec.roles)}")
        if tracks_named:
            raise DataError("--tracks and --roles both choose tracks; give --roles alone (its track names are the ones kept)")


MISSING_ROLE = "no notes for the role"  # how a rejection for a missing role begins (data prepare counts them)


def reject_missing_roles(reasons: list[str | None], roles: RoleChoice, role: np.ndarray, piece: np.ndarray,
                          tracks: list[list[tuple[str, bool, bool]]]) -> None:
    """Reject (in ``reasons``) the pieces lacking the notes of a role: its tracks are missing
    or play nothing in the codec's range (``role``, ``piece``: of the notes kept in range)."""
    for i, (name, names) in enumerate(roles.roles):
        has = np.bincount(piece[role == i], minlength=len(reasons)) > 0
        for k in np.flatnonzero(~has).tolist():
            if not (reasons[k] or "").startswith(MISSING_ROLE):
                shown = ", ".join(n for n, _, _ in tracks[k][:8]) or "none"
                reasons[k] = (f"{MISSING_ROLE} {name} (tracks {', '.join(sorted(names))}, any case); "
                              f"its tracks: {shown}")


def role_summary_line(manifest: dict) -> str | None:
    """The roles' tracks and how many files lacked one, for ``data prepare``'s summary; None
    for data without roles."""
    roles = ((manifest.get("tracks") or {}).get("choice") or {}).get("roles")
    if not roles:
        return None
    lacking = sum(1 for r in manifest["rejected"] if r["reason"].startswith(MISSING_ROLE))
    order = {r: i for i, r in enumerate(codec_from_dict(manifest["codec"]).roles)}  # JSON sorted them by name
    given = "; ".join(f"{role} = {', '.join(names)}" for role, names in sorted(roles.items(), key=lambda kv: order.get(kv[0], 0)))
    return f"{given} (any case); {lacking:,} file{'s' if lacking != 1 else ''} skipped for lacking a role's notes"
