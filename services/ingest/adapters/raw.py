"""A raw reading as the field-protocol receivers write it to the raw topic: the JSON of
:class:`shared.contracts.RawReading`, built straight from values a decoder has already checked."""

from __future__ import annotations

from datetime import datetime

import orjson


def raw_reading(
    *,
    source: str,
    station: str,
    metric: str,
    ts: datetime,
    value: float,
    unit: str | None,
    received_at: datetime,
) -> bytes:
    return orjson.dumps(
        {
            "source": source,
            "station_id": station,
            "metric": metric,
            "ts": ts.isoformat(),
            "value": value,
            "unit": unit,
            "received_at": received_at.isoformat(),
        }
    )
