"""The consumer runner's suite (``tests/runner_suite.py``) on the in-memory broker."""

from __future__ import annotations

import pytest

from tests.runner_backends import MemoryBackend
from tests.runner_suite import *  # noqa: F403 - the suite's tests, collected here


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()
