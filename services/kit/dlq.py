"""Dead letters: an event that can never be applied goes to ``<group>.dlq`` with why, and is
recorded as dead in the inbox, so its partition keeps flowing."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from opentelemetry import metrics

from services.kit.logging import get_logger

log = get_logger("zhongtai.consumer")
_dead = metrics.get_meter("zhongtai.consumer").create_counter(
    "consumer.dlq", unit="{event}", description="events sent to the dead-letter topic"
)


class DeadLetters:
    """Sends a group's dead letters: the record as it was, its headers, plus ``dlq_*`` headers
    (error, group, topic, partition, offset, attempts). A record is sent once per process even
    when the batch that dead-lettered it rolls back and is applied again; a send that failed is
    made again."""

    def __init__(self, producer: AIOKafkaProducer, group: str) -> None:
        self._producer = producer
        self._group = group
        self.topic = f"{group}.dlq"
        self._sent: set[tuple[str, int, int]] = set()
        self.total = 0

    async def send(self, record: ConsumerRecord[Any, Any], error: str, *, attempts: int) -> None:
        position = (record.topic, record.partition, record.offset)
        if position in self._sent:
            return  # already sent in an earlier (rolled back) attempt at this batch
        if len(self._sent) > 10_000:
            self._sent.clear()
        headers = [
            *(record.headers or ()),
            ("dlq_error", error.encode()[:2000]),
            ("dlq_group", self._group.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
            ("dlq_attempts", str(attempts).encode()),
        ]
        await self._producer.send_and_wait(self.topic, value=record.value, key=record.key, headers=headers)
        self._sent.add(position)  # (only once sent: a send that failed is made again)
        self.total += 1
        _dead.add(1, {"group": self._group, "topic": record.topic})
        log.error("event dead-lettered", topic=record.topic, partition=record.partition, offset=record.offset,
                  dlq=self.topic, attempts=attempts)  # fmt: skip
