"""Rules as data: what a rule reads (signals), what each level needs (conditions), and where every
number comes from (sources).

A rule gives a station one level for one hazard. Each level has a condition, a tree of ``all``/
``any`` over atoms:

- :class:`Criterion` — a signal compared with a trigger value, with its own restore value
  (hysteresis) and its source (document, clause, the value as written there);
- :class:`UpstreamAtom` — a warning issued upstream (e.g. the meteorological service's rainstorm
  red warning) is in force for the station's township or county;
- :class:`LevelAtom` — another rule of the station is at or above a level.

A *raise* rule (``raise_by``) has no levels of its own: while its condition holds it lifts the
station's level for its hazard, as the other rules set it, by ``raise_by`` levels (capped at red).

A signal is a metric of the station read as the latest value, a sliding-window aggregate over
observations (sum, avg, max, min, rate of change), the minimum of the daily maxima over N days, or
an aggregate over the newest forecast run. Rules whose signals are all forecasts give events with
CAP urgency Expected instead of Immediate.

The dict format (packs, station attributes, the rules API) is parsed by :func:`parse_rule`, which
checks everything a running engine relies on and raises :class:`RuleConfigError` with the path of
the offending field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.contracts import Level

Agg = Literal["last", "sum", "avg", "max", "min", "count", "rate", "days_running_min"]
AGGS: tuple[str, ...] = ("last", "sum", "avg", "max", "min", "count", "rate", "days_running_min")
Op = Literal[">=", "<="]
Scope = Literal["village", "township", "county"]
ACTIVE: tuple[Level, ...] = (Level.blue, Level.yellow, Level.orange, Level.red)


class RuleConfigError(ValueError):
    """A rule or pack is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a number comes from, kept next to it so a bureau can audit the rule."""

    document: str
    clause: str = ""
    value: str = ""

    def cite(self) -> str:
        parts = [self.document, self.clause, self.value]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Signal:
    metric: str
    agg: Agg = "last"
    window_s: float = 0.0  # sliding window for sum/avg/max/min/count/rate; days for the daily run
    kind: Literal["observation", "forecast"] = "observation"
    per_s: float = 3600.0  # unit of a rate: change per this many seconds
    key: str = field(init=False, compare=False, repr=False)  # its name in evidence and caches

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self._key())

    def _key(self) -> str:
        if self.agg == "last":
            base = self.metric
        elif self.agg == "days_running_min":
            base = f"days_running_min({self.metric},{int(self.window_s)}d)"
        else:
            base = f"{self.agg}({self.metric},{_dur(self.window_s)})"
        if self.agg == "rate":
            base += f"/{_dur(self.per_s)}"
        return f"forecast:{base}" if self.kind == "forecast" else base


@dataclass(frozen=True, slots=True)
class Criterion:
    signal: Signal
    op: Op
    value: float
    restore: float | None = None  # the level holds until the signal passes this (else: value)
    source: Source | None = None

    def triggered(self, x: float | None) -> bool:
        if x is None:
            return False
        return x >= self.value if self.op == ">=" else x <= self.value

    def holds(self, x: float | None) -> bool:
        """Still in force: missing data never restores (silence is not an all-clear)."""
        if x is None:
            return True
        bound = self.value if self.restore is None else self.restore
        return x >= bound if self.op == ">=" else x <= bound


@dataclass(frozen=True, slots=True)
class UpstreamAtom:
    """An upstream warning for ``hazard`` at ``min_level`` or above covers the station's region at
    ``scope`` (its township, say)."""

    hazard: str
    min_level: Level
    scope: Scope = "township"


@dataclass(frozen=True, slots=True)
class LevelAtom:
    rule_id: str
    min_level: Level


Atom = Criterion | UpstreamAtom | LevelAtom


@dataclass(frozen=True, slots=True)
class Cond:
    mode: Literal["all", "any"]
    items: tuple[Atom | Cond, ...]

    def atoms(self) -> Iterator[Atom]:
        for it in self.items:
            if isinstance(it, Cond):
                yield from it.atoms()
            else:
                yield it


@dataclass(frozen=True, slots=True)
class LevelSpec:
    level: Level
    when: Cond
    sustain_s: float = 0.0  # the condition must have held this long before the level is raised


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    hazard: str
    levels: tuple[LevelSpec, ...] = ()  # ordered blue → red; empty for a raise rule
    raise_by: int = 0
    raise_when: Cond | None = None
    description: str = ""
    pack: str = ""
    mapping: str = ""  # how the rule's criteria map to the four colours, in words
    signals: tuple[Signal, ...] = field(default=(), compare=False)
    metrics: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        sigs: dict[str, Signal] = {}
        for c in self.conds():
            for a in c.atoms():
                if isinstance(a, Criterion):
                    sigs.setdefault(a.signal.key, a.signal)
        object.__setattr__(self, "signals", tuple(sigs.values()))
        object.__setattr__(self, "metrics", frozenset(s.metric for s in sigs.values()))

    def conds(self) -> Iterator[Cond]:
        for spec in self.levels:
            yield spec.when
        if self.raise_when is not None:
            yield self.raise_when

    @property
    def expected(self) -> bool:
        """All signals are forecasts: the rule speaks of what is expected, not observed."""
        return bool(self.signals) and all(s.kind == "forecast" for s in self.signals)

    @property
    def compound(self) -> bool:
        return any(
            isinstance(a, UpstreamAtom | LevelAtom) for c in self.conds() for a in c.atoms()
        ) or bool(self.raise_by)

    def spec(self, level: Level) -> LevelSpec | None:
        for s in self.levels:
            if s.level == level:
                return s
        return None

    def criteria(self) -> Iterator[tuple[Level | None, Criterion]]:
        for spec in self.levels:
            for a in spec.when.atoms():
                if isinstance(a, Criterion):
                    yield spec.level, a
        if self.raise_when is not None:
            for a in self.raise_when.atoms():
                if isinstance(a, Criterion):
                    yield None, a


# -- parsing -----------------------------------------------------------------------------------

_DUR = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|min|m|h|d)$")
_UNIT_S = {"s": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DUR.match(value.strip())):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise RuleConfigError(f"{path}: expected a duration such as '3h', '30min' or seconds")
    if seconds < 0:
        raise RuleConfigError(f"{path}: a duration cannot be negative")
    return seconds


def _dur(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def _source(raw: object, path: str) -> Source | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return Source(document=raw)
    if isinstance(raw, Mapping) and isinstance(raw.get("document"), str) and raw["document"]:
        return Source(str(raw["document"]), str(raw.get("clause", "")), str(raw.get("value", "")))
    raise RuleConfigError(f"{path}: a source is a string or {{document, clause, value}}")


def parse_signal(raw: Mapping[str, Any], path: str) -> Signal:
    metric = raw.get("metric")
    if not isinstance(metric, str) or not re.fullmatch(r"[a-z0-9_]{1,64}", metric):
        raise RuleConfigError(f"{path}.metric: a metric name such as 'rainfall' is required")
    agg = raw.get("agg", "last")
    if agg not in AGGS:
        raise RuleConfigError(f"{path}.agg: one of {', '.join(AGGS)}")
    kind = raw.get("kind", "observation")
    if kind not in ("observation", "forecast"):
        raise RuleConfigError(f"{path}.kind: observation or forecast")
    window = 0.0
    if agg == "days_running_min":
        days = raw.get("days")
        if not isinstance(days, int) or not 1 <= days <= 30:
            raise RuleConfigError(f"{path}.days: 1 to 30 days")
        window = float(days)
    elif agg != "last":
        if "window" not in raw:
            raise RuleConfigError(f"{path}.window: required for agg {agg}")
        window = parse_duration(raw["window"], f"{path}.window")
        if not 60 <= window <= 7 * 86400:
            raise RuleConfigError(f"{path}.window: between 1 min and 7 d")
    elif kind == "forecast":
        raise RuleConfigError(f"{path}: a forecast signal needs an aggregate over a window")
    per = parse_duration(raw.get("per", 3600), f"{path}.per") if agg == "rate" else 3600.0
    if per <= 0:
        raise RuleConfigError(f"{path}.per: must be positive")
    return Signal(metric, agg, window, kind, per)


def parse_cond(raw: object, path: str, *, default_signal: Signal | None = None) -> Cond:
    """``{"all": [...]}``, ``{"any": [...]}`` or a single atom (read as ``all`` of one)."""
    if isinstance(raw, Mapping) and ("all" in raw or "any" in raw):
        mode: Literal["all", "any"] = "all" if "all" in raw else "any"
        items_raw = raw[mode]
        if not isinstance(items_raw, list) or not items_raw:
            raise RuleConfigError(f"{path}.{mode}: a non-empty list")
        items: list[Atom | Cond] = []
        for i, it in enumerate(items_raw):
            sub = parse_cond(it, f"{path}.{mode}[{i}]", default_signal=default_signal)
            items.append(sub.items[0] if len(sub.items) == 1 and sub.mode == "all" else sub)
        return Cond(mode, tuple(items))
    return Cond("all", (parse_atom(raw, path, default_signal=default_signal),))


def parse_atom(raw: object, path: str, *, default_signal: Signal | None = None) -> Atom:
    if not isinstance(raw, Mapping):
        raise RuleConfigError(f"{path}: expected an object")
    if "upstream" in raw:
        up = raw["upstream"]
        if not isinstance(up, Mapping) or not isinstance(up.get("hazard"), str):
            raise RuleConfigError(f"{path}.upstream: {{hazard, min_level, scope}}")
        scope = up.get("scope", "township")
        if scope not in ("village", "township", "county"):
            raise RuleConfigError(f"{path}.upstream.scope: village, township or county")
        return UpstreamAtom(up["hazard"], _level(up.get("min_level", "blue"), path), scope)
    if "rule_level" in raw:
        rl = raw["rule_level"]
        if not isinstance(rl, Mapping) or not isinstance(rl.get("rule"), str):
            raise RuleConfigError(f"{path}.rule_level: {{rule, min_level}}")
        return LevelAtom(rl["rule"], _level(rl.get("min_level", "blue"), path))
    if "signal" in raw:
        sig_raw = raw["signal"]
        if not isinstance(sig_raw, Mapping):
            raise RuleConfigError(f"{path}.signal: expected an object")
        signal = parse_signal(sig_raw, f"{path}.signal")
    elif default_signal is not None:
        signal = default_signal
    else:
        raise RuleConfigError(f"{path}: an atom needs signal, upstream or rule_level")
    op = raw.get("op", ">=")
    if op not in (">=", "<="):
        raise RuleConfigError(f"{path}.op: >= or <=")
    value = _number(raw.get("value"), f"{path}.value")
    restore = raw.get("restore")
    restore_v = None if restore is None else _number(restore, f"{path}.restore")
    if restore_v is not None and (restore_v > value if op == ">=" else restore_v < value):
        raise RuleConfigError(f"{path}.restore: must not be past the trigger value {value:g}")
    return Criterion(signal, op, value, restore_v, _source(raw.get("source"), f"{path}.source"))


def _number(raw: object, path: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise RuleConfigError(f"{path}: a number is required")
    v = float(raw)
    if v != v or v in (float("inf"), float("-inf")):
        raise RuleConfigError(f"{path}: must be finite")
    return v


def _level(raw: object, path: str) -> Level:
    if raw not in ("blue", "yellow", "orange", "red"):
        raise RuleConfigError(f"{path}: level blue, yellow, orange or red")
    return Level[str(raw)]


def parse_rule(raw: Mapping[str, Any], *, pack: str = "", path: str = "rule") -> Rule:
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,96}", rule_id):
        raise RuleConfigError(f"{path}.id: letters, digits and _.:- only")
    hazard = raw.get("hazard")
    if not isinstance(hazard, str) or not hazard:
        raise RuleConfigError(f"{path}.hazard: required")
    default_signal = (
        parse_signal(raw["signal"], f"{path}.signal")
        if isinstance(raw.get("signal"), Mapping)
        else None
    )
    levels: list[LevelSpec] = []
    levels_raw = raw.get("levels") or {}
    if not isinstance(levels_raw, Mapping):
        raise RuleConfigError(f"{path}.levels: an object keyed by blue|yellow|orange|red")
    for name, spec in levels_raw.items():
        lp = f"{path}.levels.{name}"
        lvl = _level(name, lp)
        sustain = 0.0
        if isinstance(spec, Mapping) and "when" in spec:
            sustain = parse_duration(spec.get("sustain", 0), f"{lp}.sustain")
            when = parse_cond(spec["when"], f"{lp}.when", default_signal=default_signal)
        elif isinstance(spec, int | float) and not isinstance(spec, bool):
            if default_signal is None:
                raise RuleConfigError(f"{lp}: a bare value needs the rule's signal")
            when = Cond("all", (Criterion(default_signal, raw.get("op", ">="), float(spec)),))
        else:
            when = parse_cond(spec, lp, default_signal=default_signal)
        levels.append(LevelSpec(lvl, when, sustain))
    levels.sort(key=lambda s: s.level)
    raise_by = raw.get("raise_by", 0)
    raise_when = None
    if raise_by:
        if not isinstance(raise_by, int) or not 1 <= raise_by <= 3:
            raise RuleConfigError(f"{path}.raise_by: 1 to 3 levels")
        if levels:
            raise RuleConfigError(f"{path}: a raise rule has no levels of its own")
        if "when" not in raw:
            raise RuleConfigError(f"{path}.when: a raise rule needs a condition")
        raise_when = parse_cond(raw["when"], f"{path}.when", default_signal=default_signal)
    elif not levels:
        raise RuleConfigError(f"{path}.levels: at least one level")
    rule = Rule(
        rule_id=rule_id,
        hazard=hazard,
        levels=tuple(levels),
        raise_by=int(raise_by or 0),
        raise_when=raise_when,
        description=str(raw.get("description", "")),
        pack=pack,
        mapping=str(raw.get("mapping", "")),
    )
    _check_order(rule, path)
    return rule


def _check_order(rule: Rule, path: str) -> None:
    """Single-criterion levels on the same signal must grow more severe in order."""
    last: dict[str, tuple[Level, Criterion]] = {}
    for spec in rule.levels:
        atoms = list(spec.when.atoms())
        if len(atoms) != 1 or not isinstance(atoms[0], Criterion):
            continue
        c = atoms[0]
        prev = last.get(c.signal.key)
        if prev is not None and prev[1].op == c.op:
            worse = c.value > prev[1].value if c.op == ">=" else c.value < prev[1].value
            if not worse and c.value != prev[1].value:
                raise RuleConfigError(
                    f"{path}.levels.{spec.level.name}: {c.value:g} is less severe than "
                    f"{prev[0].name} {prev[1].value:g} on {c.signal.key}"
                )
        last[c.signal.key] = (spec.level, c)


def parse_rules(raw: Sequence[Mapping[str, Any]], *, pack: str = "") -> list[Rule]:
    rules = [parse_rule(r, pack=pack, path=f"rules[{i}]") for i, r in enumerate(raw)]
    ids = [r.rule_id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuleConfigError(f"duplicate rule ids: {', '.join(sorted(dup))}")
    return rules
