"""The MQTT subscriber against Debian's Mosquitto, the real Kafka broker and database: gateways
publish with QoS 1 in our form and in the ThingsBoard gateway's; the readings are stored by the
consumer, a malformed payload and a bad item are dead-lettered with their reason while the good
items of the same message are stored; messages published while ingest is down are stored once it
is back (the persistent session held them, unacknowledged); the subscriber comes back by itself
after the broker restarts; TLS with a password connects, a wrong password is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from services.ingest.app import create_app
from shared.contracts import Topics
from shared.devstack.inprocess import serve
from shared.devstack.mosquitto import MosquittoBroker, Tls
from tests.helpers import eventually, identity_header, ingest_settings
from tests.kafka_util import read_all

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    d = tmp_path_factory.mktemp("mosquitto")
    b = MosquittoBroker(d, tls=_self_signed(d)).start()
    yield b
    b.stop()


def _publish(
    m: MosquittoBroker, messages: list[tuple[str, Any]], *, port: int | None = None
) -> None:
    """Publishes with QoS 1 as a gateway would, waiting for each PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway-test")
    client.username_pw_set(m.username, m.password)
    client.connect("127.0.0.1", port or m.port)
    client.loop_start()
    try:
        for topic, body in messages:
            payload = body if isinstance(body, bytes) else orjson.dumps(body)
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _settings(database: str, broker: Any, prefix: str, m: MosquittoBroker, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "mqtt_host": "127.0.0.1",
        "mqtt_port": m.port,
        "mqtt_username": m.username,
        "mqtt_password": m.password,
        "mqtt_client_id": f"ingest-{prefix}",
        "mqtt_reconnect_max_s": 2,
        "mqtt_subscriptions": [
            {"topic": f"{prefix}/readings/#"},
            {
                "topic": f"{prefix}/v1/gateway/telemetry",
                "form": "thingsboard",
                "source": "tb-gateway",
                "metrics": {"CH4": {"metric": "ch4"}, "液位": {"metric": "water_level"}},
                "devices": {"储罐区液位计1号": "TANK-01"},
            },
        ],
    }
    return ingest_settings(database, broker, prefix, **{**fields, **kw})


async def _register(url: str, *stations: str) -> None:
    hdr = identity_header(scopes=["stations:write"])
    async with httpx.AsyncClient(base_url=url, headers=hdr) as c:
        for sid in stations:
            r = await c.post(
                "/v1/stations",
                json={"id": sid, "name": sid, "kind": "gas", "region_code": "511112100000"},
            )
            assert r.status_code in (200, 201), r.text


async def _rows(database: str, want: int) -> list[Any]:
    conn = await asyncpg.connect(database)
    try:

        async def stored() -> Any:
            rows = await conn.fetch(
                "SELECT station_id, metric, value, ts FROM ingest.readings ORDER BY station_id, ts"
            )
            return rows if len(rows) >= want else None

        rows: list[Any] = await eventually(stored, what=f"{want} readings stored")
        return rows
    finally:
        await conn.close()


async def test_both_forms_are_stored_and_bad_payloads_dead_lettered(
    database, broker, topic_prefix, mosquitto
):
    p = topic_prefix
    app = create_app(_settings(database, broker, p, mosquitto))
    async with serve(app) as url:
        await _register(url, "GAS-01", "TANK-01", "TANK-02")
        await asyncio.wait_for(app.state.mqtt.subscribed.wait(), 20)
        ts = NOW.isoformat()
        ms = int(NOW.timestamp() * 1000)
        await asyncio.to_thread(
            _publish,
            mosquitto,
            [
                # ours: the station from the topic, one reading
                (f"{p}/readings/GAS-01", {"metric": "ch4", "ts": ts, "value": 0.42, "unit": "%"}),
                # ours: a list, its second item not a reading, its third of an unknown station
                (
                    f"{p}/readings/batch",
                    {
                        "readings": [
                            {"station_id": "GAS-01", "metric": "co", "ts": ts, "value": 12},
                            {"station_id": "GAS-01", "metric": "co", "value": 13},
                            {"station_id": "NOBODY", "metric": "co", "ts": ts, "value": 1},
                        ]
                    },
                ),
                # ThingsBoard: a mapped device name, a mapped key, an unmapped status key
                (
                    f"{p}/v1/gateway/telemetry",
                    {
                        "储罐区液位计1号": [{"ts": ms, "values": {"液位": 3.25, "status": "ok"}}],
                        "TANK-02": [{"CH4": 0.8}],
                    },
                ),
                # malformed
                (f"{p}/readings/GAS-01", b"{not json"),
                (f"{p}/v1/gateway/telemetry", [1, 2]),
            ],
        )
        rows = await _rows(database, 4)
        got = {(r["station_id"], r["metric"], r["value"]) for r in rows}
        assert got == {
            ("GAS-01", "ch4", 0.42),
            ("GAS-01", "co", 12.0),
            ("TANK-01", "water_level", 3.25),
            ("TANK-02", "ch4", 0.8),
        }
        tank = next(r for r in rows if r["station_id"] == "TANK-01")
        assert tank["ts"] == NOW

        async def letters() -> Any:
            dead = await read_all(broker.bootstrap, Topics(p).readings_dlq)
            return dead if len(dead) >= 3 else None

        dead = await eventually(letters, what="three dead letters")
        by_topic = {(d["topic"], d["reason"]): d for d in dead}
        batch = by_topic[(f"mqtt:{p}/readings/batch", "mqtt_payload")]
        assert "item 1: ts: Field required" in batch["detail"]
        assert "unknown station NOBODY" in batch["detail"]
        bad_json = by_topic[(f"mqtt:{p}/readings/GAS-01", "mqtt_payload")]
        assert bad_json["payload"] == "{not json"
        assert "not JSON" in bad_json["detail"]
        tb = by_topic[(f"mqtt:{p}/v1/gateway/telemetry", "mqtt_payload")]
        assert "device name" in tb["detail"]


