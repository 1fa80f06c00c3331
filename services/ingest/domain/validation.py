"""The quality rules, as data: each metric's canonical unit and how the accepted units convert to
it, the hard and soft ranges, the largest plausible rate of change (spike) and how many equal
readings make a stuck sensor, each of which a station may narrow in its attributes.

:func:`plan_for` turns the tables and a station's attributes into a :class:`CheckPlan`: every
number the checks of one metric at one station need, looked up once. The checks themselves are
written once, in the compiled kernel (``_native.c``'s ``check_batch``), which applies the plans
to a batch; :mod:`services.ingest.domain.kernel` calls it, and says in words why it refused a
reading (:func:`rejection`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, Protocol

from shared.contracts import Quality

# Canonical unit per metric, and how each accepted unit converts to it.
Converter = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class Scale:
    """A conversion by a factor (most of them): the compiled kernel multiplies by ``factor``
    itself instead of calling it."""

    factor: float

    def __call__(self, v: float) -> float:
        return v * self.factor


def _scale(k: float) -> Converter:
    return Scale(k)


_IDENTITY: Converter = _scale(1.0)

UNITS: dict[str, tuple[str, dict[str, Converter]]] = {
    "rainfall": ("mm", {"mm": _IDENTITY, "cm": _scale(10.0), "m": _scale(1000.0)}),
    **{f"rainfall_{h}h": ("mm", {"mm": _IDENTITY, "cm": _scale(10.0)}) for h in (1, 3, 6, 12, 24)},
    "water_level": ("m", {"m": _IDENTITY, "cm": _scale(0.01), "mm": _scale(0.001)}),
    "temperature": (
        "degC",
        {
            "degc": _IDENTITY,
            "°c": _IDENTITY,
            "c": _IDENTITY,
            "k": lambda v: v - 273.15,
            "degf": lambda v: (v - 32.0) * 5.0 / 9.0,
        },
    ),
    "wind_speed": ("m/s", {"m/s": _IDENTITY, "km/h": _scale(1 / 3.6)}),
    "wind_gust": ("m/s", {"m/s": _IDENTITY, "km/h": _scale(1 / 3.6)}),
    "ch4": ("%", {"%": _IDENTITY, "ppm": _scale(1e-4)}),
    "co": ("ppm", {"ppm": _IDENTITY}),
    "combustible_gas": ("%LEL", {"%lel": _IDENTITY}),
    "toxic_gas": ("ppm", {"ppm": _IDENTITY}),
    "displacement": ("mm", {"mm": _IDENTITY, "cm": _scale(10.0), "m": _scale(1000.0)}),
    "crack_width": ("mm", {"mm": _IDENTITY, "cm": _scale(10.0)}),
    "tank_level": ("m", {"m": _IDENTITY, "cm": _scale(0.01), "mm": _scale(0.001)}),
    "tank_temperature": ("degC", {"degc": _IDENTITY, "°c": _IDENTITY, "c": _IDENTITY}),
    "tank_pressure": ("MPa", {"mpa": _IDENTITY, "kpa": _scale(0.001), "bar": _scale(0.1)}),
    "fire_danger": ("grade", {"grade": _IDENTITY, "": _IDENTITY}),
    # snowfall as water equivalent, as the snowstorm signal reads it
    "snowfall": ("mm", {"mm": _IDENTITY, "cm": _scale(10.0)}),
    "ground_temperature": ("degC", {"degc": _IDENTITY, "°c": _IDENTITY, "c": _IDENTITY}),
    "road_surface_temperature": ("degC", {"degc": _IDENTITY, "°c": _IDENTITY, "c": _IDENTITY}),
    "visibility": ("m", {"m": _IDENTITY, "km": _scale(1000.0)}),
    # the meteorological drought composite index MCI (GB/T 20481-2017), dimensionless
    "drought_index": ("MCI", {"mci": _IDENTITY, "": _IDENTITY}),
    "waterlogging_depth": ("cm", {"cm": _IDENTITY, "m": _scale(100.0), "mm": _scale(0.1)}),
}

# Physically impossible values are rejected (hard); implausible ones are flagged doubtful (soft).
# A station may narrow either with attributes ``hard_range`` / ``soft_range`` keyed by metric.
HARD_RANGE: dict[str, tuple[float, float]] = {
    "rainfall": (0.0, 500.0),
    **{f"rainfall_{h}h": (0.0, 2000.0) for h in (1, 3, 6, 12, 24)},
    "water_level": (-500.0, 9000.0),
    "temperature": (-80.0, 65.0),
    "wind_speed": (0.0, 120.0),
    "wind_gust": (0.0, 150.0),
    "ch4": (0.0, 100.0),
    "co": (0.0, 5000.0),
    "combustible_gas": (0.0, 100.0),
    "toxic_gas": (0.0, 10000.0),
    "fire_danger": (1.0, 5.0),
    "snowfall": (0.0, 500.0),
    "ground_temperature": (-80.0, 90.0),
    "road_surface_temperature": (-60.0, 90.0),
    "visibility": (0.0, 100_000.0),
    "waterlogging_depth": (-10.0, 1000.0),
}
SOFT_RANGE: dict[str, tuple[float, float]] = {
    "rainfall": (0.0, 200.0),
    "temperature": (-50.0, 50.0),
}


class ReadingIn(Protocol):
    """What the checks read of a received reading (:class:`shared.contracts.RawReading` or the
    consumer's :class:`shared.contracts.RawReadingRecord`)."""

    @property
    def metric(self) -> str: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def kind(self) -> Literal["observation", "forecast"]: ...


@dataclass(frozen=True, slots=True)
class StationInfo:
    id: str
    kind: str
    region_code: str
    interval_s: int = 300
    attributes: Mapping[str, Any] = field(default_factory=dict)
    maintenance: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


class Normalised(NamedTuple):
    value: float
    unit: str
    quality: Quality
    checks: tuple[str, ...]


def _range(station: StationInfo, key: str, metric: str) -> tuple[float, float] | None:
    override = station.attributes.get(key)
    if override is not None and isinstance(override, Mapping):
        r = override.get(metric)
        if isinstance(r, list | tuple) and len(r) == 2:
            return float(r[0]), float(r[1])
    table = HARD_RANGE if key == "hard_range" else SOFT_RANGE
    return table.get(metric)


# -- checks against the station's own recent series -----------------------------------------

# The largest plausible change per hour; faster is a spike (doubtful). A station may set its own
# with the attribute ``max_rate_per_h`` keyed by metric. Gas and rainfall have none: a leak or a
# downpour can rise as fast as it likes.
MAX_RATE_PER_H: dict[str, float] = {
    "water_level": 3.0,
    "temperature": 15.0,
    "tank_level": 5.0,
    "tank_temperature": 30.0,
    "displacement": 500.0,
    "crack_width": 100.0,
}
# The same value this many times running is a stuck sensor (doubtful). Attribute ``stuck_count``
# keyed by metric. Metrics that sit at one value for long (rain, gas at 0) have none.
STUCK_COUNT: dict[str, int] = {
    "water_level": 24,
    "temperature": 12,
    "wind_speed": 24,
    "tank_pressure": 48,
}
HISTORY = max(STUCK_COUNT.values())

# What the spike and stuck checks need of a (station, metric)'s trusted readings: () while it
# has none, else (ts, value, run): the last one's time and value, and how many of them in a row,
# up to it, had that value (at most a bound, ``keep``). A constant size, where a series of the
# last readings would hold up to a stuck_count of them for each of 200,000 keys.
Recent = tuple[()] | tuple[datetime, float, int]
Key = tuple[str, str]  # (station, metric): whose trusted readings a Recent sums up


def summary(series: Sequence[tuple[datetime, float]], keep: int) -> Recent:
    """The :data:`Recent` of trusted readings (oldest first)."""
    if not series:
        return ()
    ts, value = series[-1]
    run = 0
    for _, v in reversed(series):
        if v != value or run == keep:
            break
        run += 1
    return (ts, value, run)


def _per_metric(station: StationInfo, key: str, metric: str, default: float | None) -> float | None:
    own = station.attributes.get(key)
    if own is not None and isinstance(own, Mapping) and isinstance(own.get(metric), int | float):
        return float(own[metric])
    return default


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """Everything the checks of one metric at one station need, looked up once: the station's
    attributes and the tables are read when the plan is made, not for every reading."""

    station_id: str
    metric: str
    canonical: str | None  # None: a metric not known, kept in the unit it is sent in
    converters: Mapping[str, Converter]
    hard: tuple[float, float] | None
    soft: tuple[float, float] | None
    maintenance: bool
    max_rate_per_h: float | None
    stuck_count: int | None
    # the plan as one tuple, for the compiled kernel (services.ingest.domain.kernel):
    # (canonical, converters (unit → a factor, or a function), hard, soft, maintenance,
    #  max_rate_per_h, stuck_count, judged, key); the key (station, metric) is one object for
    # every reading of the plan, so that the kernel's lookups by it compare no strings
    packed: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        packed = (
            self.canonical,
            {u: c.factor if isinstance(c, Scale) else c for u, c in self.converters.items()},
            self.hard,
            self.soft,
            self.maintenance,
            self.max_rate_per_h,
            self.stuck_count,
            self.judged_on_history,
            (self.station_id, self.metric),
        )
        object.__setattr__(self, "packed", packed)

    @property
    def judged_on_history(self) -> bool:
        """Whether the metric has a spike or stuck check at this station."""
        return self.max_rate_per_h is not None or self.stuck_count is not None


def plan_for(station: StationInfo, metric: str) -> CheckPlan:
    spec = UNITS.get(metric)
    converters: dict[str, Converter] = {}
    canonical: str | None = None
    if spec is not None:
        canonical, converters = spec[0], dict(spec[1])
    stuck = _per_metric(station, "stuck_count", metric, STUCK_COUNT.get(metric))
    return CheckPlan(
        station_id=station.id,
        metric=metric,
        canonical=canonical,
        converters=converters,
        hard=_range(station, "hard_range", metric),
        soft=_range(station, "soft_range", metric),
        maintenance=station.maintenance,
        max_rate_per_h=_per_metric(station, "max_rate_per_h", metric, MAX_RATE_PER_H.get(metric)),
        stuck_count=int(stuck) if stuck is not None else None,
    )


class PlanCache:
    """Check plans by station and metric, made again when the station cache hands out a new
    :class:`StationInfo` for the station (its attributes may have changed)."""

    def __init__(self, limit: int = 200_000) -> None:
        self._plans: dict[str, dict[str, tuple[StationInfo, CheckPlan]]] = {}
        self._size = 0
        self._limit = limit

    @property
    def entries(self) -> dict[str, dict[str, tuple[StationInfo, CheckPlan]]]:
        """station id → metric → (the StationInfo the plan was made for, the plan): read by
        the compiled kernel (two lookups by strings it already has, no key to build), which
        asks :meth:`get` on a miss."""
        return self._plans

    def get(self, station: StationInfo, metric: str) -> CheckPlan:
        by_metric = self._plans.get(station.id)
        hit = by_metric.get(metric) if by_metric is not None else None
        if hit is not None and hit[0] is station:
            return hit[1]
        if self._size >= self._limit:
            self._plans.clear()
            self._size = 0
            by_metric = None
        plan = plan_for(station, metric)
        if by_metric is None:
            by_metric = self._plans[station.id] = {}
        self._size += metric not in by_metric
        by_metric[metric] = (station, plan)
        return plan


def judged_on_history(station: StationInfo, metric: str) -> bool:
    """Whether the metric has a spike or stuck check at this station."""
    return plan_for(station, metric).judged_on_history


def rejection(
    reason: str, plan: CheckPlan | None, raw: ReadingIn, station_id: str, value: float | None
) -> Rejection:
    """Why the kernel refused a reading, in words: its ``reason`` (``unknown_station``,
    ``missing_unit``, ``bad_unit``, ``out_of_hard_range``), its plan, and for a value out of
    range the value as converted."""
    if reason == "unknown_station" or plan is None:
        return Rejection("unknown_station", f"station {station_id!r} is not registered")
    if reason == "missing_unit":
        return Rejection("missing_unit", f"metric {plan.metric!r} is not known; state its unit")
    if reason == "bad_unit":
        return Rejection(
            "bad_unit",
            f"unit {raw.unit!r} is not accepted for {plan.metric}; use {plan.canonical}",
        )
    hard = plan.hard
    assert reason == "out_of_hard_range", reason
    assert hard is not None
    assert value is not None
    unit = plan.canonical or raw.unit
    return Rejection(
        "out_of_hard_range",
        f"{plan.metric}={value:g} {unit} outside [{hard[0]:g}, {hard[1]:g}]",
    )
