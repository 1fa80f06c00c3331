"""The pure rule engine: ``evaluate(plan, state, reading, now, context) -> (state, changes)``.

No Kafka, no database, no clock: rules, state and time come in as data, decisions go out as data.

- A :class:`StationPlan` is a station's rules compiled once: which metrics feed which rules, which
  sliding windows each metric needs.
- A :class:`StationState` is everything the station's rules remember: one :class:`Series` per metric
  (points of the longest window, running aggregates), the newest forecast run per metric, and per
  rule its level, since when, and since when each level's trigger has held (for ``sustain``).
  It serialises to JSON for the checkpoint.
- Levels (DOMAIN.md): the most severe level whose condition is met wins; a level once reached holds
  until its condition's *restore* form no longer holds (hysteresis), and a missing signal never
  restores anything. A level with ``sustain`` is raised only after its trigger held that long.
  A level is reported only when it changes (repeat suppression).
- Late readings within the series' tolerance update the windows; the rules are then judged as of
  the newest time seen, so a late reading cannot roll an alarm back to the past.

Beside it: a station's own thresholds as rules (:mod:`.thresholds`), the no-data decision
(:mod:`.silence`) and the region roll-up (:mod:`.regions`).
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from services.risk.domain.regions import admin_prefix
from services.risk.domain.rules import (
    Cond,
    Criterion,
    LevelAtom,
    Rule,
    Signal,
    Source,
    UpstreamAtom,
)
from services.risk.domain.windows import Series, WindowAgg
from shared.contracts import Level


@dataclass(frozen=True, slots=True)
class ReadingIn:
    station_id: str
    region_code: str
    metric: str
    ts: datetime
    value: float
    quality: str = "good"
    event_id: str = ""
    kind: Literal["observation", "forecast"] = "observation"
    issued_at: datetime | None = None


class Context(Protocol):
    """What the engine may ask about the world beyond one station."""

    def upstream_level(self, hazard: str, region_prefix: str) -> Level: ...


class NoUpstream:
    def upstream_level(self, hazard: str, region_prefix: str) -> Level:
        return Level.none


# -- plan and state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StationPlan:
    rules: tuple[Rule, ...]
    tolerance_s: float = 3600.0
    by_metric: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict, compare=False)
    compound: tuple[Rule, ...] = field(default=(), compare=False)
    windows: Mapping[str, tuple[float, ...]] = field(default_factory=dict, compare=False)
    daily: Mapping[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, rules: Iterable[Rule], tolerance_s: float = 3600.0) -> StationPlan:
        rules = tuple(rules)
        simple = [r for r in rules if not r.compound]
        compound = tuple(r for r in rules if r.compound)
        by_metric: dict[str, list[Rule]] = {}
        windows: dict[str, set[float]] = {}
        daily: dict[str, int] = {}
        for r in rules:
            for s in r.signals:
                windows.setdefault(s.metric, set())
                if s.kind == "observation" and s.agg == "days_running_min":
                    daily[s.metric] = max(daily.get(s.metric, 0), int(s.window_s))
                elif s.kind == "observation" and s.agg != "last":
                    windows[s.metric].add(s.window_s)
        for r in simple:
            for m in r.metrics:
                by_metric.setdefault(m, []).append(r)
        return cls(
            rules=rules,
            tolerance_s=tolerance_s,
            by_metric={m: tuple(rs) for m, rs in by_metric.items()},
            compound=compound,
            windows={m: tuple(sorted(ws)) for m, ws in windows.items()},
            daily=daily,
        )

    def new_series(self, metric: str) -> Series:
        return Series(
            self.windows.get(metric, ()),
            tolerance=self.tolerance_s,
            daily_days=self.daily.get(metric, 0),
        )


@dataclass(slots=True)
class RuleState:
    level: Level = Level.none
    since: float | None = None  # epoch seconds of the last change
    trig_since: dict[int, float] = field(default_factory=dict)  # level → trigger holds since
    evidence: dict[str, Any] = field(default_factory=dict)

    def dump(self) -> dict[str, Any]:
        return {
            "level": int(self.level),
            "since": self.since,
            "trig": {str(k): v for k, v in self.trig_since.items()},
            "evidence": self.evidence,
        }

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> RuleState:
        return cls(
            Level(int(d.get("level", 0))),
            d.get("since"),
            {int(k): float(v) for k, v in (d.get("trig") or {}).items()},
            dict(d.get("evidence") or {}),
        )


@dataclass(slots=True)
class ForecastRun:
    """The newest forecast run of one metric: its issue time and its points."""

    issued: float
    ts: list[float] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)

    def add(self, ts: float, value: float) -> None:
        if ts in self.ts:
            return
        insort(self.ts, ts)
        self.vals.insert(self.ts.index(ts), value)

    def agg(self, agg: str, window: float) -> float | None:
        """The worst value of ``agg`` over any window of the run (sum/avg/max/min/count)."""
        if not self.ts:
            return None
        if agg == "max":
            return max(self.vals)
        if agg == "min":
            return min(self.vals)
        best: float | None = None
        lo, total = 0, 0.0
        for hi, t in enumerate(self.ts):
            total += self.vals[hi]
            while self.ts[lo] <= t - window:
                total -= self.vals[lo]
                lo += 1
            n = hi - lo + 1
            x = total if agg == "sum" else float(n) if agg == "count" else total / n
            best = x if best is None else max(best, x)
        return best


@dataclass(slots=True)
class StationState:
    station_id: str
    region_code: str
    series: dict[str, Series] = field(default_factory=dict)
    forecasts: dict[str, ForecastRun] = field(default_factory=dict)
    rules: dict[str, RuleState] = field(default_factory=dict)
    last_seen: float | None = None
    late: int = 0  # readings refused as later than the tolerance

    def rule(self, rule_id: str) -> RuleState:
        rs = self.rules.get(rule_id)
        if rs is None:
            rs = self.rules[rule_id] = RuleState()
        return rs

    def hazard_level(self, hazard: str, plan: StationPlan) -> Level:
        out = Level.none
        for r in plan.rules:
            if r.hazard == hazard and (rs := self.rules.get(r.rule_id)) and rs.level > out:
                out = rs.level
        return out

    def dump(self) -> dict[str, Any]:
        return {
            "region": self.region_code,
            "series": {m: s.dump() for m, s in self.series.items()},
            "forecasts": {
                m: {"issued": f.issued, "t": f.ts, "v": f.vals} for m, f in self.forecasts.items()
            },
            "rules": {rid: rs.dump() for rid, rs in self.rules.items()},
            "last_seen": self.last_seen,
            "late": self.late,
        }

    @classmethod
    def load(cls, station_id: str, d: Mapping[str, Any], plan: StationPlan) -> StationState:
        st = cls(station_id, str(d.get("region", "")))
        for m, sd in (d.get("series") or {}).items():
            st.series[m] = Series.load(
                sd,
                plan.windows.get(m, ()),
                tolerance=plan.tolerance_s,
                daily_days=plan.daily.get(m, 0),
            )
        for m, fd in (d.get("forecasts") or {}).items():
            st.forecasts[m] = ForecastRun(float(fd["issued"]), list(fd["t"]), list(fd["v"]))
        st.rules = {rid: RuleState.load(rd) for rid, rd in (d.get("rules") or {}).items()}
        st.last_seen = d.get("last_seen")
        st.late = int(d.get("late", 0))
        return st


# -- evaluation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LevelChange:
    station_id: str
    region_code: str
    rule: Rule
    previous: Level
    level: Level
    at: float  # epoch seconds: the time the change is judged at
    evidence: dict[str, Any]

    @property
    def change(self) -> Literal["raised", "lowered", "cleared"]:
        if self.level == Level.none:
            return "cleared"
        return "raised" if self.level > self.previous else "lowered"

    @property
    def event_time(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


class Eval:
    """Signals of one station at one moment, computed at most once each."""

    __slots__ = ("cache", "ctx", "plan", "state")

    def __init__(self, plan: StationPlan, state: StationState, ctx: Context) -> None:
        self.plan, self.state, self.ctx = plan, state, ctx
        self.cache: dict[str, float | None] = {}

    def signal(self, s: Signal) -> float | None:
        key = s.key
        if key in self.cache:
            return self.cache[key]
        x: float | None
        if s.kind == "forecast":
            run = self.state.forecasts.get(s.metric)
            x = None if run is None else run.agg(s.agg, s.window_s)
        else:
            series = self.state.series.get(s.metric)
            if series is None:
                x = None
            elif s.agg == "last":
                x = series.last()
            elif s.agg == "days_running_min":
                x = series.days_running_min(int(s.window_s))
            else:
                x = series.window(s.window_s, cast(WindowAgg, s.agg))
                if x is not None and s.agg == "rate":
                    x *= s.per_s
        self.cache[key] = x
        return x

    def test(self, cond: Cond, hold: bool) -> bool:
        """Trigger form: every needed signal must be known. Hold form: three-valued, so an unknown
        signal neither holds a level nor restores it; the known ones decide, and a level whose
        signals are all unknown holds (silence is not an all-clear)."""
        if not hold:
            return self._trigger(cond)
        return self._hold(cond) is not False

    def _trigger(self, cond: Cond) -> bool:
        if cond.mode == "all":
            return all(
                self._trigger(a) if isinstance(a, Cond) else self._atom(a, False)
                for a in cond.items
            )
        return any(
            self._trigger(a) if isinstance(a, Cond) else self._atom(a, False) for a in cond.items
        )

    def _hold(self, cond: Cond) -> bool | None:
        results = [
            self._hold(a) if isinstance(a, Cond) else self._atom(a, True) for a in cond.items
        ]
        if cond.mode == "all":
            if any(r is False for r in results):
                return False
            return True if any(r is True for r in results) else None
        if any(r is True for r in results):
            return True
        return False if any(r is False for r in results) else None

    def _atom(self, a: Criterion | UpstreamAtom | LevelAtom, hold: bool) -> bool | None:
        if isinstance(a, Criterion):
            x = self.signal(a.signal)
            if x is None:
                return None if hold else False
            return a.holds(x) if hold else a.triggered(x)
        if isinstance(a, UpstreamAtom):
            prefix = admin_prefix(self.state.region_code, a.scope)
            return self.ctx.upstream_level(a.hazard, prefix) >= a.min_level
        rs = self.state.rules.get(a.rule_id)
        return rs is not None and rs.level >= a.min_level


def evaluate(
    plan: StationPlan,
    state: StationState,
    reading: ReadingIn,
    now: datetime,
    ctx: Context | None = None,
) -> tuple[StationState, list[LevelChange]]:
    """Apply one reading to a station's state; return the state and the level changes.

    ``now`` is the processing time; levels are judged at the reading's event time (the newest
    seen), so replaying history gives the events the live stream gave.
    """
    del now
    return state, evaluate_point(
        plan,
        state,
        reading.metric,
        reading.ts.timestamp(),
        reading.value,
        ctx or NoUpstream(),
        reading=reading,
    )


def evaluate_point(
    plan: StationPlan,
    state: StationState,
    metric: str,
    ts: float,
    value: float,
    ctx: Context,
    *,
    reading: ReadingIn | None = None,
) -> list[LevelChange]:
    """:func:`evaluate` on plain numbers (epoch seconds), for replays that need no datetimes.
    ``reading``, when given, is the reading as received (kind, quality, evidence)."""
    if reading is not None:
        state.region_code = reading.region_code or state.region_code
    if state.last_seen is None or ts > state.last_seen:
        state.last_seen = ts
    if reading is not None and reading.quality == "bad":
        return []
    if reading is not None and reading.kind == "forecast":
        issued = (reading.issued_at or reading.ts).timestamp()
        run = state.forecasts.get(metric)
        if run is None or issued > run.issued:
            run = state.forecasts[metric] = ForecastRun(issued)
        elif issued < run.issued:
            return []  # an older run: superseded
        run.add(ts, value)
        at = issued
    else:
        series = state.series.get(metric)
        if series is None:
            series = state.series[metric] = plan.new_series(metric)
        if not series.accept(ts, value):
            state.late += 1
            return []
        at = series.latest or ts
    ev = Eval(plan, state, ctx)
    changes: list[LevelChange] = []
    for rule in plan.by_metric.get(metric, ()):
        judge(rule, ev, at, reading, changes)
    for rule in plan.compound:
        judge(rule, ev, at, reading, changes)
    return changes


def history_horizon(plan: StationPlan) -> float:
    """How much history rebuilds a station's state: its longest window, its longest run of days
    (plus the day in progress), and the lateness tolerance."""
    longest = max([w for ws in plan.windows.values() for w in ws] or [0.0])
    days = max(plan.daily.values() or [0]) + 1 if plan.daily else 0
    return max(longest, days * 86400.0) + plan.tolerance_s


def replay(
    plan: StationPlan,
    state: StationState,
    points: Iterable[tuple[str, float, float]],
    ctx: Context,
) -> int:
    """Feed stored observations (metric, epoch ts, value) in time order into ``state``; the level
    changes on the way are not reported (see :func:`level_diff`). Returns the points applied."""
    n = 0
    for metric, ts, value in points:
        evaluate_point(plan, state, metric, ts, value, ctx)
        n += 1
    return n


def level_diff(
    plan: StationPlan, state: StationState, before: Mapping[str, Level], at: float
) -> list[LevelChange]:
    """One change per rule whose level in ``state`` differs from ``before`` (the levels last
    published): what a rebuilt state must announce so that consumers' picture matches it."""
    out = []
    for rule in plan.rules:
        rs = state.rules.get(rule.rule_id)
        new = rs.level if rs is not None else Level.none
        old = before.get(rule.rule_id, Level.none)
        if new == old:
            continue
        evidence: dict[str, Any] = {
            "signal": "",
            "value": None,
            "threshold": None,
            "criteria": [],
            "sustain_s": 0.0,
        }
        if rs is not None and rs.evidence:
            evidence.update(rs.evidence)
        evidence["rebuilt"] = True
        out.append(LevelChange(state.station_id, state.region_code, rule, old, new, at, evidence))
    return out


