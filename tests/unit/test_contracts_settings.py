from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from pydantic import ValidationError

from services.alerting.settings import AlertingSettings
from services.gateway.settings import GatewaySettings
from services.ingest.domain.kernel import published, reading_event_id
from services.ingest.domain.rows import Row
from services.ingest.domain.validation import StationInfo
from services.ingest.settings import IngestSettings
from shared.contracts import (
    Level,
    RawReading,
    RawReadingDecoder,
    Reading,
    ReadingDecoder,
    RiskEvent,
    Topics,
    stable_id,
)
from shared.errors import Unauthenticated
from shared.identity import Identity, sign, verify

NOW = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)


def test_raw_reading_requires_an_offset_and_a_finite_value():
    ok = RawReading(
        source="s", station_id="A1", metric="rainfall", ts="2026-07-01T08:00:00+08:00", value=1.0
    )
    assert ok.ts == NOW
    with pytest.raises(ValidationError, match="UTC offset"):
        RawReading(
            source="s", station_id="A1", metric="rainfall", ts="2026-07-01T08:00:00", value=1.0
        )
    with pytest.raises(ValidationError):
        RawReading(
            source="s",
            station_id="A1",
            metric="rainfall",
            ts="2026-07-01T08:00:00Z",
            value=float("nan"),
        )
    with pytest.raises(ValidationError):
        RawReading(
            source="s",
            station_id="bad id with spaces",
            metric="rainfall",
            ts="2026-07-01T08:00:00Z",
            value=1,
        )


GOOD = {
    "source": "s",
    "station_id": "A1",
    "metric": "rainfall",
    "ts": "2026-07-01T08:00:00+08:00",
    "value": 1.5,
}


@pytest.mark.parametrize(
    "doc",
    [
        GOOD,
        {**GOOD, "unit": "mm", "kind": "forecast", "issued_at": "2026-07-01T00:00:00Z"},
        {**GOOD, "extra": {"ignored": True}},
        {**GOOD, "value": 3},
        {**GOOD, "ts": "2026-07-01T00:00:00.123456Z"},
        # what the fast decoder refuses and the model accepts (it coerces): the model decides
        {**GOOD, "value": "2.5"},
        {**GOOD, "ts": 1782864000},
        {**GOOD, "ts": "2026-07-01 08:00:00+08:00"},
        # what both must refuse
        {**GOOD, "metric": "rain\n"},
        {**GOOD, "metric": "Rainfall"},
        {**GOOD, "station_id": "bad id"},
        {**GOOD, "station_id": "x" * 65},
        {**GOOD, "source": ""},
        {**GOOD, "ts": "2026-07-01T08:00:00"},
        {**GOOD, "kind": "nowcast"},
        {**GOOD, "unit": "u" * 17},
        {k: v for k, v in GOOD.items() if k != "value"},
        {**GOOD, "value": None},
        {**GOOD, "value": True},
    ],
)
def test_the_fast_decoder_agrees_with_the_model(doc):
    """The consumer decodes with msgspec; the pydantic model is the contract. Same verdict,
    same values, for what each accepts and refuses."""
    data = orjson.dumps(doc)
    try:
        want = RawReading.model_validate_json(data).model_dump()
    except ValidationError:
        want = None
    try:
        rec = RawReadingDecoder().decode(data)
        got = {f: getattr(rec, f) for f in RawReading.model_fields}
    except ValidationError:
        got = None
    assert got == want


def test_the_fast_decoder_remembers_only_the_ids_it_has_matched():
    """A pattern is matched once per station id and metric pair, then remembered: what comes
    after a good pair is still judged on its own, however it resembles it."""
    dec = RawReadingDecoder()
    assert dec.decode(orjson.dumps(GOOD)).station_id == "A1"
    assert dec.decode(orjson.dumps(GOOD)).metric == "rainfall"  # remembered
    for doc in (
        {**GOOD, "metric": "rain fall"},
        {**GOOD, "station_id": "A1\n"},
        {**GOOD, "station_id": "A 1", "metric": "rainfall"},
    ):
        with pytest.raises(ValidationError):
            dec.decode(orjson.dumps(doc))
    many = [orjson.dumps({**GOOD, "station_id": f"S{i}"}) for i in range(100_001)]
    assert [dec.decode(d).station_id for d in many[-3:]] == ["S99998", "S99999", "S100000"]
    assert all(len(seen) <= 100_000 for _, _, seen in dec._checks)  # bounded
    for d in many:
        dec.decode(d)
    assert all(len(seen) <= 100_000 for _, _, seen in dec._checks)
    with pytest.raises(ValidationError):
        dec.decode(orjson.dumps({**GOOD, "station_id": "S1 "}))


