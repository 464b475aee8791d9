"""Worker-level resource settings: inference threads and glibc heap tuning."""

from __future__ import annotations

import sys

import pytest

from voxgate.agents.inference import usable_cores
from voxgate.agents.worker import MallocTuning, inference_threads


def test_inference_threads_default_to_usable_cores() -> None:
    assert inference_threads() == usable_cores() >= 1
    assert inference_threads(0) == usable_cores()
    assert inference_threads(3) == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_tuning_on_glibc() -> None:
    tuning = MallocTuning()
    if not tuning.available:
        pytest.skip("not glibc")
    assert tuning.fix_mmap_threshold()
    tuning.trim()  # must not fail, any number of times
    tuning.trim()
