"""Field types for request bodies and query parameters that take what their OpenAPI schema says
and nothing else. Pydantic's lax mode would turn ``0`` into ``False``, ``false`` into ``0.0`` and
``0.5`` into a date in 1970: a client's mistake stored as a value. These refuse it with a 422."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict

# a JSON number is a double in most clients: integers beyond 2**53 do not survive the trip
JSON_INT_MAX = 2**53 - 1


def _whole(value: Any) -> Any:
    # JSON Schema's integer is a number with no fraction, so 300.0 is one; true and "300" are not
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError("give a whole number")


Flag = Annotated[bool, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Whole = Annotated[int, BeforeValidator(_whole)]
# a row id in a body: a positive integer any JSON client can hold
BodyId = Annotated[int, Field(ge=1, le=JSON_INT_MAX), BeforeValidator(_whole)]

_ISO_8601 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def iso_8601(value: Any) -> Any:
    """A before-validator: ISO 8601 text (or a datetime) passes, anything else is refused."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_8601.match(value):
        return value
    raise ValueError("give a date-time in ISO 8601, such as 2026-07-01T08:00:00+08:00")


# a date-time given as ISO 8601 text (RFC 3339), not as a number of seconds
Instant = Annotated[datetime, BeforeValidator(iso_8601)]