def test_a_batch_decodes_at_once_only_when_every_message_would_alone():
    dec = RawReadingDecoder()
    good = [orjson.dumps({**GOOD, "station_id": f"S{i}", "value": i}) for i in range(50)]
    many = dec.decode_many(good)
    assert many == [RawReadingDecoder().decode(d) for d in good]
    assert dec.decode_many(good) == many  # again, with every pair remembered
    assert dec.decode_many([]) == []
    spoilers = [
        orjson.dumps({**GOOD, "station_id": "bad id"}),  # a pattern
        orjson.dumps({**GOOD, "value": "2.5"}),  # only the model would take it
        orjson.dumps(GOOD).replace(b"1.5", b"1e999"),  # not finite
        b'{"source": ',  # not JSON
        b"",  # nothing
        orjson.dumps(GOOD, option=orjson.OPT_INDENT_2),  # good, but over several lines
        orjson.dumps(GOOD) + b"\n" + orjson.dumps(GOOD),  # two in one message
        None,  # no value
    ]
    for spoiler in spoilers:
        assert dec.decode_many([*good[:3], spoiler, *good[3:6]]) is None, spoiler


def test_the_fast_decoder_refuses_what_is_not_json_or_not_finite():
    dec = RawReadingDecoder()
    with pytest.raises(ValidationError, match=r"json_invalid|Invalid JSON"):
        dec.decode(b'{"source": ')
    huge = orjson.dumps(GOOD).replace(b"1.5", b"1e999")
    with pytest.raises(ValidationError):
        dec.decode(huge)


EVENT = {
    "event_id": "0123abcd",
    "produced_at": "2026-07-01T00:00:01Z",
    "station_id": "WL1",
    "region_code": "110101001001",
    "station_kind": "water_level",
    "metric": "water_level",
    "ts": "2026-07-01T08:00:00+08:00",
    "value": 2.5,
    "unit": "m",
    "quality": "doubtful",
    "quality_checks": ["spike"],
    "source": "hydro",
}


@pytest.mark.parametrize(
    "doc",
    [
        EVENT,
        {**EVENT, "kind": "forecast", "issued_at": "2026-07-01T00:00:00Z"},
        {k: v for k, v in EVENT.items() if k not in ("quality", "quality_checks")},
        {**EVENT, "value": 3},
        # what the fast decoder refuses and the model accepts (it coerces): the model decides
        {**EVENT, "value": "2.5"},
        {**EVENT, "ts": 1782864000},
        {**EVENT, "region_code": "\u0661" * 12},  # Arabic-Indic digits: the model's \d takes them
        # what both must refuse
        {**EVENT, "unknown": 1},
        {**EVENT, "region_code": "11010100100"},
        {**EVENT, "region_code": "110101001001\n"},
        {**EVENT, "station_id": "bad id"},
        {**EVENT, "event_id": ""},
        {**EVENT, "ts": "2026-07-01T08:00:00"},
        {**EVENT, "produced_at": "2026-07-01T00:00:01"},
        {**EVENT, "quality": "ok"},
        {**EVENT, "kind": "nowcast"},
        {k: v for k, v in EVENT.items() if k != "source"},
        {**EVENT, "value": None},
    ],
)
def test_risks_fast_reading_decoder_agrees_with_the_model(doc):
    """Risk decodes readings.v1 with msgspec; the pydantic model is the contract. Same verdict,
    same values."""
    data = orjson.dumps(doc)
    try:
        want = Reading.model_validate_json(data).model_dump()
        want["quality_checks"] = tuple(want["quality_checks"])
    except ValidationError:
        want = None
    try:
        rec = ReadingDecoder().decode(data)
        got = {f: getattr(rec, f) for f in Reading.model_fields}
    except ValidationError:
        got = None
    assert got == want


def test_risks_fast_reading_decoder_leaves_a_non_finite_value_to_the_model():
    huge = orjson.dumps(EVENT).replace(b"2.5", b"1e999")
    assert ReadingDecoder().decode(huge).value == Reading.model_validate_json(huge).value
    with pytest.raises(ValidationError, match=r"json_invalid|Invalid JSON"):
        ReadingDecoder().decode(b'{"event_id": ')


def test_reading_event_id_is_the_stable_id_of_its_parts():
    t = NOW + timedelta(microseconds=123_456)
    micros = int(t.timestamp()) * 1_000_000 + t.microsecond
    assert micros == 1_782_864_000_123_456
    assert reading_event_id("A1", "rainfall", t) == stable_id("reading", "A1", "rainfall", micros)
    # one instant, one id, whatever the offset it was written with
    beijing = t.astimezone(timezone(timedelta(hours=8)))
    assert reading_event_id("A1", "rainfall", beijing) == reading_event_id("A1", "rainfall", t)
    assert reading_event_id("A1", "rainfall", t + timedelta(microseconds=1)) != (
        reading_event_id("A1", "rainfall", t)
    )


def test_risk_event_needs_a_12_digit_region_and_known_levels():
    base = {
        "event_id": "e1",
        "produced_at": NOW,
        "scope": "station",
        "station_id": "A",
        "region_code": "110101001001",
        "hazard": "flood",
        "rule_id": "r",
        "previous_level": "none",
        "level": "red",
        "change": "raised",
        "event_time": NOW,
        "evidence": {"rule_id": "r", "metric": "water_level", "value": 5.0},
    }
    assert RiskEvent.model_validate(base).level == "red"
    with pytest.raises(ValidationError):
        RiskEvent.model_validate({**base, "region_code": "1101"})
    with pytest.raises(ValidationError):
        RiskEvent.model_validate({**base, "level": "purple"})


