"""Round trips and failed connections with the real clients, over any listener, for the tests."""
from __future__ import annotations

import asyncio
import subprocess
import time

from .conftest import Pki

RECORDS = [f"record-{i}".encode() for i in range(5)]


def _settings(names: tuple[str, str, str, str, str], protocol: str, ca: object, mechanism: str | None,
              user: str, password: str) -> dict:
    """One client's security settings; `names` are its keys for protocol, CA, mechanism, user and
    password."""
    settings = {names[0]: protocol}
    if "SSL" in protocol:
        settings[names[1]] = ca
    if mechanism:
        settings.update({names[2]: mechanism, names[3]: user, names[4]: password})
    return settings


def confluent_settings(protocol: str, pki: Pki, mechanism: str | None, user: str, password: str) -> dict:
    names = ("security.protocol", "ssl.ca.location", "sasl.mechanism", "sasl.username", "sasl.password")
    return _settings(names, protocol, pki.ca, mechanism, user, password)


def confluent_round_trip(bootstrap: str, topic: str, settings: dict) -> list[bytes]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000, **settings,
                         "error_cb": errors.append})
    delivered: list = []
    for value in RECORDS:
        producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(15)
    assert delivered == [None] * len(RECORDS), (delivered, errors)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False, **settings})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < len(RECORDS) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        return got
    finally:
        consumer.close()


def confluent_auth_error(bootstrap: str, settings: dict, timeout: float = 15) -> str:
    """What librdkafka reports (error_cb) for a client that cannot connect: its errors up to the
    first that says why (not just "all brokers are down")."""
    from confluent_kafka import KafkaError, Producer

    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, **settings, "error_cb": errors.append,
                         "reconnect.backoff.ms": 1000})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(e.code() != KafkaError._ALL_BROKERS_DOWN for e in errors):
        producer.poll(0.2)
    assert errors, "no error reported"
    return " | ".join(str(e) for e in errors)


_PYTHON_NAMES = ("security_protocol", "ssl_cafile", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def kafka_python_settings(protocol: str, pki: Pki, mechanism: str | None, user: str, password: str) -> dict:
    return _settings(_PYTHON_NAMES, protocol, pki.ca, mechanism, user, password)


def kafka_python_round_trip(bootstrap: str, topic: str, settings: dict) -> list[bytes]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, **settings)
    try:
        for value in RECORDS:
            producer.send(topic, value).get(timeout=15)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000,
                             **settings)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek(TopicPartition(topic, 0), 0)
        got = []
        for msg in consumer:
            got.append(msg.value)
            if len(got) == len(RECORDS):
                break
        return got
    finally:
        consumer.close()


def aiokafka_settings(protocol: str, pki: Pki, mechanism: str | None, user: str, password: str) -> dict:
    from aiokafka.helpers import create_ssl_context

    context = create_ssl_context(cafile=pki.ca) if "SSL" in protocol else None
    return _settings(("security_protocol", "ssl_context", *_PYTHON_NAMES[2:]), protocol, context, mechanism, user,
                     password)


def aiokafka_round_trip(bootstrap: str, topic: str, settings: dict) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def run() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
        await producer.start()
        try:
            for value in RECORDS:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **settings)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got = []
            async with asyncio.timeout(15):
                while len(got) < len(RECORDS):
                    msg = await consumer.getone()
                    got.append(msg.value)
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


def kcat_args(protocol: str, pki: Pki, mechanism: str | None, user: str, password: str) -> list[str]:
    settings = confluent_settings(protocol, pki, mechanism, user, password)
    return [arg for key, value in settings.items() for arg in ("-X", f"{key}={value}")]


def kcat_round_trip(binary: str, bootstrap: str, topic: str, args: list[str]) -> list[bytes]:
    data = b"".join(v + b"\n" for v in RECORDS)
    subprocess.run([binary, "-b", bootstrap, "-P", "-t", topic, *args], input=data, check=True, timeout=30,
                   capture_output=True)
    out = subprocess.run([binary, "-b", bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", *args],
                         check=True, timeout=30, capture_output=True)
    return out.stdout.splitlines()
