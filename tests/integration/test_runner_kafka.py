"""The consumer runner's suite (``tests/runner_suite.py``) on the real broker."""

from __future__ import annotations

import pytest

from shared.devstack.broker import TansuBroker
from tests.runner_backends import KafkaBackend
from tests.runner_suite import *  # noqa: F403 - the suite's tests, collected here


@pytest.fixture
def backend(broker: TansuBroker) -> KafkaBackend:
    return KafkaBackend(broker)
