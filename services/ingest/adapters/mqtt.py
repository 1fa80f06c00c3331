"""The MQTT subscriber: enterprise and field gateways publish to a broker (Debian's Mosquitto in
the local stack); ingest subscribes with QoS 1 and a persistent session, reads each message with
its subscription's payload form (:mod:`services.ingest.domain.mqtt`) and writes the readings to
the raw topic like every other reading, so the consumer's checks, dedupe and dead letters apply.

- A message is acknowledged (PUBACK) only once its readings — and the dead letter of what could
  not be read — are on Kafka with ``acks=all``. Until then the broker holds it for this session
  and sends it again after a reconnect or a restart; the consumer drops a repeat by its key.
- A Kafka write that fails is tried again, with backoff, before anything is acknowledged.
- A payload that is not JSON or not of its form, an item that is not a reading, a station
  nobody registered: a dead letter on ``readings.dlq.v1`` with the reason, the topic and the
  payload; the good items of the same message are stored.
- The client (paho-mqtt) runs its network loop on its own thread and reconnects by itself,
  waiting from ``reconnect_min_s`` to ``reconnect_max_s``, doubling; messages reach the event
  loop through a queue.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import paho.mqtt.client as mqtt
from aiokafka.errors import KafkaError
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client import Counter, Gauge

from services.ingest.adapters import stations as station_repo
from services.ingest.adapters.stations import StationCache
from services.ingest.domain.mqtt import Decoded, MalformedPayload, PayloadMap, decode
from shared.clock import Clock
from shared.contracts import DeadLetter, Topics
from shared.kafka import EventProducer

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "qianshao_mqtt_messages_total", "MQTT messages received, by outcome", ["outcome"]
)
CONNECTED = Gauge("qianshao_mqtt_connected", "1 while the MQTT subscriber is connected")
BATCH = 500  # messages written to Kafka together (the broker's in-flight window bounds it too)


@dataclass(frozen=True)
class Broker:
    host: str
    port: int = 1883
    client_id: str = "qianshao-ingest"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60


@dataclass(frozen=True)
class Subscription:
    topic: str  # a topic filter, ``+`` and ``#`` allowed, ``$share/<group>/`` too
    mapping: PayloadMap

    @property
    def filter(self) -> str:
        if self.topic.startswith("$share/"):
            return self.topic.split("/", 2)[2]
        return self.topic


class MqttSubscriber:
    def __init__(
        self,
        *,
        broker: Broker,
        subscriptions: Sequence[Subscription],
        producer: EventProducer,
        stations: StationCache,
        pool: asyncpg.Pool,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self._broker = broker
        self._subscriptions = list(subscriptions)
        self._producer = producer
        self._stations = stations
        self._pool = pool
        self._topics = topics
        self._clock = clock
        self._queue: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue()
        self._stopping = asyncio.Event()
        # set when the broker has confirmed the subscriptions of the current connection
        self.subscribed = asyncio.Event()
        # why the broker last refused the connection (a bad password …), None once connected
        self.refused: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # the client -----------------------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        b = self._broker
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=b.client_id,
            clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if b.username is not None:
            client.username_pw_set(b.username, b.password)
        if b.tls:
            client.tls_set(
                ca_certs=b.ca_file,
                certfile=b.cert_file,
                keyfile=b.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # paho calls these on its network thread: hand over to the event loop
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        if code.is_failure:
            self.refused = str(code)
            log.warning("MQTT broker refused the connection: %s", code)
            return
        self.refused = None
        CONNECTED.set(1)
        log.info("MQTT connected", extra={"host": self._broker.host, "port": self._broker.port})
        client.subscribe([(s.topic, 1) for s in self._subscriptions])

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, code: Any, _p: Any) -> None:
        CONNECTED.set(0)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.subscribed.clear)
        log.warning("MQTT disconnected: %s", code)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        refused = [c for c in codes if c.is_failure]
        if refused:
            log.error("MQTT broker refused subscriptions: %s", refused)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.subscribed.set)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, message)

    # running --------------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = self._client()
        client.connect_async(self._broker.host, self._broker.port, self._broker.keepalive_s)
        client.loop_start()
        try:
            while not self._stopping.is_set():
                batch = await self._next_batch()
                if batch and await self._write(batch):
                    for m in batch:
                        client.ack(m.mid, m.qos)
        finally:
            client.disconnect()
            client.loop_stop()
            CONNECTED.set(0)

    def stop(self) -> None:
        self._stopping.set()

    async def _next_batch(self) -> list[mqtt.MQTTMessage]:
        get = asyncio.ensure_future(self._queue.get())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not get.done():
            get.cancel()
            return []
        batch = [get.result()]
        while len(batch) < BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _write(self, batch: list[mqtt.MQTTMessage]) -> bool:
        """Writes the batch until it is written (True) or the subscriber stops (False: nothing
        is acknowledged, the broker keeps the messages)."""
        delay = 0.5
        while True:
            try:
                await self.handle([(m.topic, bytes(m.payload)) for m in batch])
                return True
            except (KafkaError, OSError, asyncpg.PostgresError) as exc:
                log.warning("MQTT batch not written, trying again: %r", exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return False
            except TimeoutError:
                delay = min(delay * 2, 30.0)

    # messages → readings and dead letters --------------------------------------------------------

    async def handle(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Writes the readings of ``messages`` to the raw topic and what could not be read to
        the dead-letter topic."""
        now = self._clock.now()
        dead: list[DeadLetter] = []
        read: list[tuple[str, bytes, Decoded]] = []
        for topic, payload in messages:
            sub = self._match(topic)
            if sub is None:
                MESSAGES.labels("no_subscription").inc()
                dead.append(_dead(topic, payload, "mqtt_topic", "no subscription maps it", now))
                continue
            try:
                read.append((topic, payload, decode(sub.mapping, topic, payload, now)))
            except MalformedPayload as exc:
                MESSAGES.labels("malformed").inc()
                dead.append(_dead(topic, payload, "mqtt_payload", str(exc), now))
        wanted = {(r.station_id, r.source, r.metric) for *_, d in read for r in d.readings}
        known = await self._stations.get_many(s for s, _, _ in wanted)
        unknown = [w for w in wanted if w[0] not in known]
        if unknown:  # a source allowed to register its new stations does so here
            known.update(await station_repo.auto_register(self._pool, self._stations, unknown))
        readings: list[tuple[str, bytes]] = []
        for topic, payload, d in read:
            faults = list(d.faults)
            strangers = sorted({r.station_id for r in d.readings if r.station_id not in known})
            for r in d.readings:
                if r.station_id in known:
                    readings.append((r.station_id, orjson.dumps(r.model_dump(mode="json"))))
            if strangers:
                names = ", ".join(strangers)
                faults.append(f"unknown station {names} (its source may register it)")
            MESSAGES.labels("partial" if faults else "read").inc()
            if faults:
                reason = "unknown_station" if strangers and not d.faults else "mqtt_payload"
                dead.append(_dead(topic, payload, reason, "; ".join(faults), now))
        if readings:
            await self._producer.send_many(self._topics.obs_sensor, readings)
        if dead:
            await self._producer.send_many(
                self._topics.readings_dlq,
                [(d.key or "", orjson.dumps(d.model_dump(mode="json"))) for d in dead],
            )

    def _match(self, topic: str) -> Subscription | None:
        for s in self._subscriptions:
            if mqtt.topic_matches_sub(s.filter, topic):
                return s
        return None


def _dead(topic: str, payload: bytes, reason: str, detail: str, now: datetime) -> DeadLetter:
    return DeadLetter(
        topic=f"mqtt:{topic}",
        partition=-1,  # not a Kafka message: replay leaves it alone
        offset=-1,
        key=topic,
        payload=payload.decode("utf-8", "backslashreplace")[:65536],
        reason=reason,
        detail=detail[:2000],
        service="ingest",
        failed_at=now,
    )
