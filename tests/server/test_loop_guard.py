"""The loop-blocking guard of tests/conftest.py catches a blocking callback, and only that."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import BLOCK_LIMIT, loop_block_guard


def block() -> None:
    time.sleep(BLOCK_LIMIT * 2)  # deliberately blocks whatever thread runs it


@pytest.mark.allow_blocking
async def test_guard_records_a_blocking_callback() -> None:
    with loop_block_guard() as slow:
        asyncio.get_running_loop().call_soon(block)
        await asyncio.sleep(0)  # one loop iteration runs the callback
        await asyncio.sleep(0)
    assert len(slow) == 1 and "block" in slow[0]


async def test_blocking_work_in_a_thread_is_fine() -> None:
    with loop_block_guard() as slow:
        await asyncio.to_thread(block)
    assert slow == []


@pytest.mark.allow_blocking
async def test_guard_names_the_blocking_task() -> None:
    async def stalls() -> None:
        block()

    with loop_block_guard() as slow:
        await asyncio.create_task(stalls(), name="staller")
    assert len(slow) == 1 and "staller" in slow[0] and "stalls" in slow[0], slow
