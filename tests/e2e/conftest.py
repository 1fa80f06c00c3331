"""The whole stack in one event loop, on the session's real PostgreSQL and broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.devstack.inprocess import Stack, running_stack


@pytest.fixture
async def stack(database: str, broker, topic_prefix: str) -> AsyncIterator[Stack]:
    async with running_stack(database, broker.bootstrap, topic_prefix) as s:
        yield s
