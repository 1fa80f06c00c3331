"""The consumer runners' metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "qianshao_consumer_messages_total",
    "Messages handled by a consumer, by outcome",
    ["consumer", "topic", "outcome"],
)
BATCH_SECONDS = Histogram(
    "qianshao_consumer_batch_duration_seconds",
    "Time from poll to commit for one batch",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RETRIES = Counter(
    "qianshao_consumer_retries_total", "Batches retried after a dependency failure", ["consumer"]
)
LAG = Gauge(
    "qianshao_consumer_lag_messages",
    "Messages on the partition not yet committed by the consumer, after its last batch",
    ["consumer", "topic", "partition"],
)
