"""ringlog's Trio-native Kafka client: producer, consumer, admin (and the sans-IO wire layer).

    from ringlog.client import open_producer, open_consumer, open_admin

Names are loaded on first use, so `import client.wire` (which the broker does) does not pull in
the Trio client modules.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Producer": "producer",
    "open_producer": "producer",
    "RecordMetadata": "producer",
    "DeliveryHandle": "producer",
    "BufferFull": "producer",
    "Consumer": "consumer",
    "open_consumer": "consumer",
    "ConsumerRecord": "consumer",
    "TopicPartition": "consumer",
    "OffsetAndTimestamp": "consumer",
    "Admin": "admin",
    "open_admin": "admin",
    "NewTopic": "admin",
    "KafkaError": "errors",
    "ErrorCode": "errors",
    "ConnectionLost": "errors",
    "RequestTimedOut": "errors",
    "NoBrokersAvailable": "errors",
    "ClientClosed": "errors",
    "CorruptRecord": "errors",
    "UnsupportedApi": "errors",
    "AuthenticationError": "errors",
    "SaslAuthenticationFailedError": "errors",
    "SslAuthenticationError": "errors",
    "InvalidClientConfig": "errors",
    "SecurityConfig": "security",
    "murmur2": "partitioner",
    "murmur2_partition": "partitioner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
