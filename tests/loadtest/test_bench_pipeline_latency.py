from __future__ import annotations

import asyncio

import pytest

from loadtest import bench_pipeline_latency as bench
from voxgate.agents.flowspec import parse_flow, static_prompts
from voxgate.agents.models import SpeechModelConfig
from voxgate.agents.worker import load_resources


def test_flow_and_fixtures() -> None:
    flow, warnings = parse_flow(bench.bench_flow())
    assert not [w for w in warnings if "unreachable" in str(w).lower()]
    prompts = static_prompts(flow)
    assert "Hi, how can I help?" in prompts and len(prompts) >= 8
    items = bench.fixtures(None)
    assert len(items) == 16  # 12 phrases, 3 noisy, the conversation
    assert sum(len(ends) for *_, ends in items) == 19
    assert [name for name, *_ in bench.fixtures({"goodbye"})] == ["goodbye"]


@pytest.mark.timeout(120)
async def test_one_turn_real_time_cached() -> None:
    res = await asyncio.to_thread(load_resources, SpeechModelConfig(), max_calls=1)
    try:
        out = await bench.run_mode(
            res,
            "cached",
            bench.fixtures({"goodbye"}),
            min_silence_ms=400,
            turn_timeout=5.0,
            speculative_ms=bench.SPECULATIVE_MS,
        )
    finally:
        res.close()
    assert out["turns"] == 1 and out["replied"] == 1 and out["false_endpoints"] == 0
    (turn,) = out["results"]
    assert turn["transcript"] == "Goodbye." and turn["reply"] == "Thanks for calling, goodbye!"
    # Bounded: the endpoint's worst case plus generous room for a loaded machine.
    assert 0.2 < turn["latency_s"] < 2.5
    assert turn["stages"]["tts_first_chunk"] < 0.05  # from the prompt cache
    assert "p50_s" in out and out["stages"]["endpointing"]["p50_s"] <= 0.45
    assert "Goodbye." in bench.report({**_header(), "modes": [out]})


def _header() -> dict[str, object]:
    return {
        "cpus": 2,
        "load_avg": (0.0, 0.0, 0.0),
        "min_silence_ms": 400,
        "speculative_ms": bench.SPECULATIVE_MS,
        "beam": 5,
        "stt_threads": 1,
    }
