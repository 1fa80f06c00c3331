# Kafka record batches (v2) built in one call (_records.c); shared.kafka uses them.
from collections.abc import Callable
from typing import Any

def message_maker(message_type: type[tuple[Any, ...]], /) -> Callable[[Any, Any], Any]: ...
def batches(
    items: list[tuple[bytes | None, bytes | None]],
    timestamp_ms: int,
    batch_size: int,
    transactional: bool,
    /,
) -> list[tuple[bytearray, int]]: ...
def seal(
    batch: bytearray, producer_id: int, producer_epoch: int, base_sequence: int, /
) -> None: ...
def crc32c(data: bytes | bytearray, /) -> int: ...