async def test_messages_published_while_ingest_is_down_are_stored_once_it_is_back(
    database, broker, topic_prefix, mosquitto
):
    p = topic_prefix
    settings = _settings(database, broker, p, mosquitto)
    app = create_app(settings)
    async with serve(app) as url:
        await _register(url, "GAS-01")
        await asyncio.wait_for(app.state.mqtt.subscribed.wait(), 20)
        first = [
            (f"{p}/readings/GAS-01", {"metric": "co", "ts": _ts(i), "value": i}) for i in range(50)
        ]
        await asyncio.to_thread(_publish, mosquitto, first)
        await _rows(database, 50)
    # ingest is down: the broker keeps what the gateways send for its session
    later = [
        (f"{p}/readings/GAS-01", {"metric": "co", "ts": _ts(i), "value": i}) for i in range(50, 300)
    ]
    await asyncio.to_thread(_publish, mosquitto, later)
    # and the broker itself restarts meanwhile (its sessions are on disk)
    await asyncio.to_thread(mosquitto.restart)
    app = create_app(settings)
    async with serve(app):
        rows = await _rows(database, 300)
        assert sorted(r["value"] for r in rows) == [float(i) for i in range(300)]
        # the broker restarts under a connected subscriber: it reconnects by itself
        await asyncio.to_thread(mosquitto.restart)
        await eventually(_resubscribed(app), what="subscribed again")
        await asyncio.to_thread(
            _publish,
            mosquitto,
            [(f"{p}/readings/GAS-01", {"metric": "co", "ts": _ts(300), "value": 300})],
        )
        rows = await _rows(database, 301)
        assert len(rows) == 301


def _resubscribed(app: Any) -> Any:
    async def probe() -> bool:
        return bool(app.state.mqtt.subscribed.is_set())

    return probe


def _ts(i: int) -> str:
    return (NOW - dt.timedelta(minutes=400 - i)).isoformat()


async def test_tls_with_a_password_connects_and_a_wrong_password_is_refused(
    database, broker, topic_prefix, mosquitto
):
    p = topic_prefix
    tls = mosquitto.tls
    assert tls is not None
    assert mosquitto.tls_port is not None
    app = create_app(
        _settings(
            database,
            broker,
            p,
            mosquitto,
            mqtt_port=mosquitto.tls_port,
            mqtt_tls=True,
            mqtt_ca_file=tls.ca_file,
        )
    )
    async with serve(app) as url:
        await _register(url, "GAS-01")
        await asyncio.wait_for(app.state.mqtt.subscribed.wait(), 20)
        ts = NOW.isoformat()
        await asyncio.to_thread(
            _publish, mosquitto, [(f"{p}/readings/GAS-01", {"metric": "co", "ts": ts, "value": 7})]
        )
        rows = await _rows(database, 1)
        assert rows[0]["value"] == 7.0

    wrong = create_app(
        _settings(database, broker, p, mosquitto, mqtt_password="wrong", mqtt_client_id="x")
    )
    async with serve(wrong):

        async def refused() -> Any:
            return wrong.state.mqtt.refused

        reason = await eventually(refused, what="the broker's refusal")
        assert "not authorized" in reason.lower() or "bad user name" in reason.lower()
        assert not wrong.state.mqtt.subscribed.is_set()


def _self_signed(d: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1, as a bureau's own PKI would issue."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qianshao test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Tls(d / "ca.pem", d / "server.pem", d / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return files
