"""Kafka, as every Qianshao service uses it, on aiokafka's public API only:

- :mod:`.messages`: the records a handler sees (:class:`Received`), the poison among them
  (:class:`InvalidMessage`), and the shape of a handler (:class:`BatchHandler`,
  :class:`StagedHandler`);
- :mod:`.runner` and :mod:`.staged`: the consumer runner — poll, process, dead-letter, commit;
- :mod:`.producer`: a producer that waits for ``acks=all``, and topic creation;
- :mod:`.consumer` and :mod:`.client`: how the clients connect (TLS, SASL, compression);
- :mod:`.memory`: an in-memory broker, for the runner's tests without one.
"""

from shared.kafka.client import KafkaConfigError, KafkaConnection
from shared.kafka.consumer import FETCH_MAX_WAIT_MS, make_consumer
from shared.kafka.messages import (
    BatchHandler,
    BatchResult,
    EarlierBatchFailed,
    InvalidMessage,
    Message,
    Received,
    StagedHandler,
    dead_letter,
    earlier,
    no_value,
)
from shared.kafka.producer import EventProducer, Publisher, ensure_topics
from shared.kafka.runner import Consumer, ConsumerFactory, ConsumerRunner, RunnerConfig
from shared.kafka.staged import IN_HAND

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "IN_HAND",
    "BatchHandler",
    "BatchResult",
    "Consumer",
    "ConsumerFactory",
    "ConsumerRunner",
    "EarlierBatchFailed",
    "EventProducer",
    "InvalidMessage",
    "KafkaConfigError",
    "KafkaConnection",
    "Message",
    "Publisher",
    "Received",
    "RunnerConfig",
    "StagedHandler",
    "dead_letter",
    "earlier",
    "ensure_topics",
    "make_consumer",
    "no_value",
]
