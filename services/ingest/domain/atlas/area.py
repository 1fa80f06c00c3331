"""A warning's area (its regions or its CAP polygon), what shelters can take against the people
in it, and the surroundings as GeoJSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from services.ingest.domain.atlas.checks import region_prefix

SQUARE_METRES_PER_PERSON = 1.5  # the plans' figure for an emergency shelter


@dataclass(frozen=True)
class ShelterBalance:
    people: int
    capacity: int
    shortfall: int
    covered: float | None


def shelter_capacity(capacity_persons: int, area_m2: float | None) -> int:
    """Persons a shelter takes: its stated capacity, bounded by its usable area at 1.5 m² a
    person when the area is known."""
    if area_m2 is None:
        return capacity_persons
    return min(capacity_persons, int(area_m2 / SQUARE_METRES_PER_PERSON))


def balance(people: int, capacity: int) -> ShelterBalance:
    return ShelterBalance(
        people=people,
        capacity=capacity,
        shortfall=max(0, people - capacity),
        covered=None if people == 0 else min(1.0, capacity / people),
    )


# ---------------------------------------------------------------------------------------------
# an area: a warning's regions or its polygon


@dataclass(frozen=True)
class Area:
    """What a warning covers: division codes, or a CAP polygon (which, when given, decides what
    is inside; the regions still choose the plans)."""

    regions: tuple[str, ...] = ()
    polygon: str | None = None  # EWKT

    @property
    def prefixes(self) -> list[str]:
        return [region_prefix(c) + "%" for c in self.regions]


def cap_polygon(text: str) -> str:
    """A CAP polygon (``lat,lon lat,lon …``, first point repeated last, at least four points)
    as EWKT in WGS 84; an unclosed ring is closed. Raises ValueError with the reason."""
    points: list[tuple[float, float]] = []
    for pair in text.split():
        try:
            lat_s, lon_s = pair.split(",")
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise ValueError(f"{pair!r} is not a 'lat,lon' pair") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not math.isfinite(lat + lon):
            raise ValueError(f"{pair!r} is not a position")
        points.append((lon, lat))
    if points and points[0] != points[-1]:
        points.append(points[0])
    if len(points) < 4:
        raise ValueError("a polygon needs at least three distinct points")
    ring = ", ".join(f"{lon} {lat}" for lon, lat in points)
    return f"SRID=4326;POLYGON(({ring}))"


LAYERS = ("targets", "hazard_sites", "enterprises", "shelters", "teams", "depots")


def feature_collection(
    surroundings: Mapping[str, object], area_geojson: Mapping[str, object] | None = None
) -> dict[str, object]:
    """The surroundings as one GeoJSON FeatureCollection (RFC 7946, WGS 84): every located
    record a Point feature whose ``layer`` property names its registry, and the area's polygon
    as the ``area`` layer."""
    features: list[dict[str, object]] = []
    if area_geojson is not None:
        features.append(
            {"type": "Feature", "geometry": dict(area_geojson), "properties": {"layer": "area"}}
        )
    for layer in LAYERS:
        items = surroundings.get(layer)
        if not isinstance(items, list):
            continue
        for item in items:
            props = {k: v for k, v in item.items() if k not in ("lon", "lat")}
            geometry = (
                {"type": "Point", "coordinates": [item["lon"], item["lat"]]}
                if item.get("lon") is not None
                else None
            )
            features.append(
                {
                    "type": "Feature",
                    "id": f"{layer}/{item.get('id')}",
                    "geometry": geometry,
                    "properties": {"layer": layer, **props},
                }
            )
    return {"type": "FeatureCollection", "features": features}
