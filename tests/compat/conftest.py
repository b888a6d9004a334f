"""Fixtures of the compatibility tests: Apache Kafka itself (one single-node KRaft server per
session, shared by the differential tests) and the ringlog broker they compare it with."""
from __future__ import annotations

import os

import pytest

from ringlog.broker.testing import BrokerThread
from ringlog.client.bench.brokers import BrokerStartError
from ringlog.client.bench.kafka_ref import KafkaBroker, build_classpath

from .differential import KAFKA_OVERRIDES, ringlog_reference_config
from .harness import HERE, require_tools
from tests.conftest import REQUIRE_TOOLS

KAFKA_POM_DIR = os.path.join(HERE, "kafka-broker")


@pytest.fixture(scope="session")
def kafka_classpath() -> str:
    """Apache Kafka's broker classpath (tests/compat/kafka-broker/pom.xml): resolved offline in CI,
    where .ci/run fetched the jars before the tests."""
    tools = require_tools("java", "mvn")
    built = _built_classpath()
    if built is not None:
        return built
    try:
        return build_classpath(KAFKA_POM_DIR, mvn=tools["mvn"], offline=REQUIRE_TOOLS)
    except BrokerStartError as exc:
        pytest.fail(str(exc))


def _built_classpath() -> str | None:
    """The classpath Maven wrote before (.ci/run builds it just before the tests), when it is
    newer than the pom and every jar it names is there: saves a Maven start (seconds)."""
    path = os.path.join(KAFKA_POM_DIR, "target", "classpath.txt")
    try:
        if os.path.getmtime(path) < os.path.getmtime(os.path.join(KAFKA_POM_DIR, "pom.xml")):
            return None
        with open(path) as f:
            classpath = f.read().strip()
    except OSError:
        return None
    jars = classpath.split(os.pathsep)
    return classpath if jars and all(os.path.isfile(j) for j in jars) else None


@pytest.fixture(scope="session")
def kafka_ref(kafka_classpath, tmp_path_factory):
    """A single-node Apache Kafka (KRaft), started once per session."""
    broker = KafkaBroker(kafka_classpath, str(tmp_path_factory.mktemp("kafka-ref")), heap="512m",
                         overrides=KAFKA_OVERRIDES)
    try:
        broker.start()
    except BrokerStartError as exc:
        pytest.fail(str(exc))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def ringlog_ref(tmp_path_factory):
    """The ringlog broker the differential tests compare with Kafka (the same settings)."""
    with BrokerThread(ringlog_reference_config(str(tmp_path_factory.mktemp("ringlog-ref")))) as b:
        yield b
