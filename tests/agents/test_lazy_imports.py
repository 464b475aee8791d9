"""Deferred heavy imports in the worker process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_worker_import_does_not_load_pyav() -> None:
    out = _run(
        """
        import voxgate.agents.worker
        from voxgate.agents.lazy_imports import is_loaded
        import faster_whisper
        print(is_loaded("av"))
        """
    )
    assert out == "False"


def test_deferred_module_loads_on_first_use() -> None:
    out = _run(
        """
        import sys
        from voxgate.agents.lazy_imports import DeferredModule, defer, is_loaded
        assert defer("colorsys") and not is_loaded("colorsys")
        assert not defer("colorsys")  # already there
        assert not defer("no_such_module_here")
        import colorsys
        assert isinstance(colorsys, DeferredModule)
        print(colorsys.rgb_to_hsv(1.0, 0.0, 0.0), is_loaded("colorsys"))
        """
    )
    assert out == "(0.0, 1.0, 1.0) True"