def reassess(plan: StationPlan, state: StationState, at: float, ctx: Context) -> list[LevelChange]:
    """Judge the compound rules again without a new reading (an upstream warning changed)."""
    ev = Eval(plan, state, ctx)
    changes: list[LevelChange] = []
    for rule in plan.compound:
        judge(rule, ev, at, None, changes)
    return changes


def judge(
    rule: Rule, ev: Eval, at: float, reading: ReadingIn | None, out: list[LevelChange]
) -> None:
    rs = ev.state.rule(rule.rule_id)
    new = _raised_level(rule, rs, ev) if rule.raise_by else _level_of(rule, rs, ev, at)
    if new == rs.level:
        return
    evidence = _evidence(rule, new, rs.level, ev, reading)
    out.append(
        LevelChange(ev.state.station_id, ev.state.region_code, rule, rs.level, new, at, evidence)
    )
    rs.level, rs.since, rs.evidence = new, at, evidence


def _level_of(rule: Rule, rs: RuleState, ev: Eval, at: float) -> Level:
    new = Level.none
    current = rs.level
    for spec in rule.levels:
        trig = ev.test(spec.when, hold=False)
        if trig:
            if spec.sustain_s:
                since = rs.trig_since.setdefault(int(spec.level), at)
                trig = at - since >= spec.sustain_s
        elif rs.trig_since:
            rs.trig_since.pop(int(spec.level), None)
        if trig or (spec.level <= current and ev.test(spec.when, hold=True)):
            new = spec.level
    return new


