"""What the partner hears of the player, and how its answer follows it.

A :class:`Listener` is told the player's notes (times in beats) and answers seven questions,
one per *follower*, each of which can be switched off or weakened (:class:`Follow`):

- **key**: the player's tonal centre, from a duration-weighted pitch-class profile that decays
  with time (Krumhansl-Schmuckler, see :mod:`musicrnn.tonality`). The model plays in its home
  keys and :meth:`Listener.transpose` moves what it hears into them and its answer back
  (key-normalised play): the answer is in the player's key whatever keys the model knows.
- **register**: the same transposition adds whole octaves so the answer sits around the
  register of the call (the model's voicing is kept, its lines are not clamped).
- **velocity**: the answer's velocities take the call's level and contour
  (:meth:`Listener.velocity`), blended with the model's own by the follower's strength; an
  accompaniment's take the melody's recent level (:meth:`Listener.accompaniment_velocity`).
- **density**: a bias on the model's note-onset tokens keeps the answer's notes per beat near
  the call's (a proportional controller on the answer's running rate).
- **motif**: a bias towards onsets where the call had them (its rhythm, repeated over its
  length), so the answer reuses the call's rhythm.
- **grid**: the answer lands on the call's grid (:func:`musicrnn.metre.detect_grid`: straight,
  swung eighths or triplets, heard when the answer starts). Models that choose their own times
  (performance codec) get a bias against time shifts that end off the grid and note-ons struck
  off it (:class:`musicrnn.logit_bias.GridBias`), so their rhythm stays their own choice among the grid's places;
  models that play on a fixed straight grid (grid codec) cannot play triplets, so their
  off-beat eighths are delayed to where the call put them (swing; triplets get the triplet
  shuffle, 2/3 of the beat) as they go out (:meth:`Listener.warp`).
- **chords** (accompany mode): the accompaniment's new notes lean to the chord of the key the
  melody sounds in the current beat so far (:class:`musicrnn.harmony.ChordFollower`).

One listener serves the live engine (``musicrnn serve``) and ``musicrnn compose --primer``: the
rules live here once. A fixed key (``--key``) wins over the heard one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

import numpy as np

from musicrnn.errors import MusicRNNError
from musicrnn.harmony import ChordFollower
from musicrnn.limits import FOLLOW_STRENGTH, VELOCITY
from musicrnn.metre import GRID_TOLERANCE, Grid, detect_grid
from musicrnn.tonality import Key, estimate_key, home_shift, key_profile, scale_pitch_classes

FOLLOWERS = ("key", "register", "velocity", "density", "motif", "grid", "chords")
MODEL_CENTRE = 64.0  # MIDI pitch the models' answers centre on (E4): the register follower moves it by octaves
PROFILE_HALF_LIFE_BEATS = 16.0  # the key profile forgets half of what it heard in this many beats
MIN_KEY_NOTES = 3  # no key is estimated from fewer distinct pitch classes
KEY_MARGIN = 0.05  # a new key must beat the current one's correlation by this much (no flip-flopping)
REGISTER_SLACK = 7.0  # semitones the call's centre may drift before the octave changes
WINDOW_BEATS = 8.0  # duet/autoplay: the "call" is what was heard in the last this many beats
MAX_CALL_NOTES = 64  # a call is its last this many notes: the followers' work per note stays bounded under a flood
MAX_BIAS = 4.0  # nats: the density and motif biases never overrule the model completely
REGISTER_GAIN = 5.0  # nats per octave of tilt per octave the answer sits away from the call
DENSITY_GAIN = 1.5  # nats per unit of log(call rate / answer rate)
MOTIF_BIAS = 1.5  # nats at full motif strength
KEY_BIAS = 2.0  # nats taken from notes outside the heard key's scale at full key strength (a soft prior, not a clamp)
HIERARCHY_BIAS = 1.0  # nats per standard deviation of the key's profile, for notes in its scale
THIRD_BIAS = 1.0  # nats more for a major key's third, the note that says major
# A minor key's third is its relative major's tonic: a bonus there (it outweighed the minor tonic)
# led answers to minor calls into the relative major (issue 16). Minor keys get no third bonus and a
# steeper hierarchy instead, so the tonic and fifth lead: offline, the pop model's answers to minor
# calls kept the call's key in 137/144 trials, not 127/144 (chorales 35/36, not 33/36).
MINOR_HIERARCHY_BIAS = 1.5  # nats per standard deviation of a minor key's profile
MOTIF_GRID = 0.25  # beats: the call's onsets are matched on sixteenths
ACCOMPANIMENT_BALANCE = 0.8  # accompany mode: the accompaniment's level, as a share of the melody's
LEVEL_NOTES = 8  # accompany mode: the melody's level is the mean velocity of its last this many notes


@dataclass
class Follow:
    """Strength of each follower, 0 (off) to 1 (full); key and register are on above 0."""

    key: float = 1.0
    register: float = 1.0
    velocity: float = 1.0
    density: float = 1.0
    motif: float = 0.5
    grid: float = 1.0
    chords: float = 1.0
    fixed_velocity: int = 0  # --velocity N: every answer note at N (0 = follow or model)

    def set(self, name: str, strength: float) -> None:
        if name not in FOLLOWERS:
            raise MusicRNNError(f"unknown follower {name!r}; choose {', '.join(FOLLOWERS)}")
        FOLLOW_STRENGTH.check(strength, "follower strength")
        setattr(self, name, float(strength))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def parse(spec: str) -> Follow:
        """``"all"``, ``"none"``, or a comma list like ``"key,register,velocity=0.5"``:
        the named followers on (at the given strength), the others off."""
        spec = spec.strip().lower()
        if spec == "all":
            return Follow()
        follow = Follow(**{name: 0.0 for name in FOLLOWERS})
        if spec in ("none", "off", ""):
            return follow
        for part in spec.split(","):
            name, _, value = part.strip().partition("=")
            try:
                strength = float(value) if value else (Follow.__dataclass_fields__[name].default if name in FOLLOWERS else 1.0)
            except ValueError:
                raise MusicRNNError(f"--follow {part!r}: the strength must be a number in 0-1") from None
            follow.set(name, strength)
        return follow


def parse_velocity(text: str) -> tuple[float | None, int]:
    """``--velocity follow|model|N`` -> (velocity follower strength or None to keep, fixed velocity)."""
    text = text.strip().lower()
    if text == "follow":
        return 1.0, 0
    if text == "model":
        return 0.0, 0
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not VELOCITY.lo <= v <= VELOCITY.hi:
        raise MusicRNNError(f"--velocity {text!r}: give follow, model, or a velocity {VELOCITY.text('-')}")
    return None, v


def fold_into(pitch, lowest: int, highest: int):
    """``pitch`` (an int or an array) moved by whole octaves into ``lowest``-``highest`` (a span of
    at least an octave): a transposed voicing's outer notes stay playable and keep their pitch class."""
    p = np.asarray(pitch, dtype=np.int64)
    p = np.where(p < lowest, p + 12 * ((lowest - p + 11) // 12), p)
    p = np.where(p > highest, p - 12 * ((p - highest + 11) // 12), p)
    return int(p) if np.ndim(p) == 0 else p


def follow_options(spec: str = "all", velocity: str | None = None) -> Follow:
    """``--follow SPEC [--velocity HOW]`` (serve and compose) -> the followers' settings;
    ``--velocity``, when given, overrides what ``--follow`` says of velocity."""
    follow = Follow.parse(spec)
    if velocity is not None:
        strength, fixed = parse_velocity(velocity)
        if strength is not None:
            follow.velocity = strength
        follow.fixed_velocity = fixed
    return follow


@dataclass
class _Heard:
    onset: float
    pitch: int
    velocity: int
    end: float | None = None


@dataclass
class Listener:
    """The player's part as the partner hears it. Times are in beats."""

    follow: Follow = field(default_factory=Follow)
    fixed_tonic: int | None = None  # --key's tonic: wins over the heard key
    model_centre: float = MODEL_CENTRE

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.profile = np.zeros(12)
        self._profile_at = 0.0
        self.key: Key | None = None
        self.call: list[_Heard] = []
        self.held: dict[int, _Heard] = {}
        self.octaves = 0
        self._answer_start: float | None = None
        self._answer_notes = 0
        self._model_velocity = 80.0  # running mean of the model's own velocities
        self.model_mean = self.model_centre  # running mean pitch of the model's notes, in its own pitches
        self.grid: Grid | None = None  # the call's grid, heard when the answer starts
        self._grid_key: tuple | None = None  # the call it was heard from
        self._answer_pitch_sum = 0.0  # of the answer's notes as they sound (a sum, not a list: an accompaniment never ends)
        self.chords = ChordFollower()

    # --- hearing -------------------------------------------------------------------------------
    def note_on(self, beat: float, pitch: int, velocity: int) -> None:
        if self._answer_start is not None:  # the player is back: a new call starts
            self.call = []
            self._answer_start = None
            self.grid = self._grid_key = None
        self._decay(beat)
        note = _Heard(beat, pitch, velocity)
        self.call.append(note)
        if len(self.call) > MAX_CALL_NOTES:
            del self.call[: len(self.call) - MAX_CALL_NOTES]
        self.held[pitch] = note
        self.chords.note_on(beat, pitch)
        self.profile[pitch % 12] += 0.25  # a struck note counts before it ends (short calls have keys too)
        self._trim(beat)

    def note_off(self, beat: float, pitch: int) -> None:
        note = self.held.pop(pitch, None)
        if note is None:
            return
        self.chords.note_off(beat, pitch)
        note.end = beat
        self._decay(beat)
        self.profile[pitch % 12] += max(0.0, min(beat - note.onset, 4.0))

    def _decay(self, beat: float) -> None:
        dt = beat - self._profile_at
        if dt > 0:
            self.profile *= 0.5 ** (dt / PROFILE_HALF_LIFE_BEATS)
            self._profile_at = beat

    def _trim(self, beat: float) -> None:
        """Without answers (duet), the call is a sliding window."""
        if len(self.call) > 8 and beat - self.call[0].onset > WINDOW_BEATS:
            self.call = [n for n in self.call if beat - n.onset <= WINDOW_BEATS or n.end is None]

    # --- key and register ------------------------------------------------------------------------
    def update_key(self) -> Key | None:
        """Re-estimate the key; a new estimate replaces the current one only when clearly better."""
        if np.count_nonzero(self.profile > 1e-3) < MIN_KEY_NOTES:
            return self.key
        new = estimate_key(np.arange(12), self.profile)
        if self.key is None or (new != self.key and new.score > self._score(self.key) + KEY_MARGIN):
            self.key = new
        return self.key

    def _score(self, key: Key) -> float:
        return estimate_key(np.arange(12), self.profile, candidates=[key]).score

    def key_prior(self, transpose: int) -> tuple[float, ...] | None:
        """Nats added per pitch class (as the model sees them) to new notes: notes outside the
        heard key's scale lose ``KEY_BIAS``, those inside follow the key's tonal hierarchy
        (Krumhansl-Kessler, so the tonic triad - and with it the mode - is heard), a major key's third
        gains ``THIRD_BIAS`` and a minor key's hierarchy is steeper (``MINOR_HIERARCHY_BIAS``). The nats are offset so that their exponentials average 1: the prior
        moves notes between pitch classes, not how many notes there are (density is its own
        follower). None when no key is followed (a fixed --key is a hard constraint already).
        Memoised (:func:`_key_prior`): an answer's first decision asks it, and a session has few keys."""
        if self.fixed_tonic is not None or self.key is None or self.follow.key <= 0:
            return None
        return _key_prior(self.key.tonic, self.key.mode, self.follow.key, transpose % 12)

    def chord_prior(self, transpose: int, beat: float) -> np.ndarray | None:
        """The chords follower's nats (model pitch classes) for a frame at ``beat``, or None (off, nothing heard)."""
        t = self.fixed_tonic  # the heard key; on --key's tonic, its major or minor
        key = self.key if t is None else estimate_key(np.arange(12), self.profile, [Key(t, "major"), Key(t, "minor")])
        on = self.follow.chords > 0 and key is not None
        return self.chords.prior(beat, key, self.follow.chords, -transpose) if on else None

    def call_centre(self) -> float | None:
        """Mean pitch of the call (None before any note)."""
        if not self.call:
            return None
        return sum(n.pitch for n in self.call) / len(self.call)  # exact int sum: np.mean's value, without its cost

    def transpose(self, register: bool = True) -> int:
        """Semitones from the model's pitches to the player's (real = model + transpose):
        the key follower's shift into the model's home keys plus the register follower's octaves
        (``register=False``: none, e.g. an accompaniment keeps its place under the melody)."""
        if self.fixed_tonic is not None:
            shift = -home_shift(self.fixed_tonic)
        else:
            shift = -home_shift(self.key) if (self.key is not None and self.follow.key > 0) else 0
        if register and self.follow.register > 0:
            centre = self.call_centre()
            if centre is not None:
                here = self.model_mean + shift + 12 * self.octaves
                if abs(centre - here) > REGISTER_SLACK:
                    self.octaves = int(round((centre - self.model_mean - shift) / 12))
        else:
            self.octaves = 0
        return shift + 12 * self.octaves

    # --- the answer -----------------------------------------------------------------------------
    def start_answer(self, beat: float) -> None:
        """The answer starts: the call heard so far is what it follows."""
        self._answer_start = beat
        self._answer_notes = 0
        self._answer_pitch_sum = 0.0
        if self.hear_grid() is not None:  # a straight or triplet grid's beat: where the answer starts
            self.grid = self.grid.anchored(beat)

    def hear_grid(self) -> Grid | None:
        """The call's grid (:func:`musicrnn.metre.detect_grid`), heard once per call and kept for
        its answer; None when the grid follower is off or the call tells none."""
        key = (len(self.call), self.call[-1].onset if self.call else None, self.follow.grid > 0)
        if key != self._grid_key:
            self._grid_key = key
            self.grid = detect_grid([n.onset for n in self.call]) if self.follow.grid > 0 else None
        return self.grid

    def beat_phase(self) -> float | None:
        """Where the player's beats fall between the clock's (0-1 beat), for an answer to start
        on them; None when no grid is followed or the player plays on the clock's beats (within
        GRID_TOLERANCE: a DAW's grid stays the answer's)."""
        if self.grid is None or self.follow.grid <= 0:
            return None
        p = self.grid.phase % 1.0
        return None if min(p, 1.0 - p) <= GRID_TOLERANCE else p

    def grid_strength(self) -> float:
        """How strongly the answer keeps to the call's grid now: the follower's strength times the
        grid's confidence (0 when no grid was heard or the follower is off)."""
        if self.grid is None or self._answer_start is None:
            return 0.0
        return self.follow.grid * self.grid.confidence

    def warp(self, beat: float) -> float:
        """Where a note a straight-grid model plays at ``beat`` goes out: its off-beat eighths
        delayed to the call's swing (see :meth:`musicrnn.metre.Grid.warp`); ``beat`` itself when
        no grid is followed. Never earlier."""
        s = self.grid_strength()
        return self.grid.warp(beat, s) if s > 0 and self.grid is not None else beat

    def answered(self, model_pitch: int, pitch: int, velocity: int) -> None:
        """The model struck ``model_pitch`` (its own pitch and velocity), sounding as ``pitch``."""
        self._answer_notes += 1
        self._answer_pitch_sum += pitch
        self._model_velocity += 0.1 * (velocity - self._model_velocity)
        self.model_mean += 0.05 * (model_pitch - self.model_mean)

    def register_tilt(self, transpose: int) -> float:
        """Nats per octave added to note-onset logits (higher pitches up for > 0): pulls the
        answer's mean pitch towards the call's without clamping its lines (an exponential tilt of
        the model's pitch distribution, from the answer's running mean). In plain floats (an
        answer's every decision asks it): :meth:`register_tilts`' value for one answer."""
        tilt = self._register_tilt(transpose, self._answer_pitch_sum, self._answer_notes)
        return 0.0 if tilt is None else max(-MAX_BIAS, min(MAX_BIAS, float(tilt)))

    def register_tilts(self, transpose: int, pitch_sums: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
        """:meth:`register_tilt` for several answers at once (compose's batch rows), from the sums
        and counts of their notes' pitches as they sound; None when the register is not followed."""
        tilts = self._register_tilt(transpose, pitch_sums, counts)
        return None if tilts is None else np.clip(tilts, -MAX_BIAS, MAX_BIAS)

    def _register_tilt(self, transpose: int, pitch_sums, counts):
        """The register tilt before clipping, for floats or arrays of answers alike (one formula)."""
        centre = self.call_centre()
        if self.follow.register <= 0 or centre is None or self._answer_start is None:
            return None
        prior = 4.0  # notes' worth of "where the model would play" the running mean starts from
        expected = self.model_mean + transpose
        mean = (pitch_sums + prior * expected) / (counts + prior)
        return self.follow.register * REGISTER_GAIN * (centre - mean) / 12.0

    def call_span(self) -> float:
        """Beats the call lasted (from its first onset to its last note's end), at least one beat."""
        if not self.call:
            return 1.0
        start = self.call[0].onset
        end = max((n.end if n.end is not None else n.onset + 0.5) for n in self.call)
        return max(1.0, end - start)

    def call_rate(self) -> float | None:
        """The call's notes per beat."""
        return len(self.call) / self.call_span() if self.call else None

    def velocity(self, model_velocity: int, beat: float) -> int:
        """The velocity an answer note struck at ``beat`` gets."""
        if self.follow.fixed_velocity:
            return self.follow.fixed_velocity
        s = self.follow.velocity
        if s <= 0 or not self.call:
            return int(model_velocity)
        target = self._contour(beat)
        v = model_velocity + s * (target - self._model_velocity)
        return int(min(127, max(1, round(v))))

    def accompaniment_velocity(self, model_velocity: int) -> int:
        """The velocity of an accompaniment note (accompany mode): the model's own (its accents
        kept), its running level moved towards ``ACCOMPANIMENT_BALANCE`` of the melody's recent
        level by the velocity follower's strength, so the accompaniment follows the player's
        dynamics and stays under the melody."""
        if self.follow.fixed_velocity:
            return self.follow.fixed_velocity
        s = self.follow.velocity
        if s <= 0 or not self.call:
            return int(model_velocity)
        level = float(np.mean([n.velocity for n in self.call[-LEVEL_NOTES:]]))
        v = model_velocity + s * (ACCOMPANIMENT_BALANCE * level - self._model_velocity)
        return int(min(127, max(1, round(v))))

    def _contour(self, beat: float) -> float:
        """The call's velocity at the same place in its span (the answer repeats its dynamics)."""
        span = self.call_span()
        start = self.call[0].onset
        rel = ((beat - (self._answer_start if self._answer_start is not None else beat)) % span) + start
        onsets = np.array([n.onset for n in self.call])
        vels = np.array([n.velocity for n in self.call], float)
        if len(onsets) == 1:
            return float(vels[0])
        return float(np.interp(rel, onsets, vels))

    def onset_bias(self, beat: float) -> float:
        """Nats added to every note-onset token's logit for a decision at ``beat``
        (density and motif followers; 0 while not answering or nothing was heard)."""
        if self._answer_start is None or not self.call:
            return 0.0
        bias = 0.0
        rate = self.call_rate()
        if self.follow.density > 0 and rate:
            elapsed = max(0.0, beat - self._answer_start)
            prior = 1.0  # beats of "as dense as the call" the answer starts with
            answer_rate = (self._answer_notes + rate * prior) / (elapsed + prior)
            bias += self.follow.density * DENSITY_GAIN * math.log(rate / max(answer_rate, 1e-3))
        if self.follow.motif > 0:
            span = self.call_span()
            start = self.call[0].onset
            pos = (beat - self._answer_start) % span
            hit = any(abs(((n.onset - start) - pos + span / 2) % span - span / 2) < MOTIF_GRID / 2 for n in self.call)
            bias += self.follow.motif * MOTIF_BIAS * (1.0 if hit else -1.0)
        return float(max(-MAX_BIAS, min(MAX_BIAS, bias)))

    # --- status ---------------------------------------------------------------------------------
    def heard(self) -> dict[str, object]:
        """What the status line and ``/musicrnn/status`` report."""
        level = float(np.mean([n.velocity for n in self.call])) if self.call else None
        return {
            "key": self.key.name if self.key is not None else "-",
            "level": int(round(level)) if level is not None else 0,
            "centre": int(round(self.call_centre())) if self.call else 0,
            "grid": self.grid.name if self.grid is not None else "-",
        }


def _key_z(key: Key) -> np.ndarray:
    """``key``'s Krumhansl-Kessler profile as z-scores (its tonal hierarchy in standard deviations)."""
    profile = key_profile(key)
    return (profile - profile.mean()) / profile.std()


_KEY_Z = {(tonic, mode): _key_z(Key(tonic, mode)) for mode in ("major", "minor") for tonic in range(12)}


@functools.lru_cache(maxsize=1024)
def _key_prior(tonic: int, mode: str, strength: float, transpose: int) -> tuple[float, ...]:
    """:meth:`Listener.key_prior` for a key, the key follower's strength and a transposition
    (0-11), memoised: it is a constant of these, and working it out (~50 us) was most of the
    followers' cost on an answer's first decision."""
    key = Key(tonic, mode)
    scale = scale_pitch_classes(key)
    z = _KEY_Z[(tonic, mode)]
    nats = np.array([_in_scale_nats(tonic, mode, z, pc) if pc in scale else -KEY_BIAS for pc in range(12)]) * strength
    nats -= np.log(np.mean(np.exp(nats)))
    prior = [0.0] * 12
    for pc in range(12):
        prior[(pc - transpose) % 12] = round(float(nats[pc]), 3)
    return tuple(prior)


def _in_scale_nats(tonic: int, mode: str, z: np.ndarray, pc: int) -> float:
    """Nats for scale note ``pc`` at full key strength: the tonal hierarchy, plus the major third
    (a minor third would favour the relative major; minor keys lean on a steeper hierarchy instead)."""
    if mode == "minor":
        return MINOR_HIERARCHY_BIAS * float(z[pc])
    return HIERARCHY_BIAS * float(z[pc]) + THIRD_BIAS * (pc == (tonic + 4) % 12)