def test_levels_order_and_map_to_cap_severity():
    assert Level.red > Level.orange > Level.yellow > Level.blue > Level.none
    assert [lv.cap_severity for lv in (Level.blue, Level.yellow, Level.orange, Level.red)] == [
        "Minor",
        "Moderate",
        "Severe",
        "Extreme",
    ]
    assert Level.red.roman == "I"
    assert Level.blue.roman == "IV"
    with pytest.raises(ValueError, match="unknown level"):
        Level.parse("purple")


def test_stable_id_is_deterministic_and_separates_parts():
    assert stable_id("a", "b") == stable_id("a", "b")
    assert stable_id("a", "b") != stable_id("ab")
    assert stable_id("a", "bc") != stable_id("ab", "c")


def test_topic_names_carry_the_prefix_and_are_unique():
    t = Topics("x.")
    names = t.all()
    assert len(names) == len(set(names))
    assert all(n.startswith("x.") for n in names)
    assert t.readings == "x.readings.v1"
    assert Topics().readings_dlq == "readings.dlq.v1"


def test_settings_have_a_prefix_per_service(monkeypatch):
    monkeypatch.setenv("QIANSHAO_INGEST_PORT", "9101")
    monkeypatch.setenv("QIANSHAO_ALERTING_PORT", "9103")
    assert IngestSettings().port == 9101
    assert AlertingSettings().port == 9103


def test_production_refuses_default_or_weak_secrets(monkeypatch):
    monkeypatch.setenv("QIANSHAO_GATEWAY_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="internal_secret"):
        GatewaySettings()
    monkeypatch.setenv("QIANSHAO_GATEWAY_INTERNAL_SECRET", "x" * 40)
    with pytest.raises(ValidationError, match="jwt_secret"):
        GatewaySettings()
    monkeypatch.setenv("QIANSHAO_GATEWAY_JWT_SECRET", "short")
    with pytest.raises(ValidationError, match="jwt_secret"):
        GatewaySettings()
    monkeypatch.setenv("QIANSHAO_GATEWAY_JWT_SECRET", "y" * 40)
    assert GatewaySettings().environment == "production"


def test_development_accepts_the_defaults():
    assert GatewaySettings().environment == "development"


def test_identity_round_trips_and_refuses_tampering_and_expiry():
    ident = Identity(
        subject="op",
        kind="operator",
        roles=["viewer"],
        scopes=["warnings:read"],
        region_prefix="110101",
    )
    header = sign(ident, "k" * 32, NOW)
    back = verify(header, "k" * 32, NOW + timedelta(seconds=10))
    assert back.subject == "op"
    assert back.region_prefix == "110101"
    with pytest.raises(Unauthenticated, match="signature"):
        verify(header, "other" * 8, NOW)
    payload, mac = header.split(".")
    forged = sign(ident.model_copy(update={"region_prefix": ""}), "attacker-key" * 3, NOW)
    with pytest.raises(Unauthenticated):
        verify(forged.split(".")[0] + "." + mac, "k" * 32, NOW)
    with pytest.raises(Unauthenticated, match="expired"):
        verify(header, "k" * 32, NOW + timedelta(minutes=5))
    with pytest.raises(Unauthenticated):
        verify(None, "k" * 32, NOW)
    with pytest.raises(Unauthenticated):
        verify("garbage", "k" * 32, NOW)
    assert payload


def test_identity_region_scope():
    ident = Identity(subject="t", kind="operator", region_prefix="110101001")
    assert ident.can_see_region("110101001002")
    assert not ident.can_see_region("110101002001")


def test_a_region_filter_never_widens_the_callers_scope():
    ident = Identity(subject="t", kind="operator", region_prefix="110101001")
    assert ident.narrow("110101001002") == "110101001002"
    assert ident.narrow("110101") == "110101001"
    assert ident.narrow("") == "110101001"
    assert ident.narrow("120101") == "110101001"


def test_the_fast_readings_event_is_the_contracts_reading():
    now = datetime(2026, 7, 1, 8, tzinfo=UTC)
    row = Row("WL1", "water_level", now, 2.5, "m", "doubtful", ("spike",), "hydro")
    st = StationInfo("WL1", "water_level", "110101001001")
    for issued in (None, now - timedelta(hours=3)):
        got = Reading.model_validate_json(published(row, st, "e1", now, issued_at=issued))
        assert got == Reading(
            event_id="e1",
            produced_at=now,
            station_id="WL1",
            region_code="110101001001",
            station_kind="water_level",
            metric="water_level",
            ts=now,
            value=2.5,
            unit="m",
            quality="doubtful",
            quality_checks=["spike"],
            source="hydro",
            kind="observation" if issued is None else "forecast",
            issued_at=issued,
        )