def _raised_level(rule: Rule, rs: RuleState, ev: Eval) -> Level:
    assert rule.raise_when is not None
    base = Level.none
    for other in ev.plan.rules:
        if other.hazard == rule.hazard and not other.raise_by:
            ors = ev.state.rules.get(other.rule_id)
            if ors is not None and ors.level > base:
                base = ors.level
    active = ev.test(rule.raise_when, hold=False) or (
        rs.level > Level.none and ev.test(rule.raise_when, hold=True)
    )
    if not active:
        return Level.none
    return Level(min(int(Level.red), int(base) + rule.raise_by))


def _evidence(
    rule: Rule, new: Level, old: Level, ev: Eval, reading: ReadingIn | None
) -> dict[str, Any]:
    """Which signals, which values, which criteria and their sources decided the change."""
    spec_level = new if new > old else old
    spec = rule.spec(spec_level)
    cond = spec.when if spec is not None else rule.raise_when
    criteria = []
    threshold = None
    signal_key = ""
    value = None
    for a in cond.atoms() if cond is not None else ():
        if isinstance(a, Criterion):
            x = ev.signal(a.signal)
            bound = a.value if new > old else (a.restore if a.restore is not None else a.value)
            criteria.append(_criterion_doc(a, x, bound))
            if threshold is None:
                threshold, signal_key, value = bound, a.signal.key, x
        elif isinstance(a, UpstreamAtom):
            criteria.append({"upstream": a.hazard, "min_level": a.min_level.name, "scope": a.scope})
        else:
            criteria.append({"rule_level": a.rule_id, "min_level": a.min_level.name})
    doc: dict[str, Any] = {
        "signal": signal_key,
        "value": value,
        "threshold": threshold,
        "criteria": criteria,
        "sustain_s": spec.sustain_s if spec is not None else 0.0,
    }
    if reading is not None:
        doc["reading"] = {
            "event_id": reading.event_id,
            "metric": reading.metric,
            "ts": reading.ts.isoformat(),
            "value": reading.value,
            "kind": reading.kind,
        }
    return doc


def _criterion_doc(c: Criterion, x: float | None, bound: float) -> dict[str, Any]:
    src: Source | None = c.source
    return {
        "signal": c.signal.key,
        "op": c.op,
        "value": x,
        "bound": bound,
        "source": src.cite() if src is not None else "",
    }
